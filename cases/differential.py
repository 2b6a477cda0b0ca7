"""The leukocyte differential of a case: count and percentage of each cell type, against adult reference ranges.

Percentages are of leukocytes only, as a laboratory reports them. Erythroblasts (nucleated red cells) are not
leukocytes: they are reported per 100 leukocytes, and any in an adult's blood is a finding. Platelets are counted
but have no differential percentage or range (a smear differential does not estimate the platelet count).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.utils.translation import gettext_lazy as _

from .review_labels import REVIEWER_LABELS, is_critical, is_reviewer_label, reviewer_label_name

# Adult reference intervals, % of leukocytes (common textbook intervals; labs validate their own).
LEUKOCYTE_REFERENCE_RANGES: dict[str, tuple[float, float]] = {
    "neutrophil": (40.0, 75.0),
    "lymphocyte": (20.0, 45.0),
    "monocyte": (2.0, 10.0),
    "eosinophil": (1.0, 6.0),
    "basophil": (0.0, 2.0),
    "ig": (0.0, 1.0),
}
# Per 100 leukocytes: none are expected in adult peripheral blood.
ERYTHROBLAST_RANGE = (0.0, 0.0)
NON_LEUKOCYTES = {"erythroblast", "platelet"}
KNOWN_TYPES = set(LEUKOCYTE_REFERENCE_RANGES) | NON_LEUKOCYTES

# Names shown to people (in the page's language); labels stay as the model names them.
DISPLAY_NAMES = {
    "neutrophil": _("Neutrophil"),
    "lymphocyte": _("Lymphocyte"),
    "monocyte": _("Monocyte"),
    "eosinophil": _("Eosinophil"),
    "basophil": _("Basophil"),
    "platelet": _("Platelet"),
    "ig": _("Immature granulocytes (IG)"),
    "erythroblast": _("Erythroblasts (NRBC)"),
}


def canonical(label: str) -> str:
    """Model class names differ in case and number ("NEUTROPHIL", "neutrophils"); ranges are keyed singular."""
    name = label.strip().lower()
    if name.endswith("s") and name[:-1] in KNOWN_TYPES:
        name = name[:-1]
    return name


def display_name(label: str) -> str:
    if is_reviewer_label(label):
        return reviewer_label_name(label)
    name = canonical(label)
    return str(DISPLAY_NAMES.get(name, name.capitalize()))


def is_leukocyte(label: str) -> bool:
    return not is_reviewer_label(label) and canonical(label) not in NON_LEUKOCYTES


@dataclass(frozen=True)
class LabelledCell:
    label: str
    reviewed: bool


@dataclass
class DifferentialRow:
    label: str
    name: str
    count: int = 0
    reviewed: int = 0
    leukocyte: bool = True
    # Percentage of leukocytes for leukocytes; count per 100 leukocytes for erythroblasts; None for platelets.
    value: float | None = None
    unit: str = "%"
    low: float | None = None
    high: float | None = None
    flag: str = ""

    @property
    def unreviewed(self) -> int:
        return self.count - self.reviewed


@dataclass
class Differential:
    rows: list[DifferentialRow] = field(default_factory=list)
    # Reviewer-only labels (smudge, artefact, other / abnormal): counted apart, never in the percentages.
    reviewer_rows: list[DifferentialRow] = field(default_factory=list)
    total_cells: int = 0
    leukocytes: int = 0
    reviewed_cells: int = 0
    unlabelled_cells: int = 0

    @property
    def unreviewed_cells(self) -> int:
        return self.total_cells - self.reviewed_cells - self.unlabelled_cells

    @property
    def flags(self) -> list[DifferentialRow]:
        return [row for row in self.rows if row.flag]

    @property
    def reviewed_leukocytes(self) -> int:
        """Leukocytes with a pathologist's final label: what a manual count of 100 or 200 cells counts."""
        return sum(row.reviewed for row in self.rows if row.leukocyte)

    @property
    def critical(self) -> bool:
        """A reviewer called at least one cell abnormal."""
        return any(row.count and is_critical(row.label) for row in self.reviewer_rows)


def _flag(value: float | None, low: float | None, high: float | None) -> str:
    if value is None or low is None or high is None:
        return ""
    if value < low:
        return "low"
    if value > high:
        return "high"
    return ""


def compute_differential(*, cells: Iterable[LabelledCell], classes: Iterable[str], unlabelled: int = 0) -> Differential:
    """Counts and percentages per class. `classes` fixes the row order (every class gets a row, even at 0);
    labels outside it are appended; reviewer-only labels go to `reviewer_rows`, outside the leukocyte count.
    `unlabelled` counts cells with neither a prediction nor a review."""
    rows: dict[str, DifferentialRow] = {}
    reviewer_rows = {
        label: DifferentialRow(label=label, name=display_name(label), leukocyte=False, unit="")
        for label in REVIEWER_LABELS
    }
    for label in classes:
        rows.setdefault(label, DifferentialRow(label=label, name=display_name(label), leukocyte=is_leukocyte(label)))
    result = Differential(unlabelled_cells=unlabelled, total_cells=unlabelled)
    for cell in cells:
        if is_reviewer_label(cell.label):
            row = reviewer_rows[cell.label]
            row.count += 1
            row.reviewed += int(cell.reviewed)
            result.total_cells += 1
            result.reviewed_cells += int(cell.reviewed)
            continue
        row = rows.setdefault(
            cell.label,
            DifferentialRow(label=cell.label, name=display_name(cell.label), leukocyte=is_leukocyte(cell.label)),
        )
        row.count += 1
        row.reviewed += int(cell.reviewed)
        result.total_cells += 1
        result.reviewed_cells += int(cell.reviewed)
        result.leukocytes += int(row.leukocyte)
    for row in rows.values():
        name = canonical(row.label)
        if name in LEUKOCYTE_REFERENCE_RANGES:
            row.low, row.high = LEUKOCYTE_REFERENCE_RANGES[name]
        elif name == "erythroblast":
            row.low, row.high = ERYTHROBLAST_RANGE
            row.unit = "/100 WBC"
        if name == "platelet":
            row.unit = ""
        elif result.leukocytes:
            row.value = 100.0 * row.count / result.leukocytes
        row.flag = _flag(row.value, row.low, row.high)
    result.rows = list(rows.values())
    result.reviewer_rows = list(reviewer_rows.values())
    return result
