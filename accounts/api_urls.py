from django.urls import path

from . import api_views

urlpatterns = [
    path("me/", api_views.MeView.as_view(), name="api-me"),
    path("auth/token/", api_views.TokenView.as_view(), name="api-token"),
]
