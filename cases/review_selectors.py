"""Reads for the review workflow: the gallery, each cell's final label, sign-off readiness, the differential."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Prefetch, QuerySet

from inference.models import ModelVersion
from inference.registry import get_active_version

from .differential import Differential, LabelledCell, compute_differential, display_name
from .models import Case, CellImage, Prediction, Review


@dataclass(frozen=True)
class CellForReview:
    image: CellImage
    prediction: Prediction | None
    reviews: tuple[Review, ...]

    @property
    def final_review(self) -> Review | None:
        return self.reviews[-1] if self.reviews else None

    @property
    def final_label(self) -> str:
        """The latest review's label; empty while nobody has reviewed the cell."""
        return self.final_review.to_label if self.final_review else ""

    @property
    def predicted_label(self) -> str:
        return self.prediction.label if self.prediction else ""

    @property
    def current_label(self) -> str:
        """What the cell is taken to be now: its final label, else the model's proposal."""
        return self.final_label or self.predicted_label

    @property
    def is_reviewed(self) -> bool:
        return self.final_review is not None

    @property
    def flagged(self) -> bool:
        return bool(self.prediction and self.prediction.flagged)

    @property
    def overridden(self) -> bool:
        return self.is_reviewed and self.final_label != self.predicted_label


@dataclass
class GalleryGroup:
    key: str
    title: str
    cells: list[CellForReview]
    flagged: bool = False


@dataclass(frozen=True)
class ReviewProgress:
    total: int
    reviewed: int
    unlabelled_ids: tuple[int, ...]

    @property
    def ready_to_sign(self) -> bool:
        return self.total > 0 and not self.unlabelled_ids


def images_with_review_data(queryset: QuerySet[CellImage]) -> QuerySet[CellImage]:
    return queryset.prefetch_related(
        Prefetch(
            "predictions",
            queryset=Prediction.objects.select_related("model_version").order_by("-created_at", "-id"),
        ),
        Prefetch("reviews", queryset=Review.objects.select_related("reviewer").order_by("created_at", "id")),
    )


def to_cell(image: CellImage) -> CellForReview:
    predictions = list(image.predictions.all())
    return CellForReview(
        image=image, prediction=predictions[0] if predictions else None, reviews=tuple(image.reviews.all())
    )


def cells_for_review(*, case: Case, image_ids: list[int] | None = None) -> list[CellForReview]:
    images = CellImage.objects.filter(case=case).order_by("id")
    if image_ids is not None:
        images = images.filter(pk__in=image_ids)
    return [to_cell(image) for image in images_with_review_data(images)]


def label_choices(*, case: Case) -> list[str]:
    """Classes a cell of this case may be given: those of the model versions that classified it, else the
    active version's."""
    version_ids = Prediction.objects.filter(image__case=case).values_list("model_version", flat=True).distinct()
    versions = list(ModelVersion.objects.filter(pk__in=version_ids).order_by("created_at"))
    if not versions:
        active = get_active_version()
        versions = [active] if active else []
    labels: list[str] = []
    for version in versions:
        labels.extend(label for label in version.classes if label not in labels)
    return labels


def review_gallery(*, case: Case) -> list[GalleryGroup]:
    """Flagged ("unidentified") cells first, then one group per predicted class in the model's class order,
    then cells without a prediction (queued, classifying or failed)."""
    cells = cells_for_review(case=case)
    order = {label: index for index, label in enumerate(label_choices(case=case))}
    flagged = [cell for cell in cells if cell.flagged]
    by_class: dict[str, list[CellForReview]] = {}
    for cell in cells:
        if cell.prediction and not cell.flagged:
            by_class.setdefault(cell.predicted_label, []).append(cell)
    unclassified = [cell for cell in cells if cell.prediction is None]
    groups: list[GalleryGroup] = []
    if flagged:
        groups.append(GalleryGroup(key="flagged", title="Unidentified — needs review", cells=flagged, flagged=True))
    for label in sorted(by_class, key=lambda name: (order.get(name, len(order)), name)):
        groups.append(GalleryGroup(key=label, title=display_name(label), cells=by_class[label]))
    if unclassified:
        groups.append(GalleryGroup(key="unclassified", title="Not classified", cells=unclassified))
    return groups


def review_progress(*, case: Case) -> ReviewProgress:
    cells = cells_for_review(case=case)
    unlabelled = tuple(cell.image.pk for cell in cells if not cell.is_reviewed)
    return ReviewProgress(total=len(cells), reviewed=len(cells) - len(unlabelled), unlabelled_ids=unlabelled)


def case_differential(*, case: Case) -> Differential:
    """From final labels; a cell nobody has reviewed yet counts with its predicted label, marked unreviewed."""
    cells = cells_for_review(case=case)
    labelled = [
        LabelledCell(label=cell.current_label, reviewed=cell.is_reviewed) for cell in cells if cell.current_label
    ]
    return compute_differential(cells=labelled, classes=label_choices(case=case), unlabelled=len(cells) - len(labelled))


def case_reviews(*, case: Case) -> QuerySet[Review]:
    """The review history of a case, oldest first."""
    return Review.objects.filter(image__case=case).select_related("reviewer", "image").order_by("created_at", "id")
