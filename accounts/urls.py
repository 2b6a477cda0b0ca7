from django.urls import path

from . import views

app_name = "accounts"
urlpatterns = [
    path("", views.people, name="people"),
    path("pending/", views.pending, name="pending"),
    path("<int:pk>/approve/", views.approve, name="approve"),
    path("<int:pk>/role/", views.set_role, name="change_role"),
    path("<int:pk>/deactivate/", views.deactivate, name="deactivate"),
]
