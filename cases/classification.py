"""The classification workflow: uploaded images -> cells found, cropped and classified -> stored.

    classify(image_ids=[...])   # what the Celery task runs (cases/tasks.py only adds the retries)

Each pending upload is claimed (status "classifying"), decoded once, and handed to the inference pipeline
(`inference.analysis.analyse_images`) with its case's laboratory scale. The answer is stored in one
transaction per batch, with batched writes:

- a crop (the upload is one cell): the upload stays one cell, with the found cell's box and a Prediction;
- a field (a whole microscope field): the upload becomes kind "field" (kept, with a stored preview to draw
  the boxes on) and gets one child cell per cell found, each with its box in the field, its own encrypted
  crop and thumbnail, and a Prediction;
- no cell found: the upload becomes kind "no_cell" with status "no_cell", a final state (not a failure,
  not a prediction).

A case imaged unlike the training data as a whole (inference.case_review) has every cell flagged
"unvalidated_case": the cells of a batch are flagged when stored, and the batch that turns a case's warning on
flags the case's earlier predictions too (audited, and announced like the batch).

Anything wrong with one image (unreadable file, a pipeline error on it alone) is recorded on that image as a
failure; ModelUnavailable and database errors propagate for the task to retry. Pages watching the case are
told after the commit (cases.events).

This module imports neither cases.services nor cases.tasks: tasks -> classification, services ->
classification, never back.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, router, transaction
from django.db.models import Exists, F, OuterRef
from django.db.models.signals import post_save
from django.utils import timezone, translation
from django.utils.translation import gettext, gettext_noop
from PIL import Image

from audit.models import AuditEvent
from audit.services import record_many
from hematovision.statements import (
    cached_statement,
    instances_from_rows,
    placeholders,
    qualified_columns,
    supports_returning,
)
from inference import case_review
from inference.analysis import analyse_images
from inference.predictor import ModelUnavailable, get_serving_predictors

from . import events, selectors, storage
from .models import Case, CellImage, Prediction, ShadowPrediction
from .rows import insert_rows, update_rows

logger = logging.getLogger(__name__)

PENDING_STATUSES = selectors.PENDING_STATUSES
TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError)
# The field image the case page draws the boxes on: a JPEG at most this many pixels on its longer side.
PREVIEW_SIZE = selectors.PREVIEW_SIZE
THUMBNAIL_SIZE = selectors.THUMBNAIL_SIZE
# Upload fields written when its analysis is stored.
_UPLOAD_FIELDS = [
    "kind",
    "status",
    "status_message",
    "status_changed_at",
    "box_x0",
    "box_y0",
    "box_x1",
    "box_y1",
    "located_as",
    "um_per_pixel",
    "scale_source",
    "preview_key",
]


# Renditions.


def thumbnail_jpeg(picture: Image.Image, *, size: int = THUMBNAIL_SIZE) -> bytes:
    """A JPEG of an upright RGB picture, at most `size` pixels on its longer side (resized straight from the
    picture, never copied whole: a 40-megapixel upload is not held twice)."""
    width, height = picture.size
    scale = min(1.0, size / max(width, height))
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = picture.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0) if scale < 1 else picture
    if small.mode != "RGB":
        small = small.convert("RGB")
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def png_bytes(picture: Image.Image) -> bytes:
    """Lossless, quickly: zlib level 1 writes a 300 px crop ~7x faster than the default level 6 for ~20 % more bytes."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# State changes.


def claim_for_classification(*, image_ids: Sequence[int]) -> list[CellImage]:
    """Mark the still-pending images of `image_ids` as classifying and return them, each with its case's
    laboratory scale (`laboratory_um_per_pixel`, None when unknown) read in the same query.

    Classified, failed and no-cell images are left alone, so a redelivered task does no work twice.
    On PostgreSQL and SQLite this is one statement (UPDATE ... RETURNING), elsewhere a locking read and an update.
    """
    connection = connections[router.db_for_write(CellImage)]
    if supports_returning(connection):
        return _claim_returning(connection, [int(pk) for pk in image_ids])
    with transaction.atomic():
        images = list(
            CellImage.objects.select_for_update(of=("self",))
            .filter(pk__in=list(image_ids), status__in=PENDING_STATUSES)
            .annotate(laboratory_um_per_pixel=F("case__laboratory__um_per_pixel"))
            .order_by("pk")
        )
        now = timezone.now()
        # One UPDATE for the batch (bulk_update's CASE per row costs more CPU than the classification).
        CellImage.objects.filter(pk__in=[image.pk for image in images]).update(
            status=CellImage.Status.CLASSIFYING, attempts=F("attempts") + 1, status_changed_at=now
        )
        for image in images:
            image.status = CellImage.Status.CLASSIFYING
            image.attempts += 1
            image.status_changed_at = now
    return images


