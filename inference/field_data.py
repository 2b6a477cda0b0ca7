"""Labelled microscope fields in the manifest layout (``MANIFEST.csv`` + optional ``BOXES.csv``), as the
olympus laboratory's release comes: whole fields, one labelled leukocyte each, and cell boxes.

Evaluation scores one cell per labelled field; training cuts that cell out at the canonical scale, the
same way serving does (``locate``), so a field cell reaches the model as an uploaded field's cell will.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .data import DatasetError, load_rgb
from .locate import Location, _iou, cell_window, locate_cells

MANIFEST_FILE = "MANIFEST.csv"
BOXES_FILE = "BOXES.csv"
MATCH_IOU = 0.5

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class FieldSample:
    path: Path
    label: str  # "" for fields that came with boxes only
    split: str
    leukocyte_boxes: tuple[Box, ...] = field(default_factory=tuple)
    has_boxes: bool = False


def is_manifest_layout(root: Path) -> bool:
    manifest = Path(root) / MANIFEST_FILE
    if not manifest.is_file():
        return False
    with open(manifest, newline="", encoding="utf-8") as stream:
        header = next(csv.reader(stream), [])
    return {"path", "label"} <= set(header)


def read_manifest(root: Path, *, split: str | None = None, labelled_only: bool = True) -> list[FieldSample]:
    """The fields of a manifest-layout folder (one split, or all), with their leukocyte boxes."""
    root = Path(root)
    if not is_manifest_layout(root):
        raise DatasetError(f"{root} has no {MANIFEST_FILE} with 'path' and 'label' columns")
    boxes: dict[str, list[Box]] = defaultdict(list)
    boxes_file = root / BOXES_FILE
    if boxes_file.is_file():
        with open(boxes_file, newline="", encoding="utf-8") as stream:
            for row in csv.DictReader(stream):
                if row["class"].upper() == "WBC":
                    boxes[row["path"]].append(tuple(int(row[key]) for key in ("xmin", "ymin", "xmax", "ymax")))
    samples = []
    with open(root / MANIFEST_FILE, newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            if split is not None and row.get("split") != split:
                continue
            if labelled_only and not row["label"]:
                continue
            samples.append(
                FieldSample(
                    path=root / row["path"],
                    label=row["label"],
                    split=row.get("split", ""),
                    leukocyte_boxes=tuple(boxes.get(row["path"], ())),
                    has_boxes=bool(row.get("boxes")),
                )
            )
    if not samples:
        raise DatasetError(f"no {'labelled ' if labelled_only else ''}fields in {root}{f' ({split})' if split else ''}")
    return samples


def scored_cell(
    boxes: Sequence[Box], kinds: Sequence[str], size: tuple[int, int], labelled: Sequence[Box]
) -> int | None:
    """Which found cell a labelled field's label is scored against: the one matching its labelled box
    (IoU >= 0.5) when there is one, else the only leukocyte found, else the found cell nearest the centre."""
    if not boxes:
        return None
    if len(labelled) == 1:
        best = max(range(len(boxes)), key=lambda i: _iou(labelled[0], boxes[i]))
        if _iou(labelled[0], boxes[best]) >= MATCH_IOU:
            return best
    leukocytes = [i for i, kind in enumerate(kinds) if kind == "leukocyte"]
    if len(leukocytes) == 1:
        return leukocytes[0]
    width, height = size
    candidates = leukocytes or list(range(len(boxes)))
    return min(
        candidates,
        key=lambda i: (
            ((boxes[i][0] + boxes[i][2]) / 2 - width / 2) ** 2 + ((boxes[i][1] + boxes[i][3]) / 2 - height / 2) ** 2
        ),
    )


def detection_counts(found: Sequence[Box], truth: Sequence[Box]) -> tuple[int, int, int]:
    """(true positives, false negatives, false positives) at IoU >= 0.5, each found box used once."""
    used: set[int] = set()
    true_positives = 0
    for box in truth:
        best = max((i for i in range(len(found)) if i not in used), key=lambda i: _iou(box, found[i]), default=None)
        if best is not None and _iou(box, found[best]) >= MATCH_IOU:
            used.add(best)
            true_positives += 1
    return true_positives, len(truth) - true_positives, len(found) - len(used)


def training_window(sample: FieldSample, location: Location) -> Box | None:
    """The labelled leukocyte's box for training, or None when the field is ambiguous (several labelled
    boxes, or several leukocytes found and none boxed): a wrong label teaches worse than a missing one."""
    if len(sample.leukocyte_boxes) > 1:
        return None
    if len(sample.leukocyte_boxes) == 1:
        return sample.leukocyte_boxes[0]
    leukocytes = [cell.box for cell in location.cells if cell.kind == "leukocyte"]
    return leukocytes[0] if len(leukocytes) == 1 else None


def export_cell_windows(root: Path, *, split: str, output_dir: Path) -> dict[str, int]:
    """Write the labelled cell of every unambiguous field of ``split`` as ``output_dir/<label>/<name>.png``,
    cut at the canonical scale as serving cuts it; returns the count per class (and "skipped")."""
    output_dir = Path(output_dir)
    counts: dict[str, int] = defaultdict(int)
    for sample in read_manifest(root, split=split):
        target = output_dir / sample.label / f"{sample.path.stem}.png"
        if target.is_file():
            counts[sample.label] += 1
            continue
        image = load_rgb(sample.path)
        location = locate_cells(image)
        box = training_window(sample, location)
        if box is None:
            counts["skipped"] += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial.png")
        cell_window(image, box, location.window_px).save(partial)
        partial.rename(target)
        counts[sample.label] += 1
    return dict(counts)
