"""Reads for cases and cell images: lists, the cells of a case with their latest prediction, the decrypted
image and its renditions, and which images are stale or confirmed."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone
from PIL import Image

from inference.preprocessing import to_rgb

from . import storage
from .models import Case, CellImage, Laboratory, Prediction

PENDING_STATUSES = (CellImage.Status.QUEUED, CellImage.Status.CLASSIFYING)
THUMBNAIL_SIZE = 224
BROWSER_READY_TYPES = {"image/jpeg", "image/png"}


@dataclass(frozen=True)
class CellCard:
    """One cell as the case page shows it."""

    image: CellImage
    prediction: Prediction | None
    retry_allowed: bool

    @property
    def pending(self) -> bool:
        return self.image.status in PENDING_STATUSES


def stale_after() -> timedelta:
    return timedelta(seconds=getattr(settings, "CLASSIFICATION_STALE_SECONDS", 300))


def list_cases(*, status: str | None = None, accession: str | None = None) -> QuerySet[Case]:
    cases = (
        Case.objects.select_related("created_by")
        .defer("patient_reference")
        .annotate(
            image_count=Count("images", distinct=True),
            pending_count=Count("images", filter=Q(images__status__in=PENDING_STATUSES), distinct=True),
            failed_count=Count("images", filter=Q(images__status=CellImage.Status.FAILED), distinct=True),
        )
        .order_by("-created_at", "-id")
    )
    if status:
        cases = cases.filter(status=status)
    if accession:
        cases = cases.filter(accession_id__icontains=accession.strip())
    return cases


def get_case(*, pk: int) -> Case:
    return Case.objects.select_related("created_by", "signed_by", "laboratory").get(pk=pk)


def list_laboratories() -> QuerySet[Laboratory]:
    """Every laboratory, by name, with how many cases it has."""
    return Laboratory.objects.annotate(case_count=Count("cases")).order_by("name", "id")


def get_laboratory(*, pk: int) -> Laboratory:
    return Laboratory.objects.get(pk=pk)


def get_image(*, pk: int) -> CellImage:
    return CellImage.objects.select_related("case").get(pk=pk)


def images_of_case(*, case: Case) -> QuerySet[CellImage]:
    """The case's images with their predictions, newest first (`image.predictions.all()[0]` is the latest)."""
    return (
        CellImage.objects.filter(case=case)
        .select_related("uploaded_by")
        .prefetch_related(
            Prefetch(
                "predictions",
                queryset=Prediction.objects.select_related("model_version").order_by("-created_at", "-id"),
            )
        )
        .order_by("id")
    )


def latest_prediction(*, image: CellImage) -> Prediction | None:
    predictions = list(image.predictions.all())
    return predictions[0] if predictions else None


def is_stale(*, image: CellImage) -> bool:
    return image.status in PENDING_STATUSES and image.status_changed_at < timezone.now() - stale_after()


def retry_allowed(*, image: CellImage) -> bool:
    return image.status == CellImage.Status.FAILED or is_stale(image=image)


def cell_cards(*, case: Case, image_ids=None) -> list[CellCard]:
    """The case's cells as the page shows them; only those among `image_ids` when given."""
    images = images_of_case(case=case)
    if image_ids is not None:
        images = images.filter(pk__in=list(image_ids))
    return [
        CellCard(image=image, prediction=latest_prediction(image=image), retry_allowed=retry_allowed(image=image))
        for image in images
    ]


def image_updates(*, case: Case, image_ids) -> dict:
    """The push event's body (docs/events.md): the case's status and the current state of these images."""
    images = []
    for image in images_of_case(case=case).filter(pk__in=list(image_ids)):
        prediction = latest_prediction(image=image)
        images.append(
            {
                "id": image.pk,
                "status": image.status,
                "status_message": image.status_message,
                "prediction": None
                if prediction is None
                else {
                    "label": prediction.label,
                    "confidence": round(prediction.confidence, 4),
                    "flagged": prediction.flagged,
                    "ood_score": prediction.ood_score,
                    "model_version": prediction.model_version.name,
                },
            }
        )
    status = Case.objects.filter(pk=case.pk).values_list("status", flat=True).first()
    pending = CellImage.objects.filter(case_id=case.pk, status__in=PENDING_STATUSES).count()
    return {"case": {"id": case.pk, "status": status, "pending": pending}, "images": images}


def has_pending_images(*, case: Case) -> bool:
    return case.images.filter(status__in=PENDING_STATUSES).exists()


def stale_image_ids(*, limit: int = 1000) -> list[int]:
    cutoff = timezone.now() - stale_after()
    return list(
        CellImage.objects.filter(status__in=PENDING_STATUSES, status_changed_at__lt=cutoff)
        .order_by("status_changed_at")
        .values_list("pk", flat=True)[:limit]
    )


def open_cell_image(*, image: CellImage) -> Image.Image:
    """The stored image decrypted and decoded as upright 8-bit RGB (what the predictor and Grad-CAM take)."""
    with Image.open(io.BytesIO(storage.load(image.storage_key))) as opened:
        rgb = to_rgb(opened)
        rgb.load()
        return rgb


def image_rendition(*, image: CellImage, variant: str = "full") -> tuple[bytes, str]:
    """Bytes and content type a browser can display: the upload itself when it is a plain RGB JPEG/PNG,
    else an upright RGB PNG; `thumb` is a JPEG at most THUMBNAIL_SIZE pixels on its longer side."""
    if variant == "thumb":
        rgb = open_cell_image(image=image)
        rgb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue(), "image/jpeg"
    data = storage.load(image.storage_key)
    if image.content_type in BROWSER_READY_TYPES:
        with Image.open(io.BytesIO(data)) as opened:
            orientation = opened.getexif().get(0x0112, 1)
            if opened.mode == "RGB" and orientation == 1:
                return data, image.content_type
            rgb = to_rgb(opened)
    else:
        with Image.open(io.BytesIO(data)) as opened:
            rgb = to_rgb(opened)
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


def confirmed_cells(*, signed_only: bool = False) -> list[tuple[CellImage, str]]:
    """Every reviewed cell with its final label (the stored one, see cases.final_labels)."""
    images = CellImage.objects.exclude(final_label="")
    if signed_only:
        images = images.filter(case__status=Case.Status.SIGNED)
    return [(image, image.final_label) for image in images.order_by("pk")]
