from django.urls import path

from . import views

app_name = "inference"
urlpatterns = [
    path("", views.model_list, name="list"),
    path("import/", views.model_import, name="import"),
    path("<int:pk>/activate/", views.model_activate, name="activate"),
    path("<int:pk>/compare/", views.model_compare, name="compare"),
    path("rollback/", views.model_rollback, name="rollback"),
    path("<int:pk>/shadow/", views.model_shadow_start, name="shadow_start"),
    path("shadow/stop/", views.model_shadow_stop, name="shadow_stop"),
    path("adapt/", views.adaptation_start, name="adapt"),
    path("adaptations/<int:pk>/", views.adaptation_detail, name="adaptation"),
    path("adaptations/<int:pk>/cancel/", views.adaptation_cancel, name="adaptation_cancel"),
]
