"""The database refuses to rewrite reviews and signed cases (PostgreSQL and SQLite triggers).

What is refused, whoever asks (a queryset .update()/.delete(), raw SQL through the application's account):
- reviews: every UPDATE and DELETE (a decision is changed by a new review, never by editing one);
- a signed case (`cases_case.status = 'signed'`): changing status away from signed, or any of
  FROZEN_CASE_COLUMNS (who signed and when, accession, patient reference, creator, creation time); deleting it;
- cells of a signed case: adding a cell to it, deleting one, or changing FROZEN_IMAGE_COLUMNS (the case it
  belongs to, the image's SHA-256); a review of one of its cells that is not an amendment.
Everything else stays writable (e.g. `updated_at`, a stored final label or summary other services keep
beside the reviews, classification status): the amendment path only adds Review rows of kind "amendment".

Installed by a migration and re-installed after every migrate; see audit.db_guards for why and for the
`flush` exception.
"""

from __future__ import annotations

from audit.db_guards import (
    changed_any,
    drop_triggers,
    execute,
    existing_tables,
    pg_function,
    pg_raise,
    pg_trigger,
    quote,
    sqlite_bypass_condition,
    sqlite_trigger,
)

CASE_TABLE = "cases_case"
IMAGE_TABLE = "cases_cellimage"
REVIEW_TABLE = "cases_review"
SIGNED = "signed"
AMENDMENT = "amendment"
FROZEN_CASE_COLUMNS = (
    "id",
    "status",
    "signed_by_id",
    "signed_at",
    "accession_id",
    "patient_reference",
    "created_by_id",
    "created_at",
)
FROZEN_IMAGE_COLUMNS = ("id", "case_id", "sha256")

TRIGGERS = (
    # PostgreSQL
    ("hv_case_signed_guard", CASE_TABLE),
    ("hv_cellimage_signed_guard", IMAGE_TABLE),
    ("hv_review_guard", REVIEW_TABLE),
    # SQLite
    ("hv_case_signed_no_update", CASE_TABLE),
    ("hv_case_signed_no_delete", CASE_TABLE),
    ("hv_cellimage_signed_no_insert", IMAGE_TABLE),
    ("hv_cellimage_signed_no_update", IMAGE_TABLE),
    ("hv_cellimage_signed_no_delete", IMAGE_TABLE),
    ("hv_review_no_update", REVIEW_TABLE),
    ("hv_review_no_delete", REVIEW_TABLE),
    ("hv_review_signed_amendment_only", REVIEW_TABLE),
)


def _status_of_case(connection, case_id_expression: str) -> str:
    return f"(SELECT status FROM {quote(connection, CASE_TABLE)} WHERE id = {case_id_expression})"  # noqa: S608 - fixed names


def _status_of_image_case(connection, image_id_expression: str) -> str:
    return (
        f"(SELECT c.status FROM {quote(connection, CASE_TABLE)} c JOIN {quote(connection, IMAGE_TABLE)} i "  # noqa: S608
        f"ON i.case_id = c.id WHERE i.id = {image_id_expression})"
    )


def _postgresql(connection) -> list[str]:
    case_table, image_table, review_table = (quote(connection, t) for t in (CASE_TABLE, IMAGE_TABLE, REVIEW_TABLE))
    case_body = (
        f"IF OLD.status = '{SIGNED}' THEN\n"
        "  IF TG_OP = 'DELETE' THEN\n"
        "    " + pg_raise("case % is signed: it cannot be deleted", "OLD.accession_id") + "\n"
        f"  ELSIF {changed_any(connection, FROZEN_CASE_COLUMNS)} THEN\n"
        "    "
        + pg_raise("case % is signed: its status and signature cannot change (amend it instead)", "OLD.accession_id")
        + "\n"
        "  END IF;\n"
        "END IF;\n"
        "IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;\n"
        "RETURN NEW;"
    )
    image_body = (
        f"IF TG_OP IN ('UPDATE', 'DELETE') AND {_status_of_case(connection, 'OLD.case_id')} = '{SIGNED}' THEN\n"
        "  IF TG_OP = 'DELETE' THEN\n"
        "    " + pg_raise("cell % belongs to a signed case: it cannot be deleted", "OLD.id") + "\n"
        f"  ELSIF {changed_any(connection, FROZEN_IMAGE_COLUMNS)} THEN\n"
        "    " + pg_raise("cell % belongs to a signed case: its case and content cannot change", "OLD.id") + "\n"
        "  END IF;\n"
        "END IF;\n"
        f"IF TG_OP IN ('INSERT', 'UPDATE') AND {_status_of_case(connection, 'NEW.case_id')} = '{SIGNED}'\n"
        "   AND (TG_OP = 'INSERT' OR NEW.case_id IS DISTINCT FROM OLD.case_id) THEN\n"
        "  " + pg_raise("case % is signed: no cell can be added to it", "NEW.case_id") + "\n"
        "END IF;\n"
        "IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;\n"
        "RETURN NEW;"
    )
    review_body = (
        "IF TG_OP IN ('UPDATE', 'DELETE') THEN\n"
        "  " + pg_raise("reviews are append-only: % of review % refused", "TG_OP", "OLD.id") + "\n"
        "END IF;\n"
        f"IF NEW.kind <> '{AMENDMENT}' AND {_status_of_image_case(connection, 'NEW.image_id')} = '{SIGNED}' THEN\n"
        "  " + pg_raise("the case of cell % is signed: it changes only by amendment", "NEW.image_id") + "\n"
        "END IF;\n"
        "RETURN NEW;"
    )
    return [
        pg_function("hv_case_signed_guard", case_body),
        pg_trigger(
            "hv_case_signed_guard", timing="BEFORE UPDATE OR DELETE", table=case_table, function="hv_case_signed_guard"
        ),
        pg_function("hv_cellimage_signed_guard", image_body),
        pg_trigger(
            "hv_cellimage_signed_guard",
            timing="BEFORE INSERT OR UPDATE OR DELETE",
            table=image_table,
            function="hv_cellimage_signed_guard",
        ),
        pg_function("hv_review_guard", review_body),
        pg_trigger(
            "hv_review_guard",
            timing="BEFORE INSERT OR UPDATE OR DELETE",
            table=review_table,
            function="hv_review_guard",
        ),
    ]


