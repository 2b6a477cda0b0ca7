"""Writes for cases and cell images: creating cases, uploads, the classification workflow's state changes,
and writing confirmed cells out as training data."""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from django.db import IntegrityError, connections, router, transaction
from django.db.models.signals import post_save
from django.utils import timezone
from django.utils.translation import gettext, ngettext
from PIL import Image

from audit.models import AuditEvent
from audit.services import record, record_many
from hematovision.statements import cached_statement, placeholders
from inference.preprocessing import to_rgb

from . import classification, selectors, storage
from .models import Case, CellImage, Laboratory
from .review_labels import is_reviewer_label
from .rows import create_rows
from .tasks import enqueue_classification
from .validation import ImageRejected, ValidatedImage, validate_image

logger = logging.getLogger(__name__)

PENDING_STATUSES = selectors.PENDING_STATUSES
# The classification workflow's state changes live in cases.classification (the task's side).
claim_for_classification = classification.claim_for_classification
mark_failed = classification.mark_failed
mark_waiting = classification.mark_waiting
refresh_case_statuses = classification.refresh_case_statuses


class CaseError(Exception):
    """A request about a case that cannot be carried out; str(exc) is shown to the user."""


class UploadRefused(CaseError):
    pass


class RetryRefused(CaseError):
    pass


@dataclass(frozen=True)
class RejectedFile:
    name: str
    message: str


def clean_file_name(name: str | None) -> str:
    """The original name as metadata: its last path component, printable, at most 255 characters."""
    base = os.path.basename((name or "").replace("\\", "/"))
    printable = "".join(char for char in base if char.isprintable()).strip()
    return (printable or "unnamed file")[:255]


def create_case(
    *, accession_id: str, created_by, patient_reference: str = "", laboratory: Laboratory | None = None, request=None
) -> Case:
    accession_id = accession_id.strip()
    if not accession_id:
        raise CaseError(gettext("An accession id is required."))
    try:
        with transaction.atomic():
            case = Case.objects.create(
                accession_id=accession_id,
                patient_reference=patient_reference.strip(),
                created_by=created_by,
                laboratory=laboratory,
            )
            details = {"accession_id": accession_id}
            if laboratory is not None:
                details["laboratory"] = laboratory.pk
            record(
                action=AuditEvent.Action.CASE_CREATED,
                actor=created_by,
                obj=case,
                details=details,
                request=request,
            )
    except IntegrityError as exc:
        raise CaseError(
            gettext("A case with accession id %(accession)s already exists.") % {"accession": accession_id}
        ) from exc
    return case


# Laboratories.

LABORATORY_FIELDS = ("name", "instrument", "um_per_pixel")
# Audit actions of laboratory changes.
LABORATORY_CREATED = AuditEvent.Action.LABORATORY_CREATED
LABORATORY_CHANGED = AuditEvent.Action.LABORATORY_CHANGED


def create_laboratory(*, name: str, instrument: str = "", um_per_pixel: float | None = None, actor, request=None):
    """Add a laboratory (names are unique, compared without regard to case)."""
    name = name.strip()
    if not name:
        raise CaseError(gettext("A laboratory needs a name."))
    with transaction.atomic():
        if Laboratory.objects.filter(name__iexact=name).exists():
            raise CaseError(gettext("A laboratory named %(name)s already exists.") % {"name": name})
        laboratory = Laboratory.objects.create(name=name, instrument=instrument.strip(), um_per_pixel=um_per_pixel)
        record(
            action=LABORATORY_CREATED,
            actor=actor,
            obj=laboratory,
            details={field: getattr(laboratory, field) for field in LABORATORY_FIELDS},
            request=request,
        )
    return laboratory


def update_laboratory(
    *, laboratory: Laboratory, name: str, instrument: str = "", um_per_pixel: float | None = None, actor, request=None
) -> Laboratory:
    """Change a laboratory; the audit trail keeps each changed field's old and new value."""
    name = name.strip()
    if not name:
        raise CaseError(gettext("A laboratory needs a name."))
    with transaction.atomic():
        locked = Laboratory.objects.select_for_update().get(pk=laboratory.pk)
        if Laboratory.objects.filter(name__iexact=name).exclude(pk=locked.pk).exists():
            raise CaseError(gettext("A laboratory named %(name)s already exists.") % {"name": name})
        new_values = {"name": name, "instrument": instrument.strip(), "um_per_pixel": um_per_pixel}
        changes = {
            field: {"from": getattr(locked, field), "to": value}
            for field, value in new_values.items()
            if getattr(locked, field) != value
        }
        if changes:
            for field, value in new_values.items():
                setattr(locked, field, value)
            locked.save()
            record(
                action=LABORATORY_CHANGED,
                actor=actor,
                obj=locked,
                details={"changes": changes},
                request=request,
            )
    return locked


