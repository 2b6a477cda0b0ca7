"""The not-a-cell rules: rendered images, platelet-sized specks called leukocytes, far-out OOD scores."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from inference.analysis import _with_cell_flags, not_a_cell
from inference.locate import RENDERED_FLAT_FRACTION, LocatedCell, flat_fraction, locate_cells
from inference.predictor import CellPrediction
from tests.inference.smears import smear

CLASSES = ("LYMPHOCYTE", "NEUTROPHIL", "PLATELET")


def mock_up(*, seed: int = 0) -> Image.Image:
    """A drawn user interface: flat panels, round icons in stain-like purple, text."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (640, 480), (226, 222, 238))
    draw = ImageDraw.Draw(image)
    for _ in range(10):
        x, y = int(rng.integers(0, 560)), int(rng.integers(0, 420))
        draw.ellipse((x, y, x + 40, y + 40), fill=(105, 40, 145))
        draw.rectangle((x + 50, y, x + 150, y + 20), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw.text((x + 52, y + 4), "HematoVision", fill=(0, 0, 0))
    return image


def as_jpeg(image: Image.Image, quality: int = 70) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def prediction(label: str, *, ood: float | None = 1.0) -> CellPrediction:
    return CellPrediction(
        label=label, confidence=0.99, probabilities={label: 0.99}, flagged=False, ood_score=ood, latency_ms=1.0
    )


PREDICTOR = SimpleNamespace(classes=list(CLASSES), ood_threshold=5.0)


def located(image: Image.Image):
    location = locate_cells(image)
    assert location.cells, "the test image must have a stained object"
    return location


@pytest.mark.parametrize("image", [mock_up(), as_jpeg(mock_up(seed=1))], ids=["png", "jpeg"])
def test_a_drawn_interface_is_rendered_and_its_cells_are_not_cells(image):
    location = located(image)
    assert location.rendered
    cell = location.cells[location.main_cell]
    flagged = _with_cell_flags(prediction("LYMPHOCYTE"), PREDICTOR, location, cell)
    assert flagged.flagged and "not_a_cell" in flagged.flag_reasons


def test_a_camera_field_is_not_rendered_and_keeps_its_confident_class():
    image, _ = smear(leukocytes=[(200, 200), (450, 300)])
    location = located(image)
    assert flat_fraction(image) < RENDERED_FLAT_FRACTION and not location.rendered
    cell = location.cells[0]
    assert not not_a_cell(prediction("NEUTROPHIL"), PREDICTOR, location, cell)
    assert _with_cell_flags(prediction("NEUTROPHIL"), PREDICTOR, location, cell).flagged is False


def test_flat_fraction_of_noise_is_low_and_of_a_solid_colour_high():
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert flat_fraction(noisy) < 0.01
    assert flat_fraction(Image.new("RGB", (64, 64), (120, 40, 150))) == 1.0
    assert flat_fraction(Image.new("RGB", (1, 1))) == 1.0


def test_flat_fraction_of_a_large_image_reads_its_centre_only():
    image = Image.new("RGB", (3000, 2000), (200, 200, 200))
    centre = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8))
    image.paste(centre, (988, 488))
    assert flat_fraction(image) < 0.01


def test_a_platelet_sized_speck_in_a_crop_called_a_leukocyte_is_not_a_cell():
    image, _ = smear(size=(360, 360), leukocytes=[(180, 180)])
    location = located(image)
    speck = LocatedCell(box=(170, 170, 190, 190), kind="platelet", stain_area_px=40)
    crop = SimpleNamespace(layout="crop", rendered=False)
    assert not_a_cell(prediction("NEUTROPHIL"), PREDICTOR, crop, speck)
    assert not not_a_cell(prediction("PLATELET"), PREDICTOR, crop, speck)
    # In a field a platelet is classified in its own window: the rule is about crops classified whole.
    assert not not_a_cell(prediction("NEUTROPHIL"), PREDICTOR, SimpleNamespace(layout="field", rendered=False), speck)
    # A model without a platelet class cannot contradict the locator.
    no_platelets = SimpleNamespace(classes=["LYMPHOCYTE", "NEUTROPHIL"], ood_threshold=5.0)
    assert not not_a_cell(prediction("NEUTROPHIL"), no_platelets, crop, speck)
    assert location.layout == "crop"


def test_far_out_of_distribution_is_not_a_cell_and_missing_scores_are_not():
    image, _ = smear(leukocytes=[(200, 200)])
    location = located(image)
    cell = location.cells[0]
    assert not_a_cell(prediction("NEUTROPHIL", ood=15.1), PREDICTOR, location, cell)
    assert not not_a_cell(prediction("NEUTROPHIL", ood=14.9), PREDICTOR, location, cell)
    assert not not_a_cell(prediction("NEUTROPHIL", ood=None), PREDICTOR, location, cell)
