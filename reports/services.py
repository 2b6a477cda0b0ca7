"""Exports: the researchers' anonymized cell table and the supervisors' audit trail, each one audited.

The research export replaces the case and the cell with keyed pseudonyms, HMAC-SHA256(key, "case:<id>") and
HMAC-SHA256(key, "cell:<id>") (hex, first 32 characters), so the same case or cell gets the same pseudonym
in every export, while nobody without the key can link a row back to a case or its patient reference. The key is
settings.EXPORT_PSEUDONYM_KEY; when it is empty (the embedded default) a key is derived from SECRET_KEY,
so pseudonyms are stable for one installation and change if its SECRET_KEY changes. The export carries no
patient reference, accession number, user name or email, file name or free text (review reasons), and
its dates are coarsened to the month.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import DateField, F
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Round, Trunc
from django.utils import timezone
from django.utils.translation import gettext

from accounts.permissions import has_capability
from audit.models import AuditEvent
from audit.services import record
from hematovision.csv_safety import FORMULA_STARTS, csv_text_chunks

from .selectors import AuditFilter, ExportFilter, audit_events, export_classes, export_predictions

PSEUDONYM_KEY_DERIVATION_LABEL = b"hematovision.reports.export-pseudonym-key"
PROBABILITY_PREFIX = "prob_"
PROBABILITY_DECIMALS = 6


def pseudonym_key() -> bytes:
    configured = settings.EXPORT_PSEUDONYM_KEY
    if configured:
        return configured.encode()
    return hmac.new(settings.SECRET_KEY.encode(), PSEUDONYM_KEY_DERIVATION_LABEL, hashlib.sha256).digest()


def case_pseudonym(*, case_id: int, key: bytes) -> str:
    return hmac.digest(key, b"case:%d" % case_id, "sha256").hex()[:32]


def cell_pseudonym(*, cell_id: int, key: bytes) -> str:
    return hmac.digest(key, b"cell:%d" % cell_id, "sha256").hex()[:32]


def month_of(moment) -> str:
    return timezone.localtime(moment).strftime("%Y-%m") if moment else ""


def _describe(export_filter: ExportFilter) -> dict:
    return {
        "model_version": export_filter.model_version.name if export_filter.model_version else "",
        "period_start": export_filter.period.start.isoformat() if export_filter.period else "",
        "period_end": export_filter.period.end.isoformat() if export_filter.period else "",
        "reviewed_only": export_filter.reviewed_only,
    }


def _recorded_export(*, actor, export_filter: ExportFilter, request) -> tuple:
    """The export's predictions and classes, once the export is in the audit trail."""
    predictions = export_predictions(export_filter=export_filter)
    classes = export_classes(predictions=predictions)
    record(
        action=AuditEvent.Action.EXPORT,
        actor=actor,
        object_type="reports.cell_export",
        details={"kind": "cells", "rows": predictions.count(), **_describe(export_filter)},
        request=request,
    )
    return predictions, classes


def export_cells(*, actor, export_filter: ExportFilter, request=None) -> Iterator[list]:
    """Record the export, then return its rows (a header first): one row per prediction of a cell."""
    if not has_capability(actor, "export_data"):
        raise PermissionDenied(gettext("Only researchers and administrators can download exports."))
    predictions, classes = _recorded_export(actor=actor, export_filter=export_filter, request=request)
    return _cell_rows(predictions=predictions, classes=classes, key=pseudonym_key())


EXPORT_COLUMNS = [
    "case_pseudonym",
    "cell_pseudonym",
    "model_version",
    "predicted_label",
    "confidence",
    "flagged",
]
EXPORT_TRAILING_COLUMNS = [
    "final_label",
    "reviewed",
    "reclassified",
    "uploaded_month",
    "predicted_month",
    "reviewed_month",
]
EXPORT_CHUNK_ROWS = 5000


def _month(field: str):
    return Trunc(field, "month", output_field=DateField())


def _rounded(expression):
    return Round(expression, PROBABILITY_DECIMALS)


