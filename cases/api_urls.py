from django.urls import path

from . import api

# Review and sign-off endpoints: append `urlpatterns += [...]` below (owned by cases/api_review.py).
urlpatterns = [
    path("cases/", api.CaseListCreateAPI.as_view(), name="api-case-list"),
    path("cases/<int:pk>/", api.CaseRetrieveAPI.as_view(), name="api-case-detail"),
    path("cases/<int:pk>/images/", api.CaseImagesAPI.as_view(), name="api-case-images"),
    path("images/<int:pk>/", api.ImageRetrieveAPI.as_view(), name="api-image-detail"),
    path("images/<int:pk>/retry/", api.ImageRetryAPI.as_view(), name="api-image-retry"),
]
