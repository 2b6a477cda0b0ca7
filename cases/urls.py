from django.urls import path

from . import views, views_laboratories, views_live, views_report, views_review

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

# Review, sign-off, amendments, differential and Grad-CAM (cases/views_review.py).
urlpatterns += [
    path("<int:pk>/review/", views_review.review_page, name="review"),
    path("<int:pk>/review/submit/", views_review.review_submit, name="review_submit"),
    path("<int:pk>/review/confirm-unreviewed/", views_review.confirm_unreviewed, name="review_confirm_unreviewed"),
    path("<int:pk>/review/sign/", views_review.sign, name="review_sign"),
    path("<int:pk>/review/amend/", views_review.amend, name="review_amend"),
    path("<int:pk>/differential/", views_review.differential, name="differential"),
    path("images/<int:pk>/gradcam/", views_review.gradcam, name="review_gradcam"),
]

# Laboratories and their instruments (cases/views_laboratories.py).
urlpatterns += [
    path("laboratories/", views_laboratories.laboratory_list, name="laboratories"),
    path("laboratories/<int:pk>/", views_laboratories.laboratory_edit, name="laboratory_edit"),
]

# The live cell grid: pushed events and the changed cards (cases/views_live.py, docs/events.md).
urlpatterns += [
    path("<int:pk>/events/", views_live.case_events, name="events"),
    path("<int:pk>/cards/", views_live.case_cards, name="cards"),
]

# The case report: page, PDF, FHIR R4 and comments (cases/views_report.py).
urlpatterns += [
    path("<int:pk>/report/", views_report.report_page, name="report"),
    path("<int:pk>/report/pdf/", views_report.report_pdf, name="report_pdf"),
    path("<int:pk>/report/fhir/", views_report.report_fhir, name="report_fhir"),
    path("<int:pk>/report/comments/", views_report.report_comment, name="report_comment"),
]