def _fetched_ahead(cursor, size: int) -> Iterator[list]:
    """The cursor's rows in batches, the next batch fetched by a helper thread while the caller writes this
    one: the database and Python work at the same time (the driver releases the GIL while it waits)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-fetch") as pool:
        pending = pool.submit(cursor.fetchmany, size)
        while batch := pending.result():
            pending = pool.submit(cursor.fetchmany, size)
            yield batch


def _export_values(*, predictions, classes: list[str]):
    """The export's columns as a values_list, computed in the database: each class's probability is read out
    of the JSON there, the confidence rounded there and months truncated there (in the installation's time
    zone). Both ways of writing the export (Python rows, PostgreSQL COPY) read this same query."""
    probability_columns = {
        f"_prob_{position}": KeyTextTransform(name, "probabilities") for position, name in enumerate(classes)
    }
    return predictions.annotate(
        **probability_columns,
        _confidence=_rounded(F("confidence")),
        _uploaded=_month("image__uploaded_at"),
        _predicted=_month("created_at"),
        _reviewed=_month("image__final_reviewed_at"),
    ).values_list(
        "image__case_id",
        "image_id",
        "model_version__name",
        "label",
        "_confidence",
        "flagged",
        "image__final_label",
        "image__reclassified",
        "_uploaded",
        "_predicted",
        "_reviewed",
        *probability_columns,
    )


def _export_header(classes: list[str]) -> list[str]:
    return EXPORT_COLUMNS + [f"{PROBABILITY_PREFIX}{name}" for name in classes] + EXPORT_TRAILING_COLUMNS


def _without_jit() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as setting:
            setting.execute("SET jit = off")  # compiling the export query costs more than it saves


def _cell_rows(*, predictions, classes: list[str], key: bytes) -> Iterator[list]:
    """Rows straight from the database (see _export_values), read in chunks through a server-side cursor on
    PostgreSQL, so memory stays flat and Python only adds the keyed pseudonyms."""
    yield _export_header(classes)
    # The compiled SQL through a chunked cursor: Django's per-row converters would cost more than the rest.
    sql, params = _export_values(predictions=predictions, classes=classes).query.sql_with_params()
    case_pseudonyms: dict[int, str] = {}
    months: dict = {None: ""}
    _without_jit()
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        for batch in _fetched_ahead(cursor, EXPORT_CHUNK_ROWS):
            for case_id, cell_id, version, label, confidence, flagged, final, reclassified, *rest in batch:
                uploaded, predicted, reviewed, *probabilities = rest
                case = case_pseudonyms.get(case_id)
                if case is None:
                    case = case_pseudonyms[case_id] = case_pseudonym(case_id=case_id, key=key)
                for moment in (uploaded, predicted, reviewed):
                    if moment not in months:
                        months[moment] = str(moment)[:7]  # a date, or its ISO text on SQLite
                yield [
                    case,
                    hmac.digest(key, b"cell:%d" % cell_id, "sha256").hex()[:32],  # cell_pseudonym, inlined
                    version,
                    label,
                    confidence,
                    int(flagged),
                    *["0.0" if value is None else value for value in probabilities],
                    final,
                    int(bool(final)),
                    int(reclassified),
                    months[uploaded],
                    months[predicted],
                    months[reviewed],
                ]


# --- The same CSV, written by PostgreSQL (COPY) -----------------------------------------------------------
#
# PostgreSQL writes each line, byte for byte what csv_text_chunks makes of _cell_rows, except the two keyed
# pseudonyms at its start, which Python adds (a microsecond a cell, the case's cached; four sha256() calls a row
# would make the database the slower side). Text is neutralised like hematovision.csv_safety.safe_row (an
# apostrophe before a leading = + - @, tab or carriage return) and quoted like Python's csv module (excel
# dialect, QUOTE_MINIMAL: a field holding a comma, a double quote, CR or LF is quoted and its double quotes
# doubled; lines end in CRLF). Most lines need neither, which one regular expression over the line's text
# fields tells, so only the others are formatted field by field. Each line's remainder arrives as one bytea
# value of a binary COPY, so COPY adds no escaping or quoting of its own.

FORMULA_STARTS_SQL = "('=', '+', '-', '@', chr(9), chr(13))"
# Over the text fields joined by chr(31): nothing to quote or neutralise unless this matches. A field holding
# chr(31) can only make it match more often, never less, and then the field-by-field path runs.
NEEDS_FORMATTING_REGEX = r"""'[",\r\n]|(^|\x1f)[-=+@\t]'"""
if set(FORMULA_STARTS) != {"=", "+", "-", "@", "\t", "\r"}:
    raise ImportError("reports.services' SQL formatting no longer matches hematovision.csv_safety")


def _text_sql(column: str) -> str:
    """A text value (never NULL here) as csv_text_chunks writes it: neutralised, then quoted where needed."""
    neutralised = f"CASE WHEN left({column}, 1) IN {FORMULA_STARTS_SQL} THEN '''' || {column} ELSE {column} END"
    needs_quotes = " OR ".join(f"strpos({column}, {char}) > 0" for char in ("','", "'\"'", "chr(13)", "chr(10)"))
    return f"CASE WHEN {needs_quotes} THEN '\"' || replace({neutralised}, '\"', '\"\"') || '\"' ELSE {neutralised} END"


def _copy_sql(*, predictions, classes: list[str]) -> tuple[str, list]:
    """COPY of (case id, cell id, the rest of the CSV line): the query of _export_values inside one that writes
    each line after the pseudonyms."""
    sql, params = _export_values(predictions=predictions, classes=classes).query.sql_with_params()
    probabilities = [f"p{position}" for position in range(len(classes))]
    names = ["case_id", "cell_id", "version", "label", "confidence", "flagged", "final", "reclassified"]
    names += ["uploaded", "predicted", "reviewed", *probabilities]
    text = {
        "version": "COALESCE(cell.version, '')",
        "label": "COALESCE(cell.label, '')",
        **{name: f"COALESCE(cell.{name}, '0.0')" for name in probabilities},
        "final": "COALESCE(cell.final, '')",
    }

    def fields(text_field) -> list[str]:
        return [
            text_field(text["version"]),
            text_field(text["label"]),
            "COALESCE(cell.confidence::text, '')",  # a number to Python's csv: never neutralised, never quoted
            "CASE WHEN cell.flagged THEN '1' ELSE '0' END",
            *[text_field(text[name]) for name in probabilities],
            text_field(text["final"]),
            "CASE WHEN COALESCE(cell.final, '') <> '' THEN '1' ELSE '0' END",
            "CASE WHEN cell.reclassified THEN '1' ELSE '0' END",
            *[f"COALESCE(to_char(cell.{name}, 'YYYY-MM'), '')" for name in ("uploaded", "predicted", "reviewed")],
        ]

    def line(text_field) -> str:
        return "',' || " + " || ',' || ".join(f"({field})" for field in fields(text_field))

    joined_text = " || chr(31) || ".join(text.values())
    rest = (
        f"CASE WHEN ({joined_text}) ~ {NEEDS_FORMATTING_REGEX} THEN {line(_text_sql)} "
        f"ELSE {line(lambda column: column)} END"
    )
    # Every value is a parameter; the SQL is Django's compiled query and fixed column expressions.
    query = (
        f"COPY (SELECT cell.case_id::int8, cell.cell_id::int8, "  # noqa: S608
        f"convert_to({rest} || chr(13) || chr(10), 'UTF8') "
        f"FROM ({sql}) AS cell({', '.join(names)})) TO STDOUT (FORMAT binary)"
    )
    return query, list(params)


HMAC_BLOCK_BYTES = 64


def _hex_pseudonym_maker(*, key: bytes, prefix: bytes):
    """A function of an id giving its pseudonym as ASCII bytes, HMAC-SHA256(key, prefix + id) like
    case_pseudonym and cell_pseudonym, from copies of the key's pre-hashed inner and outer pads (RFC 2104):
    about a third of what hmac.digest costs a call, which counts once a row."""
    if len(key) > HMAC_BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    key = key.ljust(HMAC_BLOCK_BYTES, b"\0")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key) + prefix)
    outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))
    hexlify = binascii.hexlify

    def pseudonym(number: int) -> bytes:
        message = inner.copy()
        message.update(b"%d" % number)
        keyed = outer.copy()
        keyed.update(message.digest())
        return hexlify(keyed.digest()[:16])

    return pseudonym


def _copied_chunks(*, predictions, classes: list[str], key: bytes) -> Iterator[bytes]:
    """The export as CSV bytes written by PostgreSQL (and the pseudonyms by Python), EXPORT_CHUNK_ROWS lines
    a chunk."""
    yield "".join(csv_text_chunks([_export_header(classes)])).encode()
    query, params = _copy_sql(predictions=predictions, classes=classes)
    case_pseudonyms: dict[int, bytes] = {}
    case_pseudonym_of = _hex_pseudonym_maker(key=key, prefix=b"case:")
    cell_pseudonym_of = _hex_pseudonym_maker(key=key, prefix=b"cell:")
    pieces: list[bytes] = []
    append = pieces.append
    size = 0
    _without_jit()
    with connection.cursor() as cursor, cursor.copy(query, params) as copy:
        copy.set_types(["int8", "int8", "bytea"])
        for case_id, cell_id, rest in copy.rows():
            case = case_pseudonyms.get(case_id)
            if case is None:
                case = case_pseudonyms[case_id] = case_pseudonym_of(case_id) + b","
            append(case)
            append(cell_pseudonym_of(cell_id))
            append(rest)
            size += 1
            if size >= EXPORT_CHUNK_ROWS:
                yield b"".join(pieces)
                pieces.clear()
                size = 0
    if pieces:
        yield b"".join(pieces)


def export_cells_csv(*, actor, export_filter: ExportFilter, request=None) -> Iterator[str | bytes]:
    """Record the export, then return it as CSV chunks, the bytes csv_text_chunks makes of export_cells'
    rows: written by PostgreSQL where it runs (COPY), else by Python."""
    if not has_capability(actor, "export_data"):
        raise PermissionDenied(gettext("Only researchers and administrators can download exports."))
    predictions, classes = _recorded_export(actor=actor, export_filter=export_filter, request=request)
    if connection.vendor == "postgresql":
        return _copied_chunks(predictions=predictions, classes=classes, key=pseudonym_key())
    return csv_text_chunks(_cell_rows(predictions=predictions, classes=classes, key=pseudonym_key()))


AUDIT_COLUMNS = ["time", "actor_email", "action", "object_type", "object_id", "ip_address", "details"]


def export_audit_trail(*, actor, audit_filter: AuditFilter, request=None) -> Iterator[list]:
    """Record the download, then return the filtered audit events as rows (a header first)."""
    if not has_capability(actor, "view_audit"):
        raise PermissionDenied(gettext("Only supervisors and administrators can download the audit trail."))
    events = audit_events(audit_filter=audit_filter)
    record(
        action=AuditEvent.Action.EXPORT,
        actor=actor,
        object_type="audit.auditevent",
        details={
            "kind": "audit_trail",
            "rows": events.count(),
            "filter": {
                "action": audit_filter.action,
                "actor": audit_filter.actor,
                "object_type": audit_filter.object_type,
                "object_id": audit_filter.object_id,
                "period_start": audit_filter.period.start.isoformat() if audit_filter.period else "",
                "period_end": audit_filter.period.end.isoformat() if audit_filter.period else "",
            },
        },
        request=request,
    )
    return _audit_rows(events)


def _audit_rows(events) -> Iterator[list]:
    yield AUDIT_COLUMNS
    for event in events.iterator(chunk_size=1000):
        yield [
            timezone.localtime(event.created_at).isoformat(),
            event.actor_email,
            event.action,
            event.object_type,
            event.object_id,
            event.ip_address or "",
            json.dumps(event.details, sort_keys=True, ensure_ascii=False),
        ]