def add_images(*, case: Case, files: Iterable, uploaded_by, request=None) -> tuple[list[CellImage], list[RejectedFile]]:
    """Validate, store encrypted and register each file; schedule classification of the accepted ones.

    Every file is judged on its own: rejected files get a message each and the good ones are kept.
    """
    if case.status == Case.Status.SIGNED:
        raise UploadRefused(
            gettext("Case %(accession)s is signed; no images can be added to it.") % {"accession": case.accession_id}
        )
    # Each file decoded once: validated, its thumbnail made from the decoded picture (no page decodes the full
    # image for it again), the picture dropped before the next file is decoded.
    validated: list[tuple[int, str, ValidatedImage, bytes]] = []
    refusals: list[tuple[int, RejectedFile]] = []  # (position of the file, why)
    for position, uploaded in enumerate(files):
        name = clean_file_name(getattr(uploaded, "name", ""))
        try:
            image = validate_image(uploaded)
        except ImageRejected as exc:
            refusals.append((position, RejectedFile(name=name, message=f"{name} {exc}")))
            continue
        thumbnail = classification.thumbnail_jpeg(image.picture)
        validated.append((position, name, dataclasses.replace(image, picture=None), thumbnail))
    # Only this upload's hashes are looked up: the answer does not grow with the case.
    known_hashes = _known_hashes(case, {image.sha256 for _, _, image, _ in validated}) if validated else {}
    stored: list[tuple[str, str, str, ValidatedImage]] = []
    for position, name, image, thumbnail in validated:
        if image.sha256 in known_hashes:
            refusals.append(
                (
                    position,
                    RejectedFile(
                        name=name,
                        message=gettext("%(name)s is identical to %(other)s, already in this case.")
                        % {"name": name, "other": known_hashes[image.sha256]},
                    ),
                )
            )
            continue
        known_hashes[image.sha256] = name
        try:
            storage_key = storage.save(image.data)
            stored.append((name, storage_key, storage.save(thumbnail), image))
        except BaseException:
            _delete_stored(stored)
            raise
    # Rejections in the order the files came.
    rejected = [item for _, item in sorted(refusals, key=lambda pair: pair[0])]

    accepted: list[CellImage] = []
    if stored:
        try:
            accepted = _register_images(case=case, stored=stored, uploaded_by=uploaded_by, request=request)
        except BaseException:
            _delete_stored(stored)
            raise
    if rejected:
        record_many(
            action=AuditEvent.Action.UPLOAD_REJECTED,
            actor=uploaded_by,
            events=[(case, {"file": item.name, "reason": item.message}) for item in rejected],
            request=request,
        )
    if accepted:
        logger.info("case %s: %d image(s) accepted, %d rejected", case.pk, len(accepted), len(rejected))
    return accepted, rejected


def _known_hashes(case: Case, hashes: set[str]) -> dict[str, str]:
    """{sha256: original name} of the case's uploaded images (not cells found in a field) among `hashes`, in a
    SELECT built once per process and number of hashes (the ORM compiled it on every upload: docs/benchmarks.md,
    "hweb")."""
    connection = connections[router.db_for_read(CellImage)]
    if connection.vendor not in ("postgresql", "sqlite") or len(hashes) > 64:
        return dict(
            case.images.filter(parent__isnull=True, sha256__in=hashes).order_by().values_list("sha256", "original_name")
        )

    def build() -> str:
        quote = connection.ops.quote_name
        meta = CellImage._meta

        def column(name: str) -> str:
            return quote(meta.get_field(name).column)

        return (
            f"SELECT {column('sha256')}, {column('original_name')} FROM {quote(meta.db_table)}"  # noqa: S608
            f" WHERE {column('case')} = %s AND {column('parent')} IS NULL"
            f" AND {column('sha256')} IN ({placeholders(len(hashes))})"
        )

    with connection.cursor() as cursor:
        cursor.execute(cached_statement(connection, "known hashes", len(hashes), build), [case.pk, *hashes])
        return dict(cursor.fetchall())