def _claim_returning(connection, image_ids: list[int]) -> list[CellImage]:
    if not image_ids:
        return []
    now = CellImage._meta.get_field("status_changed_at").get_db_prep_save(timezone.now(), connection)
    parameters = [CellImage.Status.CLASSIFYING, now, *image_ids, *PENDING_STATUSES]
    sql = cached_statement(connection, "claim", len(image_ids), partial(_claim_sql, connection, len(image_ids)))
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        rows = cursor.fetchall()
    images = instances_from_rows(CellImage, connection, rows)
    for image, row in zip(images, rows, strict=True):
        image.laboratory_um_per_pixel = row[-1]
    images.sort(key=lambda image: image.pk)
    return images


def _claim_sql(connection, count: int) -> str:
    quote = connection.ops.quote_name
    image, case, laboratory = CellImage._meta, Case._meta, Case._meta.get_field("laboratory").related_model._meta

    def column(meta, name: str) -> str:
        return quote(meta.get_field(name).column)

    table = quote(image.db_table)
    returned, marks = qualified_columns(connection, CellImage), placeholders(count)
    # Table and column names come from the models' metadata, quoted; every value is a parameter.
    return (
        f"UPDATE {table} SET {column(image, 'status')} = %s, {column(image, 'attempts')} = "  # noqa: S608
        f"{column(image, 'attempts')} + 1, {column(image, 'status_changed_at')} = %s"
        f" WHERE {table}.{quote(image.pk.column)} IN ({marks}) AND {column(image, 'status')} IN (%s, %s)"
        f" RETURNING {returned}, (SELECT l.{column(laboratory, 'um_per_pixel')} FROM {quote(case.db_table)} c"
        f" JOIN {quote(laboratory.db_table)} l ON l.{quote(laboratory.pk.column)} = c.{column(case, 'laboratory')}"
        f" WHERE c.{quote(case.pk.column)} = {table}.{column(image, 'case')}) AS laboratory_um_per_pixel"
    )


def site_message(message: str, **values) -> str:
    """A status message stored on an image is read later by everyone: it is written in the site's language, not in
    the language of whoever's request happened to run the classification. `message` is marked with gettext_noop."""
    with translation.override(settings.LANGUAGE_CODE):
        return gettext(message) % values


def mark_failed(*, image_ids: Sequence[int], message: str) -> None:
    CellImage.objects.filter(pk__in=list(image_ids)).exclude(
        status__in=[CellImage.Status.CLASSIFIED, CellImage.Status.NO_CELL]
    ).update(status=CellImage.Status.FAILED, status_message=message[:2000], status_changed_at=timezone.now())


def mark_waiting(*, image_ids: Sequence[int], message: str) -> None:
    """Back to queued with the reason (e.g. no usable model): kept, and picked up again later."""
    CellImage.objects.filter(pk__in=list(image_ids), status__in=PENDING_STATUSES).update(
        status=CellImage.Status.QUEUED, status_message=message[:2000], status_changed_at=timezone.now()
    )


def refresh_case_statuses(*, case_ids: Iterable[int]) -> None:
    """draft (no images) -> classifying (any queued/classifying) -> awaiting review; signed stays signed.

    On PostgreSQL and SQLite one UPDATE ... RETURNING writes the cases whose status changes (post_save is
    sent for each, as Case.save(update_fields=["status", "updated_at"]) would); elsewhere each case is locked,
    read and saved."""
    ids = sorted({int(pk) for pk in case_ids})
    connection = connections[router.db_for_write(Case)]
    if ids and supports_returning(connection):
        _refresh_returning(connection, ids)
        return
    images = CellImage.objects.filter(case_id=OuterRef("pk"))
    for case_id in ids:
        with transaction.atomic():
            # The case locked and both questions about its images answered in one query.
            case = (
                Case.objects.select_for_update()
                .annotate(has_images=Exists(images), has_pending=Exists(images.filter(status__in=PENDING_STATUSES)))
                .get(pk=case_id)
            )
            if case.status == Case.Status.SIGNED:
                continue
            if not case.has_images:
                status = Case.Status.DRAFT
            elif case.has_pending:
                status = Case.Status.CLASSIFYING
            else:
                status = Case.Status.AWAITING_REVIEW
            if case.status != status:
                case.status = status
                case.save(update_fields=["status", "updated_at"])


_CASE_SAVED_FIELDS = frozenset({"status", "updated_at"})


