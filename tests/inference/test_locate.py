"""Finding cells: fields and crops, the red-cell scale, and what is not a cell."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from inference.field_data import detection_counts, read_manifest
from inference.locate import _iou, cell_window, classification_windows, locate_cells
from inference.testing import synthetic_cell_image
from tests.conftest import skip_or_fail
from tests.inference.smears import smear


def test_a_field_gives_every_leukocyte_with_its_box():
    image, boxes = smear(leukocytes=[(150, 150), (480, 320)])
    location = locate_cells(image)
    found = [cell.box for cell in location.cells if cell.kind == "leukocyte"]
    assert location.layout == "field"
    assert detection_counts(found, boxes) == (2, 0, 0)


def test_the_scale_comes_from_the_red_cells():
    image, _ = smear(rbc_diameter=40, leukocytes=[(320, 240)])
    location = locate_cells(image)
    assert location.scale_source == "red_cells"
    assert location.rbc_diameter_px == pytest.approx(40, rel=0.2)
    assert location.um_per_pixel == pytest.approx(7.5 / 40, rel=0.2)


def test_a_laboratory_scale_wins_over_the_red_cells():
    image, _ = smear(rbc_diameter=40, leukocytes=[(320, 240)])
    location = locate_cells(image, um_per_pixel=0.1)
    assert location.scale_source == "laboratory"
    assert location.window_px == round(5 * 7.5 / 0.1)


def test_a_crop_stays_one_cell_centred_and_classified_whole():
    image = synthetic_cell_image(0, 3, size=96)
    location = locate_cells(image)
    assert location.layout == "crop" and len(location.cells) == 1 and location.main_cell == 0
    assert classification_windows(image, location) == [image]


def test_boxes_are_in_the_upright_image():
    image, boxes = smear(size=(640, 480), leukocytes=[(150, 150)])
    rotated = image.transpose(Image.Transpose.ROTATE_90)  # 480 x 640, the cell now near the bottom left
    location = locate_cells(rotated)
    x0, y0, x1, y1 = boxes[0]
    expected = (y0, 640 - x1, y1, 640 - x0)
    assert max(_iou(cell.box, expected) for cell in location.cells) >= 0.5


@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("RGB", (360, 360), (110, 40, 150)),  # solid purple
        lambda: Image.new("RGB", (12, 12), (200, 100, 200)),  # tiny
        lambda: Image.fromarray(np.random.default_rng(0).integers(0, 256, (360, 360, 3), dtype=np.uint8)),  # noise
        lambda: smear(leukocytes=[])[0],  # red cells only
    ],
    ids=["solid-purple", "tiny", "noise", "red-cells-only"],
)
def test_images_without_a_leukocyte_or_platelet_find_none(make):
    assert locate_cells(make()).cells == []


def test_a_blue_button_and_a_purple_rectangle_are_not_cells():
    image = Image.new("RGB", (640, 480), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    draw.rectangle((100, 100, 220, 140), fill=(13, 110, 253))
    draw.rectangle((300, 300, 420, 360), fill=(110, 40, 150))
    assert locate_cells(image).cells == []


def test_a_window_leaving_the_image_is_padded_to_full_size():
    image, _ = smear(leukocytes=[(30, 30)])
    window = cell_window(image, (0, 0, 70, 70), 200)
    assert window.size == (200, 200)


def test_olympus_validation_fields_detection(settings):
    root = settings.SHARED_DATA_DIR / "datasets" / "olympus"
    if not (root / "MANIFEST.csv").is_file():
        skip_or_fail(f"olympus dataset not found at {root}")
    fields = [s for s in read_manifest(root, split="val", labelled_only=False) if s.has_boxes][:40]
    totals = np.zeros(3, dtype=int)
    for sample in fields:
        with Image.open(sample.path) as image:
            found = [c.box for c in locate_cells(image.convert("RGB")).cells if c.kind == "leukocyte"]
        totals += detection_counts(found, sample.leukocyte_boxes)
    true_positives, false_negatives, false_positives = totals
    assert true_positives / (true_positives + false_negatives) >= 0.9
    assert true_positives / (true_positives + false_positives) >= 0.85


def test_a_jpeg_with_exif_rotation_is_read_upright():
    from inference.preprocessing import to_rgb

    image, boxes = smear(leukocytes=[(150, 150)])
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.transpose(Image.Transpose.ROTATE_90).save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    upright = to_rgb(Image.open(buffer))
    assert upright.size == (640, 480)
    assert max(_iou(cell.box, boxes[0]) for cell in locate_cells(upright).cells) >= 0.5
