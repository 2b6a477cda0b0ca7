"""Reads for cases and cell images: lists, the cells of a case with their latest prediction, the decrypted
image and its renditions, and which images are stale or confirmed."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, connections, router
from django.db.models import Case as DbCase
from django.db.models import Count, IntegerField, OuterRef, Prefetch, Q, QuerySet, Subquery, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from PIL import Image
from rest_framework.fields import DateTimeField

from hematovision.statements import (
    built_once,
    cached_statement,
    instances_from_rows,
    placeholders,
    qualified_columns,
    values_statement,
)
from inference import case_review
from inference.preprocessing import to_rgb

from . import storage
from .models import Case, CellImage, Laboratory, Prediction

PENDING_STATUSES = (CellImage.Status.QUEUED, CellImage.Status.CLASSIFYING)
THUMBNAIL_SIZE = 224
PREVIEW_SIZE = 1280
BROWSER_READY_TYPES = {"image/jpeg", "image/png"}
_DATETIME_FIELD = DateTimeField()


@dataclass(frozen=True)
class CellCard:
    """One cell as the case page shows it."""

    image: CellImage
    prediction: Prediction | None
    retry_allowed: bool
    # A field's found cells (cards of their own too), in the order found: the boxes drawn on the field.
    cells: tuple[CellCard, ...] = ()

    @property
    def is_field(self) -> bool:
        return self.image.kind == CellImage.Kind.FIELD

    @property
    def no_cell(self) -> bool:
        return self.image.status == CellImage.Status.NO_CELL

    @property
    def overlay_font_size(self) -> int:
        """Box numbers on a field, in the field's own pixels (the overlay scales with the picture)."""
        return max(12, round(max(self.image.width, self.image.height) / 28))

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
            image_count=Count("images", filter=Q(images__parent__isnull=True), distinct=True),
            cell_count=Count("images", filter=Q(images__kind=CellImage.Kind.CELL), distinct=True),
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


def get_case(*, pk: int, related: bool = True) -> Case:
    """The case; with `related=False` without its creator, signer and laboratory joined (an upload needs none).
    Raises Case.DoesNotExist."""
    if not related:
        return _case_row(pk)
    return Case.objects.select_related("created_by", "signed_by", "laboratory").get(pk=pk)


def _case_row(pk: int) -> Case:
    """Case.objects.get(pk=pk) in a SELECT built once per process: every upload and case images request reads its
    case first, and the ORM compiled it each time (docs/benchmarks.md, "hweb2")."""
    connection = connections[router.db_for_read(Case)]
    if connection.vendor not in ("postgresql", "sqlite"):
        return Case.objects.get(pk=pk)

    def build() -> str:
        quote = connection.ops.quote_name
        return (
            f"SELECT {qualified_columns(connection, Case)} FROM {quote(Case._meta.db_table)}"  # noqa: S608
            f" WHERE {quote(Case._meta.db_table)}.{quote(Case._meta.pk.column)} = %s"
        )

    with connection.cursor() as cursor:
        cursor.execute(cached_statement(connection, "case by key", 1, build), [Case._meta.pk.get_prep_value(pk)])
        rows = cursor.fetchall()
    if not rows:
        raise Case.DoesNotExist("Case matching query does not exist.")
    return instances_from_rows(Case, connection, rows)[0]


def list_laboratories() -> QuerySet[Laboratory]:
    """Every laboratory, by name, with how many cases it has."""
    return Laboratory.objects.annotate(case_count=Count("cases")).order_by("name", "id")


def get_laboratory(*, pk: int) -> Laboratory:
    return Laboratory.objects.get(pk=pk)


def get_image(*, pk: int) -> CellImage:
    return CellImage.objects.select_related("case").get(pk=pk)