def _refresh_returning(connection, case_ids: list[int]) -> None:
    statuses = [*PENDING_STATUSES, Case.Status.CLASSIFYING, Case.Status.AWAITING_REVIEW, Case.Status.DRAFT]
    now = Case._meta.get_field("updated_at").get_db_prep_save(timezone.now(), connection)
    parameters = [*statuses, now, *case_ids, Case.Status.SIGNED, *statuses]
    sql = cached_statement(connection, "refresh", len(case_ids), partial(_refresh_sql, connection, len(case_ids)))
    # Inside classify's store transaction no savepoint of its own (two more round trips): a failing receiver
    # rolls the cells back with the status, and the images stay claimed for requeue_stale_images.
    with transaction.atomic(using=connection.alias, savepoint=False):
        with connection.cursor() as cursor:
            cursor.execute(sql, parameters)
            rows = cursor.fetchall()
        # The receivers (notifications) run in the same transaction as the write, as they do inside save().
        for changed in sorted(instances_from_rows(Case, connection, rows), key=lambda case: case.pk):
            post_save.send(
                sender=Case,
                instance=changed,
                created=False,
                update_fields=_CASE_SAVED_FIELDS,
                raw=False,
                using=connection.alias,
            )


def _in_transaction(model) -> bool:
    return connections[router.db_for_write(model)].in_atomic_block


def _refresh_sql(connection, count: int) -> str:
    quote = connection.ops.quote_name
    case, image = Case._meta, CellImage._meta
    table, images = quote(case.db_table), quote(image.db_table)
    status, image_case = quote(case.get_field("status").column), quote(image.get_field("case").column)
    this_case = f"i.{image_case} = {table}.{quote(case.pk.column)}"
    # A case with a pending image is classifying, else with any image awaits review, else is a draft.
    new_status = (
        f"CASE WHEN EXISTS (SELECT 1 FROM {images} i WHERE {this_case}"  # noqa: S608
        f" AND i.{quote(image.get_field('status').column)} IN (%s, %s)) THEN %s"
        f" WHEN EXISTS (SELECT 1 FROM {images} i WHERE {this_case}) THEN %s ELSE %s END"
    )
    returned, marks = qualified_columns(connection, Case), placeholders(count)
    # Table and column names come from the models' metadata, quoted; every value is a parameter.
    return (
        f"UPDATE {table} SET {status} = {new_status}, {quote(case.get_field('updated_at').column)} = %s"  # noqa: S608
        f" WHERE {table}.{quote(case.pk.column)} IN ({marks}) AND {status} <> %s AND {status} <> {new_status}"
        f" RETURNING {returned}"
    )


def requeue_stale(*, image_ids: Sequence[int]) -> None:
    """Put stale images back to queued (what the user sees); the caller sends them again."""
    CellImage.objects.filter(pk__in=list(image_ids), status__in=PENDING_STATUSES).update(
        status=CellImage.Status.QUEUED, status_changed_at=timezone.now()
    )


def case_ids_of(image_ids: Sequence[int]) -> set[int]:
    return set(CellImage.objects.filter(pk__in=list(image_ids)).values_list("case_id", flat=True))


# The workflow.


@dataclass
class _Analysed:
    image: CellImage
    picture: Image.Image
    analysis: object  # inference.analysis.ImageAnalysis


def classify(*, image_ids: Sequence[int]) -> dict[str, int]:
    """Find and classify the cells of the pending images among `image_ids` with the active model; store them.

    Returns counts of uploads: classified (at least one cell), no_cell, failed, waiting. Raises ModelUnavailable
    (before touching any image) and database errors for the task to retry.
    """
    predictor, shadow = get_serving_predictors()
    images = claim_for_classification(image_ids=image_ids)
    counts = {"classified": 0, "no_cell": 0, "failed": 0, "waiting": 0, "cells": 0}
    if not images:
        return counts
    scales = {image.case_id: image.laboratory_um_per_pixel for image in images}
    case_ids = {image.case_id for image in images}
    refreshed = False
    for start in range(0, len(images), predictor.max_batch):
        batch = images[start : start + predictor.max_batch]
        analysed, failed = _analyse_batch(predictor, batch, scales)
        counts["failed"] += len(failed)
        with case_escalation_lock(analysed):
            escalation = case_escalation(analysed)
            created = (
                store_analyses(analysed=analysed, model_version=predictor.version, escalated_cases=escalation.cases)
                if analysed
                else {}
            )
            # Announced (after the commit) before the earlier cells the batch escalates.
            _announce(batch, created, escalated_cases=escalation.cases)
            if escalation.newly or escalation.earlier:
                escalate_earlier_predictions(escalation)
            if len(images) <= predictor.max_batch and shadow is None and _in_transaction(Case):
                # The task's only batch: its cases' statuses are written in the transaction that stores the cells
                # (one BEGIN/COMMIT instead of two), so the cells and the status they give the case commit together.
                refresh_case_statuses(case_ids=case_ids)
                refreshed = True
        for item in analysed:
            cells = created.get(item.image.pk)
            if cells is None:
                continue  # another delivery of the task stored it first
            if item.analysis.cells:
                counts["classified"] += 1
                counts["cells"] += len(item.analysis.cells)
            else:
                counts["no_cell"] += 1
        if shadow is not None and created:
            # After the shown predictions are stored and announced: the shadow never delays or breaks them.
            shadow_classify(shadow=shadow, analysed=analysed, created=created, served_version=predictor.version)
    if not refreshed:
        refresh_case_statuses(case_ids=case_ids)
    logger.info("classified images %s with %s: %s", [i.pk for i in images], predictor.version.name, counts)
    return counts


