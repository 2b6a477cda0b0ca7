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


@dataclass
class LabelledImages:
    """Labelled images of one or several laboratories, in either layout, ready for ``evaluate_images``."""

    classes: list[str]
    paths: list[Path] = field(default_factory=list)
    labels_list: list[int] = field(default_factory=list)
    labelled_boxes: list[tuple[Box, ...]] = field(default_factory=list)
    laboratories: list[str] = field(default_factory=list)

    @property
    def labels(self):
        import numpy as np

        return np.asarray(self.labels_list, dtype=np.int64)

    def evaluation_arguments(self) -> dict:
        return {
            "paths": self.paths,
            "labels": self.labels,
            "labelled_boxes": self.labelled_boxes,
            "laboratories": self.laboratories,
        }


SPLIT_NAMES = {"train", "val", "validation", "test"}


def laboratory_name(root: Path) -> str:
    """A folder's laboratory: its own name, or its parent's when it is a split (``pbc/test`` -> ``pbc``)."""
    root = Path(root).resolve()
    return root.parent.name if root.name.lower() in SPLIT_NAMES else root.name


def load_labelled(roots: Sequence[Path], *, classes: Sequence[str], split: str = "test") -> LabelledImages:
    """Class-folder roots (``root/<CLASS>/<image>``) and manifest-layout roots (fields of ``split`` with
    their labels and leukocyte boxes) together; labels outside ``classes`` are an error."""
    from .data import load_image_folder

    result = LabelledImages(classes=list(classes))
    for root in roots:
        laboratory = laboratory_name(root)
        if is_manifest_layout(root):
            for sample in read_manifest(root, split=split):
                if sample.label not in classes:
                    raise DatasetError(f"label {sample.label!r} of {sample.path} is not a class of the model")
                result.paths.append(sample.path)
                result.labels_list.append(list(classes).index(sample.label))
                result.labelled_boxes.append(sample.leukocyte_boxes)
                result.laboratories.append(laboratory)
        else:
            dataset = load_image_folder([root], classes=classes)
            result.paths.extend(dataset.paths)
            result.labels_list.extend(int(label) for label in dataset.labels)
            result.labelled_boxes.extend(() for _ in dataset.paths)
            result.laboratories.extend(laboratory for _ in dataset.paths)
    if not result.paths:
        raise DatasetError("no labelled images found")
    return result


def detection_metrics(root: Path, *, split: str = "test") -> dict | None:
    """Leukocyte detection on every field of ``split`` that has boxes (labelled or not), at IoU >= 0.5;
    None for a folder without boxes."""
    if not is_manifest_layout(root):
        return None
    fields = [sample for sample in read_manifest(root, split=split, labelled_only=False) if sample.has_boxes]
    if not fields:
        return None
    totals = [0, 0, 0]
    for sample in fields:
        found = [cell.box for cell in locate_cells(load_rgb(sample.path)).cells if cell.kind == "leukocyte"]
        for index, value in enumerate(detection_counts(found, sample.leukocyte_boxes)):
            totals[index] += value
    true_positives, false_negatives, false_positives = totals
    return {
        "detection_fields": len(fields),
        "detection_true_boxes": true_positives + false_negatives,
        "detection_recall": true_positives / max(1, true_positives + false_negatives),
        "detection_precision": true_positives / max(1, true_positives + false_positives),
    }