def _sqlite(connection) -> list[str]:
    case_table, image_table, review_table = (quote(connection, t) for t in (CASE_TABLE, IMAGE_TABLE, REVIEW_TABLE))
    bypass = sqlite_bypass_condition()
    return [
        sqlite_trigger(
            "hv_case_signed_no_update",
            timing="BEFORE UPDATE",
            table=case_table,
            when=f"OLD.status = '{SIGNED}' AND {changed_any(connection, FROZEN_CASE_COLUMNS)}",
            message="case is signed: its status and signature cannot change (amend it instead)",
        ),
        sqlite_trigger(
            "hv_case_signed_no_delete",
            timing="BEFORE DELETE",
            table=case_table,
            when=f"OLD.status = '{SIGNED}' AND {bypass}",
            message="case is signed: it cannot be deleted",
        ),
        sqlite_trigger(
            "hv_cellimage_signed_no_insert",
            timing="BEFORE INSERT",
            table=image_table,
            when=f"{_status_of_case(connection, 'NEW.case_id')} = '{SIGNED}'",
            message="case is signed: no cell can be added to it",
        ),
        sqlite_trigger(
            "hv_cellimage_signed_no_update",
            timing="BEFORE UPDATE",
            table=image_table,
            when=(
                f"({_status_of_case(connection, 'OLD.case_id')} = '{SIGNED}' "
                f"OR {_status_of_case(connection, 'NEW.case_id')} = '{SIGNED}') "
                f"AND {changed_any(connection, FROZEN_IMAGE_COLUMNS)}"
            ),
            message="cell belongs to a signed case: its case and content cannot change",
        ),
        sqlite_trigger(
            "hv_cellimage_signed_no_delete",
            timing="BEFORE DELETE",
            table=image_table,
            when=f"{_status_of_case(connection, 'OLD.case_id')} = '{SIGNED}' AND {bypass}",
            message="cell belongs to a signed case: it cannot be deleted",
        ),
        sqlite_trigger(
            "hv_review_no_update",
            timing="BEFORE UPDATE",
            table=review_table,
            when="1",
            message="reviews are append-only: UPDATE refused",
        ),
        sqlite_trigger(
            "hv_review_no_delete",
            timing="BEFORE DELETE",
            table=review_table,
            when=bypass,
            message="reviews are append-only: DELETE refused",
        ),
        sqlite_trigger(
            "hv_review_signed_amendment_only",
            timing="BEFORE INSERT",
            table=review_table,
            when=f"NEW.kind <> '{AMENDMENT}' AND {_status_of_image_case(connection, 'NEW.image_id')} = '{SIGNED}'",
            message="the case of this cell is signed: it changes only by amendment",
        ),
    ]


def install_case_guards(connection) -> None:
    if not {CASE_TABLE, IMAGE_TABLE, REVIEW_TABLE} <= existing_tables(connection):
        return
    drop_triggers(connection, TRIGGERS)
    if connection.vendor == "postgresql":
        execute(connection, _postgresql(connection))
    elif connection.vendor == "sqlite":
        execute(connection, _sqlite(connection))


def drop_case_guards(connection) -> None:
    drop_triggers(connection, TRIGGERS)
