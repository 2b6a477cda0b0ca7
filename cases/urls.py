from django.urls import path

from . import views

app_name = "cases"

# Review, sign-off and differential routes: append `urlpatterns += [...]` below (owned by views_review.py).
urlpatterns = [
    path("", views.case_list, name="list"),
    path("new/", views.case_create, name="create"),
    path("<int:pk>/", views.case_detail, name="detail"),
    path("<int:pk>/cells/", views.case_cells, name="cells"),
    path("<int:pk>/images/", views.upload_images, name="upload"),
    path("images/<int:pk>/", views.image_file, name="image"),
    path("images/<int:pk>/retry/", views.retry_image, name="retry"),
]
