"""One upload in, every cell out: locate the cells, cut each at the canonical scale, classify, and say
how sure the model is.

This is what the platform, `classify` and `evaluate` call; the predictor below it classifies windows. A window
imaged unlike every training laboratory (the model's imaging profile, `imaging`) is flagged `unfamiliar_imaging`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from .imaging import UNFAMILIAR_IMAGING, unfamiliar_windows
from .locate import LocatedCell, Location, classification_windows, locate_cells
from .predictor import CellPrediction, Predictor, get_predictor
from .preprocessing import to_rgb

# A cell this much farther out than the out-of-distribution threshold is unlike any blood cell the model
# knows (a photo, a screenshot, debris that took up stain), not just a cell from another laboratory.
NOT_A_CELL_OOD_FACTOR = 3.0
# The class of the small stained objects. A crop whose only stained object is this small holds no
# leukocyte, whatever the classifier, which sees the whole crop, makes of it.
PLATELET_CLASS = "PLATELET"


@dataclass(frozen=True)
class FoundCell:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the upright image, end-exclusive
    kind: str  # "leukocyte" | "platelet"
    crop: Image.Image  # the window the classifier saw (RGB, image pixels)
    prediction: CellPrediction


@dataclass(frozen=True)
class ImageAnalysis:
    layout: str  # "crop" | "field"
    size: tuple[int, int]  # upright (width, height)
    cells: list[FoundCell]  # [] is "no cell found"
    um_per_pixel: float | None
    scale_source: str  # "laboratory" | "red_cells" | "default"
    main_cell: int | None

    @property
    def main(self) -> FoundCell | None:
        return None if self.main_cell is None else self.cells[self.main_cell]


def analyse_images(
    images: Sequence[Image.Image], *, um_per_pixel: float | None = None, predictor: Predictor | None = None
) -> list[ImageAnalysis]:
    """Every cell of every image, classified in one batch. Images may be in any mode and orientation
    (they are made upright RGB first); raises ModelUnavailable as the predictor does."""
    predictor = predictor or get_predictor()
    uprights = [to_rgb(image) for image in images]
    locations = [locate_cells(image, um_per_pixel=um_per_pixel) for image in uprights]
    windows = [classification_windows(image, location) for image, location in zip(uprights, locations, strict=True)]
    all_windows = [window for image_windows in windows for window in image_windows]
    predictions = iter(predictor.predict(all_windows))
    unfamiliar = iter(unfamiliar_windows(predictor, all_windows))
    return [
        _analysis(
            location,
            image_windows,
            [
                _with_cell_flags(next(predictions), predictor, location, cell, unfamiliar_imaging=next(unfamiliar))
                for cell in location.cells
            ],
        )
        for location, image_windows in zip(locations, windows, strict=True)
    ]


def _analysis(location: Location, windows: list[Image.Image], predictions: list[CellPrediction]) -> ImageAnalysis:
    cells = [
        FoundCell(box=cell.box, kind=cell.kind, crop=window, prediction=prediction)
        for cell, window, prediction in zip(location.cells, windows, predictions, strict=True)
    ]
    return ImageAnalysis(
        layout=location.layout,
        size=location.size,
        cells=cells,
        um_per_pixel=location.um_per_pixel,
        scale_source=location.scale_source,
        main_cell=location.main_cell,
    )


def not_a_cell(prediction: CellPrediction, predictor: Predictor, location: Location, cell: LocatedCell) -> bool:
    """The found object is unlike any blood cell: far outside the training distribution, in a rendered
    image (screenshot, drawing), or a platelet-sized speck in a crop that the classifier calls a leukocyte."""
    threshold = predictor.ood_threshold
    if prediction.ood_score is not None and threshold is not None:
        if prediction.ood_score > NOT_A_CELL_OOD_FACTOR * threshold:
            return True
    if location.rendered:
        return True
    return (
        location.layout == "crop"
        and cell.kind == "platelet"
        and PLATELET_CLASS in predictor.classes
        and prediction.label != PLATELET_CLASS
    )


def _with_cell_flags(
    prediction: CellPrediction,
    predictor: Predictor,
    location: Location,
    cell: LocatedCell,
    *,
    unfamiliar_imaging: bool = False,
) -> CellPrediction:
    added = (UNFAMILIAR_IMAGING,) if unfamiliar_imaging else ()
    if not_a_cell(prediction, predictor, location, cell):
        added += ("not_a_cell",)
    if not added:
        return prediction
    reasons = tuple(dict.fromkeys((*prediction.flag_reasons, *added)))
    return CellPrediction(
        label=prediction.label,
        confidence=prediction.confidence,
        probabilities=prediction.probabilities,
        flagged=True,
        ood_score=prediction.ood_score,
        latency_ms=prediction.latency_ms,
        flag_reasons=reasons,
    )
