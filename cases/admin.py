"""Read-mostly admin: cases, images and predictions are changed through the app's services, which audit;
the admin is for looking things up. Reviews are append-only and never editable here."""

from django.contrib import admin

from .models import Case, CellImage, Prediction, Review


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Case)
class CaseAdmin(ReadOnlyAdmin):
    list_display = ["accession_id", "status", "created_by", "created_at", "signed_at"]
    list_filter = ["status"]
    search_fields = ["accession_id"]
    exclude = ["patient_reference"]


@admin.register(CellImage)
class CellImageAdmin(ReadOnlyAdmin):
    list_display = ["id", "case", "original_name", "status", "attempts", "uploaded_at"]
    list_filter = ["status"]
    search_fields = ["case__accession_id", "sha256"]
    list_select_related = ["case"]


@admin.register(Prediction)
class PredictionAdmin(ReadOnlyAdmin):
    list_display = ["image", "model_version", "label", "confidence", "flagged", "latency_ms", "created_at"]
    list_filter = ["flagged", "model_version"]
    list_select_related = ["image", "model_version"]


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    list_display = ["image", "reviewer", "kind", "from_label", "to_label", "created_at"]
    list_filter = ["kind"]
    list_select_related = ["image", "reviewer"]