def images_of_case(*, case: Case, uploader: bool = True) -> QuerySet[CellImage]:
    """The case's images with their predictions, newest first (`image.predictions.all()[0]` is the latest);
    `uploader=False` leaves out the uploader's join (the API does not show it)."""
    images = CellImage.objects.filter(case=case)
    if uploader:
        images = images.select_related("uploaded_by")
    return images.prefetch_related(
        Prefetch(
            "predictions",
            queryset=Prediction.objects.select_related("model_version").order_by("-created_at", "-id"),
        ),
        Prefetch("cells", queryset=CellImage.objects.only("id", "parent_id")),
    ).order_by("id")


# What GET /api/v1/images/<id>/ shows of an image and of each of its predictions (cases.serializers).
IMAGE_DETAIL_FIELDS = (
    "id",
    "case_id",
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
    "parent_id",
    "box_x0",
    "box_y0",
    "box_x1",
    "box_y1",
    "located_as",
    "um_per_pixel",
    "scale_source",
)
PREDICTION_DETAIL_FIELDS = (
    "model_version__name",
    "label",
    "confidence",
    "probabilities",
    "flagged",
    "ood_score",
    "flag_reasons",
    "latency_ms",
    "created_at",
)


def image_detail(*, pk: int) -> tuple[dict, list[dict], list[int]]:
    """One image as values, its predictions (newest first) and, for a field, its cells' ids: in one query
    (the image joined to its predictions and their versions; a second one for a field's cells). Polled by
    every client waiting for a cell, so no model instances. Raises CellImage.DoesNotExist."""
    rows = _image_detail_rows(pk)
    if not rows:
        raise CellImage.DoesNotExist(f"no image {pk}")
    image = {name: rows[0][name] for name in IMAGE_DETAIL_FIELDS}
    predictions = [
        {name: row[f"predictions__{name}"] for name in PREDICTION_DETAIL_FIELDS}
        for row in rows
        if row["predictions__id"] is not None
    ]
    cells = []
    if image["kind"] == CellImage.Kind.FIELD:
        cells = sorted(CellImage.objects.filter(parent_id=pk).values_list("id", flat=True))
    return image, predictions, cells


def _image_detail_values(pk: int) -> QuerySet:
    return (
        CellImage.objects.filter(pk=pk)
        .order_by("-predictions__created_at", "-predictions__id")
        .values(*IMAGE_DETAIL_FIELDS, "predictions__id", *(f"predictions__{name}" for name in PREDICTION_DETAIL_FIELDS))
    )


def _image_detail_rows(pk: int) -> list[dict]:
    """list(_image_detail_values(pk)): the same statement, compiled by the ORM once per process and database
    (built_once), values converted as the ORM converts them. The compilation (three joins, ordering, values)
    cost more CPU than the query, on every poll of every client waiting for a cell (docs/benchmarks.md, "hweb2")."""
    connection = connections[router.db_for_read(CellImage)]
    select = built_once(
        connection, "cases image detail", lambda: values_statement(_image_detail_values(0), connection, [0])
    )
    if select is None:
        return list(_image_detail_values(pk))  # not the one-parameter statement expected: the ORM each time
    with connection.cursor() as cursor:
        cursor.execute(select.sql, [CellImage._meta.pk.get_prep_value(pk)])
        rows = cursor.fetchall()
    return [dict(zip(select.columns, values, strict=True)) for values in select.converted_rows(rows, connection)]


def latest_prediction(*, image: CellImage) -> Prediction | None:
    predictions = list(image.predictions.all())
    return predictions[0] if predictions else None


def is_stale(*, image: CellImage) -> bool:
    return image.status in PENDING_STATUSES and image.status_changed_at < timezone.now() - stale_after()


def retry_allowed(*, image: CellImage) -> bool:
    return image.status == CellImage.Status.FAILED or is_stale(image=image)


