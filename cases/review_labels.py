"""Reviewer-only labels: what a pathologist may call a cell that is none of the model's classes.

They are final labels (a Review's `to_label`) but never model classes: the differential reports them apart from
the leukocyte percentages, reports count them as "not a model class", and exports for training skip them.
Their codes are lower-case words that no model class uses (model classes are upper-case, e.g. "NEUTROPHIL").
A cell a reviewer calls abnormal (a blast, an atypical cell) makes its case a critical finding.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

SMUDGE = "smudge"
ARTEFACT = "artefact"
ABNORMAL = "abnormal"

# code -> (name shown to people, translated when shown; keyboard shortcut on the review page)
REVIEWER_LABELS: dict[str, tuple[str, str]] = {
    SMUDGE: (_("Smudge cell"), "s"),
    ARTEFACT: (_("Artefact"), "x"),
    ABNORMAL: (_("Other / abnormal cell"), "o"),
}
CRITICAL_LABELS = frozenset({ABNORMAL})


def is_reviewer_label(label: str) -> bool:
    return label in REVIEWER_LABELS


def reviewer_label_name(label: str) -> str:
    return str(REVIEWER_LABELS[label][0])


def is_critical(label: str) -> bool:
    return label in CRITICAL_LABELS
