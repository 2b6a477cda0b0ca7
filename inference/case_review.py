"""Case-level escalation: when a case as a whole is imaged unlike the training data, every cell of it needs review.

A laboratory reads a smear as one thing: if most of its cells look unlike anything the model was trained on, the
few that happen to pass the per-cell checks are no more trustworthy than the rest (leaving LISC out of training,
96% of its cells were flagged as unfamiliar and 15 of the 22 that were not were wrong: docs/model-card.md).

The rule, pure over the flag reasons of a case's classified cells (the latest prediction of each), used by the
case page's warning (cases.selectors.model_validity), the classification task (cases.classification) and the
simulation of cases in `manage.py evaluate --case-size`:

    at least UNLIKE_TRAINING_MIN_CELLS classified cells, and at least UNLIKE_TRAINING_SHARE of them flagged
    for a reason that says "unlike the training data" (not merely unsure).

The escalation's own reason, UNVALIDATED_CASE_REASON, is not one of those reasons: a case is never warned
because it was warned.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

UNLIKE_TRAINING_REASONS = frozenset({"out_of_distribution", "not_a_cell", "unfamiliar_imaging"})
UNLIKE_TRAINING_SHARE = 0.30
UNLIKE_TRAINING_MIN_CELLS = 3
# The stable code added to every cell of a warned case (a flag: the cell keeps its top class as its label).
UNVALIDATED_CASE_REASON = "unvalidated_case"


def is_unlike_training(reasons: Iterable[str] | None) -> bool:
    """Whether a cell's flag reasons say it looks unlike the training data."""
    return not UNLIKE_TRAINING_REASONS.isdisjoint(reasons or ())


def case_is_unlike_training(*, classified_cells: int, unlike_training: int) -> bool:
    """The rule on counts: enough classified cells, and a large enough share of them unlike the training data."""
    if classified_cells < UNLIKE_TRAINING_MIN_CELLS:
        return False
    return unlike_training / classified_cells >= UNLIKE_TRAINING_SHARE


def needs_case_review(reasons_per_cell: Sequence[Iterable[str] | None]) -> bool:
    """The rule over the flag reasons of each classified cell of one case."""
    unlike = sum(1 for reasons in reasons_per_cell if is_unlike_training(reasons))
    return case_is_unlike_training(classified_cells=len(reasons_per_cell), unlike_training=unlike)


def escalated_reasons(reasons: Iterable[str] | None) -> list[str]:
    """A cell's flag reasons once its case is escalated (the escalation's code added once, at the end)."""
    reasons = list(reasons or ())
    return reasons if UNVALIDATED_CASE_REASON in reasons else [*reasons, UNVALIDATED_CASE_REASON]