def cell_cards(*, case: Case, image_ids=None) -> list[CellCard]:
    """The case's cells as the page shows them; only those among `image_ids` when given, plus the cells found
    in any field among them (a page polling a pending upload that became a field gets its new cells too)."""
    images = images_of_case(case=case)
    if image_ids is not None:
        images = images.filter(pk__in=list(image_ids))
    images = list(images)
    fields = [image.pk for image in images if image.kind == CellImage.Kind.FIELD]
    found: dict[int, list[CellCard]] = {}
    if fields:
        for cell in images_of_case(case=case).filter(parent_id__in=fields):
            found.setdefault(cell.parent_id, []).append(_card(cell))
    cards = [_card(image, cells=tuple(found.get(image.pk, ()))) for image in images]
    if image_ids is not None:
        listed = {image.pk for image in images}
        extra = [cell for cells in found.values() for cell in cells if cell.image.pk not in listed]
        cards = sorted([*cards, *extra], key=lambda card: card.image.pk)
    return cards


def _card(image: CellImage, cells: tuple[CellCard, ...] = ()) -> CellCard:
    return CellCard(
        image=image, prediction=latest_prediction(image=image), retry_allowed=retry_allowed(image=image), cells=cells
    )


def image_updates(*, case: Case, image_ids) -> dict:
    """The push event's body (docs/events.md): the case's status and the current state of these images.

    Read on every wake of every open stream, so in one query: the images joined to their predictions (newest
    first; the first row of an image is its latest prediction), each row carrying the case's status and its
    pending count (an uncorrelated subquery, computed once) and, for a field, how many cells it has (a
    correlated count PostgreSQL runs for field rows only); a second query only when no image matched.
    Everything an API client reads from the image's GET once it is done is here (the label, the flag and
    its reasons, the upload's and the prediction's times), so a client that listens needs no GET.
    On PostgreSQL the query's SQL is built by the ORM once per process and number of images
    (_image_update_rows_precompiled): building and compiling it was most of a wake's CPU."""
    ids = sorted({int(pk) for pk in image_ids})
    if ids and connection.vendor == "postgresql":
        rows = _image_update_rows_precompiled(case.pk, ids)
    else:
        rows = _image_update_rows(case.pk, ids)
    images = []
    case_status, pending = None, 0
    for (
        row_case_status,
        case_pending,
        image_id,
        status,
        message,
        uploaded_at,
        kind,
        parent_id,
        cell_count,
        prediction_id,
        label,
        confidence,
        flagged,
        flag_reasons,
        ood_score,
        version,
        predicted_at,
    ) in rows:
        case_status, pending = row_case_status, case_pending or 0
        if images and images[-1]["id"] == image_id:
            continue  # an older prediction of the same image
        images.append(
            {
                "id": image_id,
                "status": status,
                "status_message": message,
                "prediction": None
                if prediction_id is None
                else {
                    "label": label,
                    "confidence": round(confidence, 4),
                    "flagged": flagged,
                    "ood_score": ood_score,
                    "model_version": version,
                    "flag_reasons": flag_reasons or [],
                    "created_at": _api_datetime(predicted_at),
                },
                "uploaded_at": _api_datetime(uploaded_at),
                "kind": kind,
                "parent": parent_id,
                "cell_count": cell_count,
            }
        )
    if not images:
        case_status, pending = (
            Case.objects.filter(pk=case.pk)
            .annotate(pending=Count("images", filter=Q(images__status__in=PENDING_STATUSES)))
            .values_list("status", "pending")
            .first()
        ) or (None, 0)
    return {"case": {"id": case.pk, "status": case_status, "pending": pending}, "images": images}


_IMAGE_UPDATE_COLUMNS = (
    "case__status",
    "case_pending",
    "id",
    "status",
    "status_message",
    "uploaded_at",
    "kind",
    "parent_id",
    "cell_count",
    "predictions__id",
    "predictions__label",
    "predictions__confidence",
    "predictions__flagged",
    "predictions__flag_reasons",
    "predictions__ood_score",
    "predictions__model_version__name",
    "predictions__created_at",
)
_FLAG_REASONS_COLUMN = _IMAGE_UPDATE_COLUMNS.index("predictions__flag_reasons")