def shadow_classify(*, shadow, analysed: Sequence[_Analysed], created: dict[int, list[int]], served_version) -> int:
    """Classify the cells just stored again with the version in shadow mode and keep what it says apart
    (ShadowPrediction: never shown). The cells found by the active path are reused, so both versions judge
    the same crops. A failure is logged and skipped; returns how many shadow predictions were stored."""
    cell_ids: list[int] = []
    crops: list[Image.Image] = []
    for item in analysed:
        ids = created.get(item.image.pk)
        found = item.analysis.cells
        if not ids or not found:
            continue
        if item.analysis.layout != "field":
            main = found[item.analysis.main_cell if item.analysis.main_cell is not None else 0]
            pairs = [(ids[0], main.crop)]
        elif len(ids) == len(found):
            pairs = list(zip(ids, (cell.crop for cell in found), strict=True))
        else:
            continue
        for cell_id, crop in pairs:
            cell_ids.append(cell_id)
            crops.append(crop)
    if not cell_ids:
        return 0
    try:
        results = shadow.predict(crops)
        rows = [
            ShadowPrediction(
                image_id=cell_id,
                model_version=shadow.version,
                served_version=served_version,
                label=result.label,
                confidence=float(result.confidence),
                probabilities={name: float(value) for name, value in result.probabilities.items()},
                flagged=bool(result.flagged),
                flag_reasons=list(result.flag_reasons or ()),
                ood_score=None if result.ood_score is None else float(result.ood_score),
                latency_ms=float(result.latency_ms),
            )
            for cell_id, result in zip(cell_ids, results, strict=True)
        ]
        with transaction.atomic():
            ShadowPrediction.objects.bulk_create(rows, ignore_conflicts=True)
    except Exception:  # noqa: BLE001 - the shadow must not break the active path
        logger.exception("shadow model version %s failed on cells %s; skipped", shadow.version.name, cell_ids)
        return 0
    return len(rows)


def _analyse_batch(
    predictor, images: Sequence[CellImage], scales: dict[int, float | None]
) -> tuple[list[_Analysed], list[int]]:
    """Decode each image once and analyse them, grouped by scale; failures are recorded on their images."""
    decoded: list[tuple[CellImage, Image.Image]] = []
    failed: list[int] = []
    for image in images:
        try:
            decoded.append((image, selectors.open_cell_image(image=image)))
        except (storage.StoredImageError, OSError, ValueError) as exc:
            logger.error("image %s cannot be read for classification: %s", image.pk, exc)
            mark_failed(
                image_ids=[image.pk],
                message=site_message(gettext_noop("The stored image cannot be read: %(error)s"), error=exc),
            )
            failed.append(image.pk)
    by_scale: dict[float | None, list[tuple[CellImage, Image.Image]]] = {}
    for image, picture in decoded:
        by_scale.setdefault(scales.get(image.case_id), []).append((image, picture))
    analysed: list[_Analysed] = []
    for scale, group in by_scale.items():
        try:
            results = analyse_images([picture for _, picture in group], um_per_pixel=scale, predictor=predictor)
        except (ModelUnavailable, *TRANSIENT_DATABASE_ERRORS):
            raise
        except Exception:
            logger.exception("analysis failed for images %s; trying them one by one", [i.pk for i, _ in group])
            one_by_one, failed_one_by_one = _analyse_one_by_one(predictor, group, scale)
            analysed.extend(one_by_one)
            failed.extend(failed_one_by_one)
            continue
        analysed.extend(
            _Analysed(image=image, picture=picture, analysis=result)
            for (image, picture), result in zip(group, results, strict=True)
        )
    return analysed, failed