def _delete_stored(stored: Sequence) -> None:
    for _, storage_key, thumbnail_key, _ in stored:
        storage.delete(storage_key)
        storage.delete(thumbnail_key)


def _register_images(*, case: Case, stored: Sequence, uploaded_by, request) -> list[CellImage]:
    previous_status = case.status
    connection = connections[router.db_for_write(Case)]
    try:
        with transaction.atomic(using=connection.alias):
            # The case row locked and its status read, as values (the request already holds the case).
            case.status = _lock_case_status(connection, case.pk)
            if case.status == Case.Status.SIGNED:
                raise UploadRefused(
                    gettext("Case %(accession)s is signed; no images can be added to it.")
                    % {"accession": case.accession_id}
                )
            # The few statements of an upload built once per process (hematovision.statements): the ORM's
            # compilation of them cost more CPU than the statements (docs/benchmarks.md, "hupload2").
            accepted = create_rows(
                CellImage,
                [
                    CellImage(
                        case=case,
                        storage_key=storage_key,
                        thumbnail_key=thumbnail_key,
                        sha256=image.sha256,
                        size_bytes=image.size_bytes,
                        width=image.width,
                        height=image.height,
                        content_type=image.content_type,
                        original_name=name,
                        uploaded_by=uploaded_by,
                        status=CellImage.Status.QUEUED,
                    )
                    for name, storage_key, thumbnail_key, image in stored
                ],
            )
            # One event per image (each upload stays traceable by its image), written in one INSERT.
            record_many(
                action=AuditEvent.Action.UPLOAD,
                actor=uploaded_by,
                events=[
                    (cell, {"case": case.pk, "file": name, "sha256": image.sha256, "bytes": image.size_bytes})
                    for cell, (name, _, _, image) in zip(accepted, stored, strict=True)
                ],
                request=request,
            )
            _write_case_status(connection, case, Case.Status.CLASSIFYING)
            schedule_classification(image_ids=[cell.pk for cell in accepted])
    except BaseException:
        case.status = previous_status  # nothing was written
        raise
    return accepted


_CASE_STATUS_FIELDS = frozenset({"status", "updated_at"})


def _lock_case_status(connection, case_id: int) -> str:
    """SELECT ... FOR UPDATE of the case's status (the lock where the database has one, as select_for_update)."""
    if connection.vendor not in ("postgresql", "sqlite"):
        return Case.objects.select_for_update().filter(pk=case_id).values_list("status", flat=True).get()

    def build() -> str:
        quote = connection.ops.quote_name
        lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
        return (
            f"SELECT {quote(Case._meta.get_field('status').column)} FROM {quote(Case._meta.db_table)}"  # noqa: S608
            f" WHERE {quote(Case._meta.pk.column)} = %s{lock}"
        )

    with connection.cursor() as cursor:
        cursor.execute(cached_statement(connection, "lock case status", 1, build), [case_id])
        row = cursor.fetchone()
    if row is None:
        raise Case.DoesNotExist("Case matching query does not exist.")
    return row[0]


def _write_case_status(connection, case: Case, status: str) -> None:
    """_set_case_status for a case locked by _lock_case_status, in an UPDATE built once per process; post_save
    is sent as Case.save(update_fields=["status", "updated_at"]) sends it (no pre_save receiver exists)."""
    if connection.vendor not in ("postgresql", "sqlite"):
        _set_case_status(case, status)
        return
    if case.status == status:
        return

    def build() -> str:
        quote = connection.ops.quote_name
        meta = Case._meta
        return (
            f"UPDATE {quote(meta.db_table)} SET {quote(meta.get_field('status').column)} = %s,"  # noqa: S608
            f" {quote(meta.get_field('updated_at').column)} = %s WHERE {quote(meta.pk.column)} = %s"
        )

    updated_at = Case._meta.get_field("updated_at")
    case.status = status
    case.updated_at = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            cached_statement(connection, "write case status", 1, build),
            [status, updated_at.get_db_prep_save(case.updated_at, connection), case.pk],
        )
    post_save.send(
        sender=Case, instance=case, created=False, update_fields=_CASE_STATUS_FIELDS, raw=False, using=connection.alias
    )


