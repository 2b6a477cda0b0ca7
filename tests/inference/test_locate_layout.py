"""Crop or field: an upload larger than a crop is one cell only when it spans about one window (five red-cell
diameters) on its long side; a high-magnification field keeps all its cells."""

import pytest
from PIL import ImageDraw

from inference.locate import CROP_MAX_WINDOWS, WINDOW_RBC_DIAMETERS, locate_cells
from inference.testing import synthetic_cell_image
from tests.inference.smears import NUCLEUS, smear


def high_magnification_field():
    """640 x 480 with red cells 75 px across: 1.28 windows on the short side, 1.71 on the long one."""
    image, boxes = smear(size=(640, 480), rbc_diameter=75, leukocytes=[(220, 240)], red_cells=18, seed=2)
    ImageDraw.Draw(image).ellipse((520, 60, 542, 82), fill=NUCLEUS)  # a platelet away from the leukocyte
    return image, boxes


def test_a_high_magnification_field_is_a_field_with_its_platelet():
    image, _ = high_magnification_field()
    location = locate_cells(image)
    assert location.rbc_diameter_px == pytest.approx(75, rel=0.2)
    assert min(image.size) <= CROP_MAX_WINDOWS * location.window_px < max(image.size)  # the case in question
    assert location.layout == "field"
    assert sorted(cell.kind for cell in location.cells) == ["leukocyte", "platelet"]


def test_a_large_image_one_window_across_is_a_crop():
    rbc = 112
    image, _ = smear(size=(560, 560), rbc_diameter=rbc, leukocytes=[(280, 280)], red_cells=10, seed=1)
    location = locate_cells(image)
    assert max(image.size) <= CROP_MAX_WINDOWS * WINDOW_RBC_DIAMETERS * rbc
    assert location.layout == "crop" and len(location.cells) == 1


@pytest.mark.parametrize("size", [96, 360, 450])
def test_images_up_to_crop_size_stay_crops(size):
    location = locate_cells(synthetic_cell_image(0, 3, size=size))
    assert location.layout == "crop"
