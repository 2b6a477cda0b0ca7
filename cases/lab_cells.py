"""A laboratory's reviewed cells handed over as data for adaptation (``settings.LABORATORY_CELLS_EXPORTER``).

`inference` adapts a model on class folders and knows nothing of cases; this writes the confirmed and
reclassified cells of a laboratory's *signed* cases as ``adapt/<label>/`` and ``holdout/<label>/``,
split by case (never by cell: cells of one smear are alike, so a per-cell split would flatter the
candidate). File names carry no case or patient information; the case of each file is returned apart
(as a case number) so the hold-out part can be judged on case differentials.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter, defaultdict
from pathlib import Path

from django.utils.translation import gettext
from PIL import Image

from inference.preprocessing import to_rgb

from . import selectors, storage
from .models import Case, CellImage
from .services import _safe_folder_name

MIN_CASES_FOR_SPLIT = 2


def _case_fraction(case_id: int) -> float:
    digest = hashlib.sha256(f"holdout-case:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def laboratory_cells(*, laboratory_id: int | None) -> list[tuple[CellImage, str]]:
    """Reviewed cells of signed cases with their final label, of one laboratory (or of every case when
    None)."""
    cells = selectors.confirmed_cells(signed_only=True)
    if laboratory_id is None:
        return cells
    case_ids = set(Case.objects.filter(laboratory_id=laboratory_id).values_list("pk", flat=True))
    return [(image, label) for image, label in cells if image.case_id in case_ids]


def split_cases(case_ids: list[int], *, holdout_fraction: float) -> tuple[set[int], set[int]]:
    """(adapt cases, hold-out cases) by a hash of each case: stable as cases are added. With two cases or
    more, each part gets at least one; a single case is all adapt part (nothing to measure on)."""
    ordered = sorted(set(case_ids), key=_case_fraction)
    holdout = {case for case in ordered if _case_fraction(case) < holdout_fraction}
    if len(ordered) < MIN_CASES_FOR_SPLIT:
        holdout = set()
    else:
        if not holdout:
            holdout = {ordered[0]}
        if len(holdout) == len(ordered):
            holdout.discard(ordered[-1])
    return set(ordered) - holdout, holdout


def write_cell_file(image: CellImage, folder: Path) -> Path:
    """The decrypted cell as uploaded (JPEG, PNG) or as PNG (TIFF, BMP), named by its cell number only."""
    data = storage.load(image.storage_key)
    if image.content_type in ("image/jpeg", "image/png"):
        path = folder / f"cell-{image.pk}.{'jpg' if image.content_type == 'image/jpeg' else 'png'}"
        path.write_bytes(data)
        return path
    path = folder / f"cell-{image.pk}.png"
    with Image.open(io.BytesIO(data)) as opened:
        to_rgb(opened).save(path, format="PNG")
    return path


def write_laboratory_cells(*, output_dir: Path, laboratory_id: int | None, holdout_fraction: float) -> dict:
    """Write the cells; returns adapt_dir, holdout_dir, case_of ({"LABEL/file": case number}), cases
    ({"adapt": [...], "holdout": [...]}), counts per part and label, and warnings a person should read."""
    output_dir = Path(output_dir)
    cells = laboratory_cells(laboratory_id=laboratory_id)
    adapt_cases, holdout_cases = split_cases([image.case_id for image, _ in cells], holdout_fraction=holdout_fraction)
    parts = {"adapt": output_dir / "adapt", "holdout": output_dir / "holdout"}
    for folder in parts.values():
        folder.mkdir(parents=True, exist_ok=True)
    case_of: dict[str, str] = {}
    counts: dict[str, Counter] = defaultdict(Counter)
    for image, label in cells:
        part = "holdout" if image.case_id in holdout_cases else "adapt"
        folder = parts[part] / _safe_folder_name(label)
        folder.mkdir(exist_ok=True)
        path = write_cell_file(image, folder)
        counts[part][label] += 1
        if part == "holdout":
            case_of[f"{folder.name}/{path.name}"] = str(image.case_id)
    warnings = []
    if len(adapt_cases) + len(holdout_cases) < MIN_CASES_FOR_SPLIT:
        warnings.append(
            gettext("Fewer than two signed cases with reviewed cells: there is no hold-out part to measure on.")
        )
    thin = sorted(label for label, n in counts["adapt"].items() if n < 5)
    if thin:
        warnings.append(
            gettext("Fewer than 5 reviewed cells to adapt on for: %(classes)s.") % {"classes": ", ".join(thin)}
        )
    return {
        "adapt_dir": parts["adapt"],
        "holdout_dir": parts["holdout"],
        "case_of": case_of,
        "cases": {"adapt": sorted(adapt_cases), "holdout": sorted(holdout_cases)},
        "counts": {part: dict(counter) for part, counter in counts.items()},
        "warnings": warnings,
    }


def laboratory_choices() -> list[tuple[int, str]]:
    """settings.LABORATORY_CHOICES: (id, name) of every laboratory, for the adaptation page."""
    from .models import Laboratory

    return [(lab.pk, str(lab)) for lab in Laboratory.objects.order_by("name", "pk")]
