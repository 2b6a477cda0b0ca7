"""A cell's final label, defined once: the label of its latest review, "" while nobody has reviewed it.

It is stored on the cell (`CellImage.final_label`, with `final_reviewed_at` and `reclassified`) so that pages,
exports and reports read it without walking the reviews. `keep_final_label` is the only writer: `Review.save`
calls it in the same transaction that inserts the review, so every review path (confirm, override,
amendment, whatever service adds a Review) keeps it. `backfill_final_labels` derives it from the reviews
(the migration that added the columns, and bulk-loaded data).

A final label is a plain string: a class of the model version that classified the cell, or a reviewer-only
label (smudge, artefact, other) that no model predicts. Reports count labels outside the model version's
classes apart and never as a model error.
"""

from __future__ import annotations

from .models import CellImage, Review


def keep_final_label(review: Review) -> None:
    """Make `review` the cell's final word (call inside the transaction that inserted it)."""
    changes = {"final_label": review.to_label, "final_reviewed_at": review.created_at}
    if review.kind != Review.Kind.CONFIRM:
        changes["reclassified"] = True
    CellImage.objects.filter(pk=review.image_id).update(**changes)
    cached = review._state.fields_cache.get("image")  # the caller's CellImage, kept in step
    if cached is not None:
        for name, value in changes.items():
            setattr(cached, name, value)


_POSTGRESQL_BACKFILL = """
UPDATE {image} AS i
SET final_label = latest.to_label, final_reviewed_at = latest.created_at, reclassified = latest.reclassified
FROM (
    SELECT DISTINCT ON (image_id) image_id, to_label, created_at,
           bool_or(kind <> 'confirm') OVER (PARTITION BY image_id) AS reclassified
    FROM {review}
    ORDER BY image_id, created_at DESC, id DESC
) AS latest
WHERE latest.image_id = i.id
"""

_PORTABLE_BACKFILL = """
UPDATE {image} SET
    final_label = (SELECT r.to_label FROM {review} r WHERE r.image_id = {image}.id
                   ORDER BY r.created_at DESC, r.id DESC LIMIT 1),
    final_reviewed_at = (SELECT r.created_at FROM {review} r WHERE r.image_id = {image}.id
                         ORDER BY r.created_at DESC, r.id DESC LIMIT 1),
    reclassified = EXISTS (SELECT 1 FROM {review} r WHERE r.image_id = {image}.id AND r.kind <> 'confirm')
WHERE EXISTS (SELECT 1 FROM {review} r WHERE r.image_id = {image}.id)
"""


def backfill_final_labels(connection) -> None:
    """Set every reviewed cell's stored final label from its reviews (cells without reviews keep "")."""
    names = {
        "image": connection.ops.quote_name(CellImage._meta.db_table),
        "review": connection.ops.quote_name(Review._meta.db_table),
    }
    template = _POSTGRESQL_BACKFILL if connection.vendor == "postgresql" else _PORTABLE_BACKFILL
    with connection.cursor() as cursor:
        cursor.execute(template.format(**names))