def _image_update_rows(case_id: int, image_ids: list[int]) -> QuerySet:
    """The event's one query, as the ORM builds it (see image_updates)."""
    pending = (
        CellImage.objects.filter(case_id=case_id, status__in=PENDING_STATUSES)
        .order_by()
        .values("case_id")
        .annotate(count=Count("pk"))
        .values("count")
    )
    cells_found = (
        CellImage.objects.filter(parent_id=OuterRef("pk"))
        .order_by()
        .values("parent_id")
        .annotate(count=Count("pk"))
        .values("count")
    )
    return (
        CellImage.objects.filter(case_id=case_id, pk__in=image_ids)
        .annotate(
            case_pending=Subquery(pending),
            cell_count=DbCase(
                When(kind=CellImage.Kind.FIELD, then=Coalesce(Subquery(cells_found), 0)),
                default=None,
                output_field=IntegerField(),
            ),
        )
        .order_by("id", "-predictions__created_at", "-predictions__id")
        .values_list(*_IMAGE_UPDATE_COLUMNS)
    )


# (database alias, number of image ids) -> (SQL, each parameter: "case", an image's index, or a constant).
_image_update_sql: dict[tuple[str, int], tuple[str, list]] = {}
_CASE_SENTINEL = -987_654_321
_IMAGE_SENTINEL_BASE = -876_543_210


class _Slot(int):
    """Marks a parameter of the compiled SQL to fill in per call (an image's position in the ids)."""


def _image_update_rows_precompiled(case_id: int, image_ids: list[int]) -> list[tuple]:
    """_image_update_rows's rows (PostgreSQL): the ORM's SQL, built once per process for each power-of-two
    number of ids (the ids are padded by repeating the last), then only executed. The values are those of
    the queryset: PostgreSQL returns aware datetimes; the JSON column comes as text (Django's loader) and
    is decoded here as JSONField.from_db_value would."""
    size = 1 << (len(image_ids) - 1).bit_length()
    key = (connection.alias, size)
    compiled = _image_update_sql.get(key)
    if compiled is None:
        sentinels = [_IMAGE_SENTINEL_BASE - index for index in range(size)]
        sql, params = _image_update_rows(_CASE_SENTINEL, sentinels).query.sql_with_params()
        template: list = []
        for param in params:
            if param == _CASE_SENTINEL:
                template.append("case")
            elif isinstance(param, int) and _IMAGE_SENTINEL_BASE - size < param <= _IMAGE_SENTINEL_BASE:
                template.append(_Slot(_IMAGE_SENTINEL_BASE - param))
            else:
                template.append(param)
        if sum(1 for slot in template if isinstance(slot, _Slot)) != size or "case" not in template:
            return list(_image_update_rows(case_id, image_ids))  # not the SQL expected: the ORM each time
        compiled = _image_update_sql.setdefault(key, (sql, template))
    sql, template = compiled
    padded = image_ids + [image_ids[-1]] * (size - len(image_ids))
    params = [case_id if slot == "case" else padded[slot] if isinstance(slot, _Slot) else slot for slot in template]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    column = _FLAG_REASONS_COLUMN
    return [
        (*row[:column], json.loads(row[column]), *row[column + 1 :]) if isinstance(row[column], str) else row
        for row in rows
    ]


def _api_datetime(value) -> str:
    """A time as the API writes it (DRF's DateTimeField: ISO 8601, the current time zone, "Z" for UTC)."""
    return _DATETIME_FIELD.to_representation(value)


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
    if variant in ("thumb", "preview"):
        # Stored at upload (thumbnails) and at analysis (a field's preview): decrypted, never decoded.
        stored = image.thumbnail_key if variant == "thumb" else image.preview_key
        if stored:
            return storage.load(stored), "image/jpeg"
        # Images stored before renditions were: made from the full image.
        rgb = open_cell_image(image=image)
        size = THUMBNAIL_SIZE if variant == "thumb" else PREVIEW_SIZE
        rgb.thumbnail((size, size))
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