def _analyse_one_by_one(predictor, group, scale) -> tuple[list[_Analysed], list[int]]:
    analysed, failed = [], []
    for image, picture in group:
        try:
            (result,) = analyse_images([picture], um_per_pixel=scale, predictor=predictor)
        except (ModelUnavailable, *TRANSIENT_DATABASE_ERRORS):
            raise
        except Exception as exc:
            logger.exception("classification failed for image %s", image.pk)
            mark_failed(
                image_ids=[image.pk], message=site_message(gettext_noop("Classification failed: %(error)s"), error=exc)
            )
            failed.append(image.pk)
            continue
        analysed.append(_Analysed(image=image, picture=picture, analysis=result))
    return analysed, failed


@dataclass
class _FieldFiles:
    """Encrypted files written for a field before its transaction (removed again if it fails)."""

    preview_key: str = ""
    cells: list[tuple[str, str, bytes]] = None  # (crop key, thumbnail key, crop PNG bytes) per found cell

    def keys(self) -> list[str]:
        keys = [self.preview_key] if self.preview_key else []
        for crop_key, thumb_key, _ in self.cells or []:
            keys.extend([crop_key, thumb_key])
        return keys


def _write_field_files(item: _Analysed) -> _FieldFiles:
    files = _FieldFiles(cells=[])
    try:
        files.preview_key = storage.save(thumbnail_jpeg(item.picture, size=PREVIEW_SIZE))
        for found in item.analysis.cells:
            crop = found.crop if found.crop.mode == "RGB" else found.crop.convert("RGB")
            data = png_bytes(crop)
            files.cells.append((storage.save(data), storage.save(thumbnail_jpeg(crop)), data))
    except BaseException:
        _delete(files.keys())
        raise
    return files


def _delete(keys: Iterable[str]) -> None:
    for key in keys:
        try:
            storage.delete(key)
        except Exception:  # noqa: BLE001 - cleaning up after a failure must not hide it
            logger.warning("could not remove stored file %s", key)


def _prediction(*, image_id: int, model_version, result, escalated: bool = False) -> Prediction:
    """The prediction to store; `escalated`: its case is imaged unlike the training data (flagged, keeps its label)."""
    reasons = list(getattr(result, "flag_reasons", ()) or ())
    return Prediction(
        image_id=image_id,
        model_version=model_version,
        label=result.label,
        confidence=float(result.confidence),
        probabilities={name: float(value) for name, value in result.probabilities.items()},
        flagged=bool(result.flagged) or escalated,
        flag_reasons=case_review.escalated_reasons(reasons) if escalated else reasons,
        ood_score=None if result.ood_score is None else float(result.ood_score),
        latency_ms=float(result.latency_ms),
    )


def _write_crops(connection, uploads: Sequence[CellImage], predictions: Sequence[Prediction]) -> set[int]:
    """PostgreSQL: write `uploads` (their _UPLOAD_FIELDS) where still classifying and insert the `predictions`
    of the uploads written (a prediction already stored for the same image and version is kept), in one
    statement; returns the primary keys of the uploads written."""
    if not uploads:
        return set()
    image_fields = [CellImage._meta.pk, *(CellImage._meta.get_field(name) for name in _UPLOAD_FIELDS)]
    prediction_fields = [field for field in Prediction._meta.concrete_fields if not field.primary_key]

    def build() -> str:
        quote = connection.ops.quote_name

        def row(fields) -> str:
            return "(" + ", ".join(f"CAST(%s AS {field.db_type(connection)})" for field in fields) + ")"

        images, image_pk = quote(CellImage._meta.db_table), quote(CellImage._meta.pk.column)
        assignments = ", ".join(
            f"{quote(field.column)} = v.column{number}" for number, field in enumerate(image_fields[1:], start=2)
        )
        status = quote(CellImage._meta.get_field("status").column)
        image_rows = ", ".join([row(image_fields)] * len(uploads))
        # Table and column names come from the models' metadata, quoted; every value is a parameter.
        parts = [
            f"WITH written AS (UPDATE {images} SET {assignments} FROM (VALUES {image_rows}) AS v"  # noqa: S608
            f" WHERE {images}.{image_pk} = v.column1 AND {images}.{status} = %s RETURNING {images}.{image_pk})"
        ]
        if predictions:
            image_column = 1 + [field.name for field in prediction_fields].index("image")
            prediction_rows = ", ".join([row(prediction_fields)] * len(predictions))
            parts.append(
                f", inserted AS (INSERT INTO {quote(Prediction._meta.db_table)}"  # noqa: S608
                f" ({', '.join(quote(field.column) for field in prediction_fields)})"
                f" SELECT * FROM (VALUES {prediction_rows}) AS p"
                f" WHERE p.column{image_column} IN (SELECT {image_pk} FROM written) ON CONFLICT DO NOTHING)"
            )
        parts.append(f" SELECT {image_pk} FROM written")  # noqa: S608
        return "".join(parts)

    parameters = [
        field.get_db_prep_save(getattr(image, field.attname), connection) for image in uploads for field in image_fields
    ]
    parameters.append(CellImage.Status.CLASSIFYING)
    parameters += [
        field.get_db_prep_save(field.pre_save(prediction, True), connection)
        for prediction in predictions
        for field in prediction_fields
    ]
    sql = cached_statement(connection, f"crops {len(predictions)}", len(uploads), build)
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        return {pk for (pk,) in cursor.fetchall()}


