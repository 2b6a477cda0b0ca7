import io

import numpy as np
import pytest
from PIL import Image

from inference.preprocessing import make_preprocessing, preprocess, preprocess_batch, scale_pixels, to_rgb


def test_to_rgb_applies_exif_orientation():
    image = Image.new("RGB", (4, 2), (255, 0, 0))
    image.putpixel((0, 0), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° clockwise when displayed
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=100)
    upright = to_rgb(Image.open(io.BytesIO(buffer.getvalue())))
    assert upright.size == (2, 4)


def test_to_rgb_converts_cmyk():
    assert to_rgb(Image.new("CMYK", (3, 3), (0, 0, 0, 0))).getpixel((1, 1)) == (255, 255, 255)


def test_to_rgb_scales_16_bit_grey_to_8_bit():
    image = Image.fromarray(np.full((3, 3), 65535, dtype=np.uint16))
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)


def test_to_rgb_composites_alpha_on_white():
    assert to_rgb(Image.new("RGBA", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)


def test_to_rgb_converts_palette_and_grey():
    assert to_rgb(Image.new("P", (2, 2))).mode == "RGB"
    assert to_rgb(Image.new("L", (2, 2), 7)).getpixel((0, 0)) == (7, 7, 7)


def test_preprocess_crops_centre_square_before_resizing():
    image = Image.new("RGB", (30, 10), (0, 0, 0))
    image.paste((255, 255, 255), (10, 0, 20, 10))
    array = preprocess(image, make_preprocessing(input_size=10, scale="raw"))
    assert array.shape == (10, 10, 3)
    assert array.min() == 255.0


def test_preprocess_batch_handles_mixed_sizes_and_modes():
    params = make_preprocessing(input_size=16, scale="lite")
    batch = preprocess_batch([Image.new("L", (40, 50)), Image.new("RGBA", (8, 8))], params)
    assert batch.shape == (2, 16, 16, 3)
    assert batch.dtype == np.float32


def test_scale_modes_map_pixel_ranges():
    pixels = np.array([[[0, 127, 255]]], dtype=np.uint8)
    assert np.allclose(scale_pixels(pixels, "lite"), [[[-127 / 128, 0.0, 1.0]]])
    assert np.allclose(scale_pixels(pixels, "tf"), [[[-1.0, 127 / 127.5 - 1, 1.0]]])


def test_make_preprocessing_rejects_unknown_filter():
    with pytest.raises(ValueError, match="resample"):
        make_preprocessing(input_size=32, resample="sinc")


@pytest.mark.parametrize(
    ("scale", "reference"), [("lite", lambda x: (x - 127.0) / 128.0), ("tf", lambda x: x / 127.5 - 1.0)]
)
def test_scaling_in_place_is_bit_identical_and_leaves_the_input(scale, reference):
    pixels = np.random.default_rng(0).integers(0, 256, size=(37, 41, 3), dtype=np.uint8)
    before = pixels.copy()
    scaled = scale_pixels(pixels, scale)
    assert scaled.dtype == np.float32
    assert np.array_equal(scaled, reference(pixels.astype(np.float32)))
    assert np.array_equal(pixels, before)
    floats = pixels.astype(np.float32)
    assert np.array_equal(scale_pixels(floats, scale), reference(pixels.astype(np.float32)))
    assert np.array_equal(floats, pixels.astype(np.float32))  # a float32 input is not scaled in place
