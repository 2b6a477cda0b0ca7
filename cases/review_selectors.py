"""Reads for the review workflow: the gallery, each cell's final label, sign-off readiness, the differential."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Prefetch, QuerySet
from django.utils.translation import gettext as _

from inference.models import ModelVersion
from inference.registry import get_active_version

from .differential import Differential, LabelledCell, compute_differential, display_name
from .models import Case, CellImage, Prediction, Review
from .review_explain import FlagReason, flag_reasons
from .review_labels import CRITICAL_LABELS, REVIEWER_LABELS, is_reviewer_label


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
        """The cell's stored final label (cases.final_labels: its latest review's); empty while unreviewed."""
        return self.image.final_label

    @property
    def predicted_label(self) -> str:
        return self.prediction.label if self.prediction else ""

    @property
    def current_label(self) -> str:
        """What the cell is taken to be now: its final label, else the model's proposal."""
        return self.final_label or self.predicted_label

    @property
    def is_reviewed(self) -> bool:
        return bool(self.final_label)

    @property
    def flagged(self) -> bool:
        return bool(self.prediction and self.prediction.flagged)

    @property
    def overridden(self) -> bool:
        return self.is_reviewed and self.final_label != self.predicted_label

    @property
    def flag_reasons(self) -> list[FlagReason]:
        return flag_reasons(self.prediction)

    @property
    def final_name(self) -> str:
        return display_name(self.final_label) if self.final_label else ""

    @property
    def runner_up(self) -> tuple[str, float] | None:
        """The second most probable class and its probability, shown beside an unsure prediction."""
        if self.prediction is None or len(self.prediction.probabilities or {}) < 2:
            return None
        ranked = sorted(self.prediction.probabilities.items(), key=lambda item: item[1], reverse=True)
        return ranked[1]


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
    # Never a field nor a no-cell upload; a cell found in a field brings its field (shown around it in the zoom).
    images = CellImage.objects.cells().filter(case=case).select_related("parent").order_by("id")
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


def review_gallery(
    *, case: Case, cells: list[CellForReview] | None = None, labels: list[str] | None = None
) -> list[GalleryGroup]:
    """Cells grouped by what they are taken to be now, so a reclassified cell moves to its new class at once:
    flagged ("unidentified") cells nobody has reviewed first, then one group per class in the model's class
    order (a reviewed cell under its final label, else under its predicted label), then the reviewer-only labels
    (smudge, artefact, other / abnormal), then cells without a prediction (queued, classifying or failed).
    `cells` and `labels`: already loaded by the caller (one page shows gallery, progress and differential)."""
    cells = cells_for_review(case=case) if cells is None else cells
    labels = label_choices(case=case) if labels is None else labels
    order = {label: index for index, label in enumerate(labels)}
    flagged: list[CellForReview] = []
    by_class: dict[str, list[CellForReview]] = {}
    by_reviewer_label: dict[str, list[CellForReview]] = {}
    unclassified: list[CellForReview] = []
    for cell in cells:
        if is_reviewer_label(cell.final_label):
            by_reviewer_label.setdefault(cell.final_label, []).append(cell)
        elif cell.is_reviewed:
            by_class.setdefault(cell.final_label, []).append(cell)
        elif cell.prediction is None:
            unclassified.append(cell)
        elif cell.flagged:
            flagged.append(cell)
        else:
            by_class.setdefault(cell.predicted_label, []).append(cell)
    groups: list[GalleryGroup] = []
    if flagged:
        groups.append(GalleryGroup(key="flagged", title=_("Unidentified — needs review"), cells=flagged, flagged=True))
    for label in sorted(by_class, key=lambda name: (order.get(name, len(order)), name)):
        groups.append(GalleryGroup(key=label, title=display_name(label), cells=by_class[label]))
    for label in REVIEWER_LABELS:
        if label in by_reviewer_label:
            groups.append(GalleryGroup(key=label, title=display_name(label), cells=by_reviewer_label[label]))
    if unclassified:
        groups.append(GalleryGroup(key="unclassified", title=_("Not classified"), cells=unclassified))
    return groups


def review_progress(*, case: Case, cells: list[CellForReview] | None = None) -> ReviewProgress:
    cells = cells_for_review(case=case) if cells is None else cells
    unlabelled = tuple(cell.image.pk for cell in cells if not cell.is_reviewed)
    return ReviewProgress(total=len(cells), reviewed=len(cells) - len(unlabelled), unlabelled_ids=unlabelled)


def case_differential(
    *, case: Case, cells: list[CellForReview] | None = None, labels: list[str] | None = None
) -> Differential:
    """From final labels; a cell nobody has reviewed yet counts with its predicted label, marked unreviewed."""
    cells = cells_for_review(case=case) if cells is None else cells
    labels = label_choices(case=case) if labels is None else labels
    labelled = [
        LabelledCell(label=cell.current_label, reviewed=cell.is_reviewed) for cell in cells if cell.current_label
    ]
    return compute_differential(cells=labelled, classes=labels, unlabelled=len(cells) - len(labelled))


def case_reviews(*, case: Case) -> QuerySet[Review]:
    """The review history of a case, oldest first."""
    return Review.objects.filter(image__case=case).select_related("reviewer", "image").order_by("created_at", "id")


def critical_case_ids(*, case_ids) -> set[int]:
    """Cases (of `case_ids`) where some cell's final label is a critical label (other / abnormal)."""
    return set(
        CellImage.objects.filter(case_id__in=list(case_ids), final_label__in=CRITICAL_LABELS)
        .values_list("case_id", flat=True)
        .distinct()
    )


def count_by_label(labels) -> list[tuple[str, int]]:
    """(display name, count) of each label, most frequent first."""
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    return [(display_name(label), count) for label, count in sorted(counts.items(), key=lambda item: -item[1])]
