from django.urls import path

from . import views

app_name = "inference"
urlpatterns = [
    path("", views.model_list, name="list"),
    path("import/", views.model_import, name="import"),
    path("<int:pk>/activate/", views.model_activate, name="activate"),
]
