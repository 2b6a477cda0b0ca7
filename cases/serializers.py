import copy

from django.conf import settings
from django.urls import get_script_prefix, get_urlconf, reverse
from rest_framework import serializers

from .models import Case, CellImage, Laboratory, Prediction
from .selectors import IMAGE_DETAIL_FIELDS


class BuiltOnceModelSerializer(serializers.ModelSerializer):
    """A ModelSerializer that works out its fields from the model once per class, not once per instance.

    DRF introspects the model (field kwargs, validators, relations) every time a ModelSerializer is made:
    for each image a client asks for, again for each of its predictions' serializer. The result depends on
    the class only (Meta and declared fields), so later instances get fresh copies of the first result,
    which is what DRF itself does with declared fields. A subclass whose fields depend on the request or
    the instance must not use this base.
    """

    def get_fields(self):
        cls = type(self)
        built = cls.__dict__.get("_fields_built_once")
        if built is None:
            built = super().get_fields()
            cls._fields_built_once = built
        return copy.deepcopy(built)


class LaboratorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Laboratory
        fields = ["id", "name", "instrument", "um_per_pixel"]
        read_only_fields = fields


class CaseSerializer(serializers.ModelSerializer):
    """The patient reference can be written when creating a case and is never returned."""

    created_by = serializers.EmailField(source="created_by.email", read_only=True)
    patient_reference = serializers.CharField(write_only=True, required=False, allow_blank=True, max_length=128)
    image_count = serializers.IntegerField(read_only=True, default=0, help_text="Images uploaded (crops and fields).")
    cell_count = serializers.IntegerField(
        read_only=True, default=0, help_text="Cells: crops and the cells found in fields (never a field itself)."
    )
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
            "cell_count",
        ]
        read_only_fields = ["id", "status", "created_by", "created_at", "image_count", "cell_count"]


class CaseFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Case.Status.choices, required=False)
    accession = serializers.CharField(required=False, max_length=64)


class PredictionSerializer(BuiltOnceModelSerializer):
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
            "flag_reasons",
            "latency_ms",
            "created_at",
        ]
        read_only_fields = fields


class CellImageSerializer(BuiltOnceModelSerializer):
    predictions = PredictionSerializer(many=True, read_only=True, help_text="Newest first.")
    image_url = serializers.SerializerMethodField()
    box = serializers.SerializerMethodField(
        help_text="[x0, y0, x1, y1]: the cell's box in its field (or in the crop it was uploaded as), upright "
        "pixels, end-exclusive; null for a field, an upload not analysed yet, or one without a cell."
    )
    cells = serializers.SerializerMethodField(help_text="A field's found cells (their ids), in the order found.")

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
            "kind",
            "parent",
            "box",
            "located_as",
            "um_per_pixel",
            "scale_source",
            "cells",
            "image_url",
            "predictions",
        ]
        read_only_fields = fields

    def get_box(self, image: CellImage) -> list[int] | None:
        return list(image.box) if image.box is not None else None

    def get_cells(self, image: CellImage) -> list[int]:
        if image.kind != CellImage.Kind.FIELD:
            return []
        return sorted(cell.pk for cell in image.cells.all())

    def get_image_url(self, image: CellImage) -> str:
        """The access-controlled image view (session sign-in), never a public file URL."""
        return image_url(image.pk)


_DATETIME = serializers.DateTimeField()
# Per script prefix (a deployment under a sub-path has its own) and URLconf: the image view's path up to its id.
_image_url_heads: dict[tuple[str, str], str] = {}


def image_url(pk: int) -> str:
    """``reverse("cases:image", args=[pk])`` without the resolver's work on every image of every answer (6.8% of
    the web process's samples under e2e, docs/benchmarks.md "hweb2"): the path is reversed once per script prefix."""
    key = (get_script_prefix(), str(get_urlconf() or settings.ROOT_URLCONF))
    head = _image_url_heads.get(key)
    if head is None:
        probe = reverse("cases:image", args=[0])
        if not probe.endswith("/0/"):
            return reverse("cases:image", args=[pk])  # a route of another shape: reverse each time
        head = _image_url_heads[key] = probe[:-2]
    return f"{head}{int(pk)}/"


def image_detail_data(image: dict, predictions: list[dict], cells: list[int]) -> dict:
    """CellImageSerializer's output from cases.selectors.image_detail's values, without building a serializer
    per request (the same keys, order and formats; tests/cases/test_api_request_queries.py compares them)."""
    box = None if image["box_x0"] is None else [image["box_x0"], image["box_y0"], image["box_x1"], image["box_y1"]]
    um_per_pixel = image["um_per_pixel"]
    return {
        "id": image["id"],
        "case": image["case_id"],
        "original_name": image["original_name"],
        "sha256": image["sha256"],
        "size_bytes": image["size_bytes"],
        "width": image["width"],
        "height": image["height"],
        "content_type": image["content_type"],
        "status": image["status"],
        "status_message": image["status_message"],
        "attempts": image["attempts"],
        "uploaded_at": _DATETIME.to_representation(image["uploaded_at"]),
        "kind": image["kind"],
        "parent": image["parent_id"],
        "box": box,
        "located_as": image["located_as"],
        "um_per_pixel": None if um_per_pixel is None else float(um_per_pixel),
        "scale_source": image["scale_source"],
        "cells": cells,
        "image_url": image_url(image["id"]),
        "predictions": [
            {
                "model_version": prediction["model_version__name"],
                "label": prediction["label"],
                "confidence": float(prediction["confidence"]),
                "probabilities": prediction["probabilities"],
                "flagged": prediction["flagged"],
                "ood_score": None if prediction["ood_score"] is None else float(prediction["ood_score"]),
                "flag_reasons": prediction["flag_reasons"],
                "latency_ms": float(prediction["latency_ms"]),
                "created_at": _DATETIME.to_representation(prediction["created_at"]),
            }
            for prediction in predictions
        ],
    }


def fresh_upload_data(image: CellImage) -> dict:
    """CellImageSerializer's output for an image an upload has just written (no predictions, no cells yet):
    image_detail_data of the instance's values."""
    values = {name: getattr(image, name) for name in IMAGE_DETAIL_FIELDS}
    return image_detail_data(values, [], [])


def upload_result_data(accepted: list[CellImage], rejected: list) -> dict:
    """UploadResultSerializer's output for an upload's accepted images (just written) and rejected files."""
    return {
        "accepted": [fresh_upload_data(image) for image in accepted],
        "rejected": [{"name": str(item.name), "message": str(item.message)} for item in rejected],
    }


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