def _set_box(image: CellImage, box) -> None:
    image.box_x0, image.box_y0, image.box_x1, image.box_y1 = (int(value) for value in box)


def store_analyses(
    *, analysed: Sequence[_Analysed], model_version, escalated_cases: Iterable[int] = ()
) -> dict[int, list[int]]:
    """Store a batch's analyses in one transaction. Returns, per upload stored, the ids of the cells it
    became (itself for a crop, its children for a field, none when no cell was found); uploads another
    delivery of the task already stored are left out. The cells of `escalated_cases` are stored flagged
    "unvalidated_case" (see case_escalation)."""
    field_files = {
        item.image.pk: _write_field_files(item)
        for item in analysed
        if item.analysis.layout == "field" and item.analysis.cells
    }
    try:
        return _store(analysed, model_version, field_files, frozenset(escalated_cases))
    except BaseException:
        for files in field_files.values():
            _delete(files.keys())
        raise


def _store(
    analysed, model_version, field_files: dict[int, _FieldFiles], escalated_cases: frozenset[int]
) -> dict[int, list[int]]:
    now = timezone.now()
    created: dict[int, list[int]] = {}
    connection = connections[router.db_for_write(CellImage)]
    # Crops on PostgreSQL: one statement writes the uploads and their predictions, atomic on its own.
    one_statement = not field_files and connection.vendor == "postgresql"
    with contextlib.nullcontext() if one_statement else transaction.atomic(using=connection.alias):
        if field_files:
            live = set(
                CellImage.objects.select_for_update()
                .filter(pk__in=[item.image.pk for item in analysed], status=CellImage.Status.CLASSIFYING)
                .values_list("pk", flat=True)
            )
        else:
            # Crops only: the UPDATE below writes the uploads still classifying and says which they were.
            live = {item.image.pk for item in analysed}
        # A field whose cells are already stored (a task delivered again after its commit) keeps them.
        kept: dict[int, list[int]] = {}
        fields = [pk for pk in field_files if pk in live]
        if fields:  # a batch of crops has no cells to look for
            for parent_id, cell_id in CellImage.objects.filter(parent_id__in=fields).values_list("parent_id", "pk"):
                kept.setdefault(parent_id, []).append(cell_id)
        uploads: list[CellImage] = []
        predictions: list[Prediction] = []
        children: list[tuple[CellImage, object]] = []
        for item in analysed:
            image, analysis = item.image, item.analysis
            if image.pk not in live:
                logger.info("image %s was stored by another delivery of its task", image.pk)
                continue
            image.um_per_pixel = analysis.um_per_pixel
            image.scale_source = analysis.scale_source or ""
            image.status_message = ""
            image.status_changed_at = now
            uploads.append(image)
            if not analysis.cells:
                image.kind = CellImage.Kind.NO_CELL
                image.status = CellImage.Status.NO_CELL
                created[image.pk] = []
                continue
            image.status = CellImage.Status.CLASSIFIED
            if analysis.layout != "field":
                main = analysis.cells[analysis.main_cell if analysis.main_cell is not None else 0]
                image.kind = CellImage.Kind.CELL
                _set_box(image, main.box)
                image.located_as = main.kind
                predictions.append(
                    _prediction(
                        image_id=image.pk,
                        model_version=model_version,
                        result=main.prediction,
                        escalated=image.case_id in escalated_cases,
                    )
                )
                created[image.pk] = [image.pk]
                continue
            image.kind = CellImage.Kind.FIELD
            if image.pk in kept:
                created[image.pk] = sorted(kept[image.pk])
                continue
            files = field_files[image.pk]
            image.preview_key = files.preview_key
            for number, (found, (crop_key, thumb_key, data)) in enumerate(
                zip(analysis.cells, files.cells, strict=True), start=1
            ):
                cell = CellImage(
                    case_id=image.case_id,
                    parent_id=image.pk,
                    kind=CellImage.Kind.CELL,
                    storage_key=crop_key,
                    thumbnail_key=thumb_key,
                    sha256=hashlib.sha256(data).hexdigest(),
                    size_bytes=len(data),
                    width=found.crop.width,
                    height=found.crop.height,
                    content_type="image/png",
                    original_name=f"{image.original_name} · cell {number}"[:255],
                    uploaded_by_id=image.uploaded_by_id,
                    status=CellImage.Status.CLASSIFIED,
                    located_as=found.kind,
                    um_per_pixel=analysis.um_per_pixel,
                    scale_source=analysis.scale_source or "",
                )
                _set_box(cell, found.box)
                children.append((cell, found.prediction))
        if field_files:
            update_rows(CellImage, uploads, _UPLOAD_FIELDS)
        else:
            if one_statement:
                written = _write_crops(connection, uploads, predictions)
                predictions = []  # inserted by that statement, for the uploads it wrote
            else:
                written = update_rows(
                    CellImage, uploads, _UPLOAD_FIELDS, only_if={"status": CellImage.Status.CLASSIFYING}
                )
            for pk in live - written:
                logger.info("image %s was stored by another delivery of its task", pk)
                created.pop(pk, None)
            live = written
            predictions = [prediction for prediction in predictions if prediction.image_id in live]
        if children:
            CellImage.objects.bulk_create([cell for cell, _ in children])
            for cell, result in children:
                created.setdefault(cell.parent_id, []).append(cell.pk)
                predictions.append(
                    _prediction(
                        image_id=cell.pk,
                        model_version=model_version,
                        result=result,
                        escalated=cell.case_id in escalated_cases,
                    )
                )
        # A crop classified before by this model version (a redelivered task) keeps its first prediction.
        insert_rows(Prediction, predictions, ignore_conflicts=True)
    unused = [files for pk, files in field_files.items() if pk not in live or pk in kept]
    for files in unused:
        _delete(files.keys())
    return created


