from django.urls import path

from . import api

urlpatterns = [
    path("model-versions/", api.ModelVersionListAPI.as_view(), name="api-model-versions"),
    path("model-versions/<int:pk>/", api.ModelVersionDetailAPI.as_view(), name="api-model-version-detail"),
    path("model-versions/<int:pk>/activate/", api.ModelVersionActivateAPI.as_view(), name="api-model-version-activate"),
    path("model-imports/<int:pk>/", api.ModelImportDetailAPI.as_view(), name="api-model-import-detail"),
]