# "This model is not validated for images like these": when a case's cells as a whole look unlike the
# training data. The rule lives in inference.case_review (the classification task escalates such a case's cells
# by the same rule, and `manage.py evaluate --case-size` simulates it).
NOT_VALIDATED_MESSAGE = _("This model is not validated for images like these.")
UNLIKE_TRAINING_REASONS = case_review.UNLIKE_TRAINING_REASONS
UNLIKE_TRAINING_SHARE = case_review.UNLIKE_TRAINING_SHARE
UNLIKE_TRAINING_MIN_CELLS = case_review.UNLIKE_TRAINING_MIN_CELLS


@dataclass(frozen=True)
class ValidityWarning:
    classified_cells: int
    unlike_training: int

    @property
    def share(self) -> float:
        return self.unlike_training / self.classified_cells if self.classified_cells else 0.0

    @property
    def warn(self) -> bool:
        return case_review.case_is_unlike_training(
            classified_cells=self.classified_cells, unlike_training=self.unlike_training
        )

    @property
    def message(self) -> str:
        return str(NOT_VALIDATED_MESSAGE) if self.warn else ""


def model_validity(*, case: Case) -> ValidityWarning:
    """How many of the case's classified cells (latest prediction of each) look unlike the training data:
    counted by the database (case_cell_counts), so a page showing the warning reads one row whatever the case's size."""
    counts = case_cell_counts([case.pk]).get(case.pk, CaseCellCounts())
    return ValidityWarning(classified_cells=counts.classified, unlike_training=counts.unlike_training)


def case_cell_predictions(case_ids: list[int]) -> list[tuple]:
    """(case, image, parent, prediction, flag reasons as a list) of every prediction of the cases' cells, an
    image's newest first: one statement, its SQL built once per process (the ORM would compile it again for
    every classification task, which reads it per batch)."""
    connection = connections[router.db_for_read(Prediction)]

    def build() -> str:
        quote = connection.ops.quote_name
        image, prediction = CellImage._meta, Prediction._meta

        def column(meta, name: str) -> str:
            return quote(meta.get_field(name).column)

        # Table and column names come from the models' metadata, quoted; every value is a parameter.
        return (
            f"SELECT i.{column(image, 'case')}, p.{column(prediction, 'image')}, i.{column(image, 'parent')},"  # noqa: S608
            f" p.{quote(prediction.pk.column)}, p.{column(prediction, 'flag_reasons')}"
            f" FROM {quote(prediction.db_table)} p JOIN {quote(image.db_table)} i"
            f" ON i.{quote(image.pk.column)} = p.{column(prediction, 'image')}"
            f" WHERE i.{column(image, 'case')} IN ({placeholders(len(case_ids))}) AND i.{column(image, 'kind')} = %s"
            f" ORDER BY p.{column(prediction, 'image')}, p.{column(prediction, 'created_at')} DESC,"
            f" p.{quote(prediction.pk.column)} DESC"
        )

    sql = cached_statement(connection, "case predictions", len(case_ids), build)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*case_ids, CellImage.Kind.CELL])
        rows = cursor.fetchall()
    # SQLite gives the JSON text.
    return [(*row[:4], (json.loads(row[4]) if isinstance(row[4], str) else row[4]) or []) for row in rows]


@dataclass(frozen=True)
class CaseCellCounts:
    """A case's classified cells counted by their newest prediction: all of them, those whose reasons say
    "unlike the training data" (case_review.UNLIKE_TRAINING_REASONS), those already escalated."""

    classified: int = 0
    unlike_training: int = 0
    escalated: int = 0