def _announce(batch: Sequence[CellImage], created: dict[int, list[int]], escalated_cases: Iterable[int] = ()) -> None:
    """Tell the pages watching these cases which images changed (uploads and new cells), after the commit;
    for the `escalated_cases` (case_escalation), that the case is imaged unlike the training data."""
    by_case: dict[int, set[int]] = {}
    for image in batch:
        ids = by_case.setdefault(image.case_id, set())
        ids.add(image.pk)
        ids.update(created.get(image.pk, ()))
    escalated = frozenset(escalated_cases)
    for case_id, ids in by_case.items():
        transaction.on_commit(
            partial(
                events.publish_image_updates,
                case_id=case_id,
                image_ids=sorted(ids),
                model_warning=case_id in escalated,
            ),
            robust=True,
        )


# Case-level escalation (inference.case_review).


@dataclass
class CaseEscalation:
    """Which cases of a batch are imaged unlike the training data, counting the batch's own cells (their
    predictions are stored flagged); those of them escalated for the first time (no earlier prediction
    carries the escalation's reason); and, per such case, its earlier predictions still without that
    reason: (prediction id, image id, flag reasons)."""

    cases: set[int]
    newly: set[int]
    earlier: dict[int, list[tuple[int, int, list]]]


def _new_cells_reasons(analysed: Sequence[_Analysed]) -> dict[int, list[list[str]]]:
    """The flag reasons of the cells a batch is about to store, per case (a crop stores its main cell only)."""
    by_case: dict[int, list[list[str]]] = {}
    for item in analysed:
        analysis = item.analysis
        if not analysis.cells:
            continue
        if analysis.layout == "field":
            stored = analysis.cells
        else:
            stored = [analysis.cells[analysis.main_cell if analysis.main_cell is not None else 0]]
        by_case.setdefault(item.image.case_id, []).extend(
            list(getattr(cell.prediction, "flag_reasons", ()) or ()) for cell in stored
        )
    return by_case