def _set_case_status(case: Case, status: str) -> None:
    if case.status != status:
        case.status = status
        case.save(update_fields=["status", "updated_at"])


def schedule_classification(*, image_ids: Sequence[int]) -> None:
    """Enqueue classification once the current transaction commits (the rows exist for the worker)."""
    transaction.on_commit(partial(enqueue_classification, image_ids=list(image_ids)), robust=True)


def retry_classification(*, image: CellImage, actor, request=None) -> CellImage:
    """Queue a failed (or stuck) image for classification again."""
    with transaction.atomic():
        locked = CellImage.objects.select_for_update().select_related("case").get(pk=image.pk)
        if locked.case.status == Case.Status.SIGNED:
            raise RetryRefused(
                gettext("Case %(accession)s is signed; its images are not classified again.")
                % {"accession": locked.case.accession_id}
            )
        if not selectors.retry_allowed(image=locked):
            raise RetryRefused(_retry_refusal(locked))
        previous = locked.status
        locked.status = CellImage.Status.QUEUED
        locked.status_message = ""
        locked.save(update_fields=["status", "status_message", "status_changed_at"])
        case = Case.objects.select_for_update().get(pk=locked.case_id)
        _set_case_status(case, Case.Status.CLASSIFYING)
        record(
            action=AuditEvent.Action.CLASSIFICATION_RETRIED,
            actor=actor,
            obj=locked,
            details={"case": case.pk, "previous_status": previous},
            request=request,
        )
        schedule_classification(image_ids=[locked.pk])
    return locked


def _retry_refusal(image: CellImage) -> str:
    if image.status == CellImage.Status.CLASSIFIED:
        return gettext("Image %(name)s is already classified.") % {"name": image.original_name}
    minutes = max(1, round(selectors.stale_after().total_seconds() / 60))
    return ngettext(
        "Image %(name)s is %(status)s; it can be retried if it is still waiting after %(minutes)d minute.",
        "Image %(name)s is %(status)s; it can be retried if it is still waiting after %(minutes)d minutes.",
        minutes,
    ) % {"name": image.original_name, "status": image.get_status_display().lower(), "minutes": minutes}


# Confirmed cells as training data.


def export_confirmed_cells(*, destination: Path, signed_only: bool = False) -> dict[str, int]:
    """Write every reviewed cell, decrypted, into destination/<final label>/cell-<id>.<jpg|png>.

    The final label is the cell's latest review; cells with a reviewer-only label are skipped. JPEG and PNG
    files are written as uploaded; TIFF and BMP as PNG (upright RGB). Names carry no case or patient
    information. Returns the count per label.
    """
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    images = selectors.confirmed_cells(signed_only=signed_only)
    counts: Counter[str] = Counter()
    for image, label in images:
        if is_reviewer_label(label):
            continue  # smudge, artefact, other / abnormal: a reviewer's word, never a model class to train on
        folder = destination / _safe_folder_name(label)
        folder.mkdir(exist_ok=True)
        data = storage.load(image.storage_key)
        if image.content_type == "image/jpeg":
            (folder / f"cell-{image.pk}.jpg").write_bytes(data)
        elif image.content_type == "image/png":
            (folder / f"cell-{image.pk}.png").write_bytes(data)
        else:
            with Image.open(io.BytesIO(data)) as opened:
                to_rgb(opened).save(folder / f"cell-{image.pk}.png", format="PNG")
        counts[label] += 1
    logger.info("exported %d confirmed cells to %s", sum(counts.values()), destination)
    return dict(counts)


def write_confirmed_training_folder(*, output_dir: Path) -> Path:
    """settings.CONFIRMED_LABELS_EXPORTER for `manage.py train --include-confirmed`: the folder it trains on."""
    folder = Path(output_dir) / "confirmed"
    export_confirmed_cells(destination=folder)
    return folder


def _safe_folder_name(label: str) -> str:
    name = "".join(char if char.isalnum() or char in "-_ " else "_" for char in label).strip()
    if not name or name in {".", ".."}:
        raise CaseError(f"label {label!r} cannot be used as a folder name")
    return name