def case_cell_counts(case_ids: list[int], *, excluding: Sequence[int] = ()) -> dict[int, CaseCellCounts]:
    """CaseCellCounts per case (cases without a classified cell are left out), leaving out the images
    `excluding` and the cells found in them: one row per case whatever its size, counted by the database
    (jsonb's ?| on PostgreSQL, json_each on SQLite), the SQL built once per process. What the classification
    task reads every batch; elsewhere the rows of case_cell_predictions are counted here."""
    connection = connections[router.db_for_read(Prediction)]
    excluded = sorted({int(pk) for pk in excluding})
    unlike_codes = sorted(case_review.UNLIKE_TRAINING_REASONS)
    if connection.vendor not in ("postgresql", "sqlite"):
        return _counted(case_cell_predictions(case_ids), set(excluded))

    def build() -> str:
        quote = connection.ops.quote_name
        image, prediction = CellImage._meta, Prediction._meta

        def column(meta, name: str) -> str:
            return quote(meta.get_field(name).column)

        reasons = f"p.{column(prediction, 'flag_reasons')}"
        if connection.vendor == "postgresql":
            unlike = f"{reasons} ?| ARRAY[{placeholders(len(unlike_codes))}]"
            escalated = f"{reasons} ? %s"
        else:
            each = f"SELECT 1 FROM json_each({reasons}) r WHERE r.value"  # noqa: S608
            unlike = f"EXISTS ({each} IN ({placeholders(len(unlike_codes))}))"
            escalated = f"EXISTS ({each} = %s)"
        left_out = ""
        if excluded:
            listed = placeholders(len(excluded))
            parent = f"i.{column(image, 'parent')}"
            left_out = (
                f" AND i.{quote(image.pk.column)} NOT IN ({listed})"
                f" AND ({parent} IS NULL OR {parent} NOT IN ({listed}))"
            )
        # Table and column names come from the models' metadata, quoted; every value is a parameter.
        return (
            "SELECT t.case_id, COUNT(*), SUM(t.unlike), SUM(t.escalated) FROM ("  # noqa: S608
            f"SELECT i.{column(image, 'case')} AS case_id,"
            f" CASE WHEN {unlike} THEN 1 ELSE 0 END AS unlike, CASE WHEN {escalated} THEN 1 ELSE 0 END AS escalated,"
            f" ROW_NUMBER() OVER (PARTITION BY p.{column(prediction, 'image')}"
            f" ORDER BY p.{column(prediction, 'created_at')} DESC, p.{quote(prediction.pk.column)} DESC) AS newest"
            f" FROM {quote(prediction.db_table)} p JOIN {quote(image.db_table)} i"
            f" ON i.{quote(image.pk.column)} = p.{column(prediction, 'image')}"
            f" WHERE i.{column(image, 'case')} IN ({placeholders(len(case_ids))}) AND i.{column(image, 'kind')} = %s"
            f"{left_out}) t WHERE t.newest = 1 GROUP BY t.case_id"
        )

    sql = cached_statement(connection, f"case cell counts excluding {len(excluded)}", len(case_ids), build)
    parameters = [*unlike_codes, case_review.UNVALIDATED_CASE_REASON, *case_ids, CellImage.Kind.CELL]
    parameters += excluded * 2
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        rows = cursor.fetchall()
    return {
        case_id: CaseCellCounts(classified=classified, unlike_training=int(unlike), escalated=int(escalated))
        for case_id, classified, unlike, escalated in rows
    }


def newest_cell_predictions(case_ids: list[int], *, excluding: Sequence[int] = ()) -> dict[int, tuple[int, int, list]]:
    """{image: (case, prediction, flag reasons)} of each classified cell's newest prediction in the cases, leaving out
    the images `excluding` and the cells found in them."""
    return _newest(case_cell_predictions(case_ids), set(excluding))


def _newest(rows, excluded: set[int]) -> dict[int, tuple[int, int, list]]:
    # case_cell_predictions gives an image's newest prediction first.
    newest: dict[int, tuple[int, int, list]] = {}
    for case_id, image_id, parent_id, prediction_id, reasons in rows:
        if image_id not in excluded and parent_id not in excluded:
            newest.setdefault(image_id, (case_id, prediction_id, reasons))
    return newest


def _counted(rows, excluded: set[int]) -> dict[int, CaseCellCounts]:
    counts: dict[int, list[int]] = {}
    for case_id, _prediction_id, reasons in _newest(rows, excluded).values():
        row = counts.setdefault(case_id, [0, 0, 0])
        row[0] += 1
        row[1] += case_review.is_unlike_training(reasons)
        row[2] += case_review.UNVALIDATED_CASE_REASON in reasons
    return {case_id: CaseCellCounts(*row) for case_id, row in counts.items()}
