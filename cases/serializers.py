from django.urls import reverse
from rest_framework import serializers

from .models import Case, CellImage, Laboratory, Prediction


class LaboratorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Laboratory
        fields = ["id", "name", "instrument", "um_per_pixel"]
        read_only_fields = fields


class CaseSerializer(serializers.ModelSerializer):
    """The patient reference can be written when creating a case and is never returned."""

    created_by = serializers.EmailField(source="created_by.email", read_only=True)
    patient_reference = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=128)
    image_count = serializers.IntegerField(read_only=True, default=0)
    laboratory = serializers.PrimaryKeyRelatedField(
        queryset=Laboratory.objects.all(),
        required=False,
        allow_null=True,
        help_text="Id of the laboratory where the smear was imaged (GET /api/v1/laboratories/); null when not stated.",
    )

    class Meta:
        model = Case
        fields = [
            "id",
            "accession_id",
            "patient_reference",
            "laboratory",
            "status",
            "created_by",
            "created_at",
            "image_count",
        ]
        read_only_fields = ["id", "status", "created_by", "created_at", "image_count"]


class CaseFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Case.Status.choices, required=False)
    accession = serializers.CharField(required=False, max_length=64)


class PredictionSerializer(serializers.ModelSerializer):
    model_version = serializers.CharField(source="model_version.name", read_only=True)

    class Meta:
        model = Prediction
        fields = [
            "model_version",
            "label",
            "confidence",
            "probabilities",
            "flagged",
            "ood_score",
            "latency_ms",
            "created_at",
        ]
        read_only_fields = fields


class CellImageSerializer(serializers.ModelSerializer):
    predictions = PredictionSerializer(many=True, read_only=True, help_text="Newest first.")
    image_url = serializers.SerializerMethodField()

    class Meta:
        model = CellImage
        fields = [
            "id",
            "case",
            "original_name",
            "sha256",
            "size_bytes",
            "width",
            "height",
            "content_type",
            "status",
            "status_message",
            "attempts",
            "uploaded_at",
            "image_url",
            "predictions",
        ]
        read_only_fields = fields

    def get_image_url(self, image: CellImage) -> str:
        """The access-controlled image view (session sign-in), never a public file URL."""
        return reverse("cases:image", args=[image.pk])


class UploadSerializer(serializers.Serializer):
    files = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True, use_url=False),
        allow_empty=False,
        help_text="One or more image files (JPEG, PNG, TIFF, BMP) in the multipart field `files`.",
    )


class RejectedFileSerializer(serializers.Serializer):
    name = serializers.CharField()
    message = serializers.CharField()


class UploadResultSerializer(serializers.Serializer):
    accepted = CellImageSerializer(many=True)
    rejected = RejectedFileSerializer(many=True)


class CaseProblemSerializer(serializers.Serializer):
    detail = serializers.CharField()
