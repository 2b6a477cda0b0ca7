from django.urls import path

from . import api, api_report, api_review

# Review and sign-off endpoints: append `urlpatterns += [...]` below (owned by cases/api_review.py).
urlpatterns = [
    path("cases/", api.CaseListCreateAPI.as_view(), name="api-case-list"),
    path("cases/<int:pk>/", api.CaseRetrieveAPI.as_view(), name="api-case-detail"),
    path("cases/<int:pk>/images/", api.CaseImagesAPI.as_view(), name="api-case-images"),
    path("images/<int:pk>/", api.ImageRetrieveAPI.as_view(), name="api-image-detail"),
    path("images/<int:pk>/retry/", api.ImageRetryAPI.as_view(), name="api-image-retry"),
]

# Review, sign-off, amendments and differential (cases/api_review.py).
urlpatterns += [
    path("cases/<int:pk>/reviews/", api_review.CaseReviewsAPI.as_view(), name="api-case-reviews"),
    path("cases/<int:pk>/sign/", api_review.CaseSignAPI.as_view(), name="api-case-sign"),
    path("cases/<int:pk>/amendments/", api_review.CaseAmendmentsAPI.as_view(), name="api-case-amendments"),
    path("cases/<int:pk>/differential/", api_review.CaseDifferentialAPI.as_view(), name="api-case-differential"),
]

# Laboratories (cases/api.py).
urlpatterns += [
    path("laboratories/", api.LaboratoryListAPI.as_view(), name="api-laboratory-list"),
]

# The case report as FHIR R4 (cases/api_report.py).
urlpatterns += [
    path("cases/<int:pk>/fhir/", api_report.CaseFhirReportAPI.as_view(), name="api-case-fhir"),
]