def case_escalation(analysed: Sequence[_Analysed]) -> CaseEscalation:
    """Apply the case rule to each case of a batch: its classified cells counted by the database (one row per
    case, selectors.case_cell_counts) and the cells the batch is about to store. The earlier predictions are
    read only for a case escalated with some of them not yet flagged: the batch that turns its warning on.
    Run it and store the batch inside case_escalation_lock, or two tasks of one case storing at the same
    moment may each miss the other's cells."""
    new_reasons = _new_cells_reasons(analysed)
    if not new_reasons:
        return CaseEscalation(cases=set(), newly=set(), earlier={})
    # The batch's own uploads (and a redelivered field's cells) are counted from the batch.
    batch = sorted({item.image.pk for item in analysed})
    counts = selectors.case_cell_counts(sorted(new_reasons), excluding=batch)
    escalation = CaseEscalation(cases=set(), newly=set(), earlier={})
    to_flag: list[int] = []
    for case_id, reasons in new_reasons.items():
        earlier = counts.get(case_id, selectors.CaseCellCounts())
        unlike = earlier.unlike_training + sum(1 for cell in reasons if case_review.is_unlike_training(cell))
        if not case_review.case_is_unlike_training(
            classified_cells=earlier.classified + len(reasons), unlike_training=unlike
        ):
            continue
        escalation.cases.add(case_id)
        if not earlier.escalated:
            escalation.newly.add(case_id)
        if earlier.escalated < earlier.classified:
            to_flag.append(case_id)
    if to_flag:
        newest = selectors.newest_cell_predictions(sorted(to_flag), excluding=batch)
        for image_id, (case_id, prediction_id, reasons) in newest.items():
            if case_review.UNVALIDATED_CASE_REASON not in reasons:
                escalation.earlier.setdefault(case_id, []).append((prediction_id, image_id, reasons))
    return escalation


def case_escalation_lock(analysed: Sequence[_Analysed]):
    """The transaction in which a batch's cases are decided, stored and escalated, one task per case at a time:
    without it two tasks of one case storing at the same moment each count only the other's committed cells,
    and the cells of the one that decided first are left unescalated. PostgreSQL takes an advisory lock per case
    (transaction-scoped, in id order); SQLite its write lock when the transaction begins (the settings'
    IMMEDIATE mode). A batch without a cell to store needs neither."""
    case_ids = sorted(_new_cells_reasons(analysed))
    if not case_ids:
        return contextlib.nullcontext()
    connection = connections[router.db_for_write(Case)]
    return _locked_cases(connection, case_ids)


# The advisory locks' first key: "hv" + "ce" (HematoVision, case escalation); the second is the case id.
_ESCALATION_LOCK_CLASS = 0x68766365


@contextlib.contextmanager
def _locked_cases(connection, case_ids: list[int]):
    with transaction.atomic(using=connection.alias):
        if connection.vendor == "postgresql":
            # An advisory lock per case rather than its row: no row written (a row lock writes the tuple), and
            # uploads, reviews and sign-off, which lock the case row, neither wait for it nor hold it up. Its
            # second key is 32 bits: ids 2**32 apart share a lock, which only makes their tasks take turns.
            keys = sorted({(case_id + 2**31) % 2**32 - 2**31 for case_id in case_ids})

            def build() -> str:
                return "SELECT " + ", ".join(["pg_advisory_xact_lock(%s, %s)"] * len(keys))

            with connection.cursor() as cursor:
                cursor.execute(
                    cached_statement(connection, "lock cases", len(keys), build),
                    [value for key in keys for value in (_ESCALATION_LOCK_CLASS, key)],
                )
        elif connection.vendor != "sqlite":
            list(Case.objects.select_for_update().filter(pk__in=case_ids).order_by("pk").values_list("pk", flat=True))
        yield


def escalate_earlier_predictions(escalation: CaseEscalation) -> None:
    """Flag the earlier predictions of the cases a batch found imaged unlike the training data and record one
    audit event per case escalated for the first time, in one transaction; the pages watching those cases are
    told after the commit. Runs once per case in the usual course (the batch that turns its warning on)."""
    earlier = escalation.earlier
    predictions = [
        Prediction(pk=prediction_id, flagged=True, flag_reasons=case_review.escalated_reasons(reasons))
        for rows in earlier.values()
        for prediction_id, _, reasons in rows
    ]
    # Inside case_escalation_lock's transaction: no savepoint of its own.
    with transaction.atomic(savepoint=False):
        if predictions:
            Prediction.objects.bulk_update(predictions, ["flagged", "flag_reasons"])
        record_many(
            action=AuditEvent.Action.CASE_ESCALATED,
            events=[
                (
                    Case(pk=case_id),
                    {
                        "reason": case_review.UNVALIDATED_CASE_REASON,
                        "earlier_cells_flagged": len(earlier.get(case_id, ())),
                    },
                )
                for case_id in sorted(escalation.newly | set(earlier))
            ],
        )
        for case_id, rows in earlier.items():
            transaction.on_commit(
                partial(
                    events.publish_image_updates,
                    case_id=case_id,
                    image_ids=sorted(row[1] for row in rows),
                    model_warning=True,
                ),
                robust=True,
            )
