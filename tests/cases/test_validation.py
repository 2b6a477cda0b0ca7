import pytest
from django.test import override_settings

from cases.validation import ImageRejected, validate_image
from tests.cases import images


def validate(data: bytes, name: str = "cell.jpg"):
    return validate_image(images.upload(name, data))


@pytest.mark.parametrize(
    ("data", "image_format", "content_type"),
    [
        (images.rgb_jpeg(), "JPEG", "image/jpeg"),
        (images.rgb_png(), "PNG", "image/png"),
        (images.encode(images.Image.new("RGB", (8, 8)), "TIFF"), "TIFF", "image/tiff"),
        (images.encode(images.Image.new("RGB", (8, 8)), "BMP"), "BMP", "image/bmp"),
    ],
)
def test_accepted_formats(data, image_format, content_type):
    result = validate(data, name="cell.bin")

    assert (result.image_format, result.content_type, result.size_bytes) == (image_format, content_type, len(data))


def test_file_is_judged_by_content_not_extension():
    assert validate(images.rgb_png(), name="looks-like.jpg").image_format == "PNG"


def test_cmyk_jpeg_is_accepted():
    assert validate(images.cmyk_jpeg()).content_type == "image/jpeg"


def test_16_bit_png_is_accepted():
    assert validate(images.png_16_bit(), name="deep.png").width == 8


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P"])
def test_grey_alpha_and_palette_pngs_are_accepted(mode):
    assert validate(images.encode(images.Image.new(mode, (8, 8)), "PNG"), name="x.png").height == 8


def test_exif_orientation_is_applied_to_the_recorded_size():
    result = validate(images.jpeg_with_orientation(6, size=(8, 4)))

    assert (result.width, result.height) == (4, 8)


def test_sha256_is_of_the_uploaded_bytes():
    import hashlib

    data = images.rgb_png()

    assert validate(data).sha256 == hashlib.sha256(data).hexdigest()


def test_zero_bytes_is_rejected():
    with pytest.raises(ImageRejected, match="empty"):
        validate(b"")


def test_text_renamed_jpg_is_rejected():
    with pytest.raises(ImageRejected, match="not an image that can be decoded"):
        validate(b"patient notes, not a picture\n" * 3)


def test_truncated_jpeg_is_rejected():
    with pytest.raises(ImageRejected, match="damaged or truncated"):
        validate(images.truncated_jpeg())


def test_png_declaring_50000_by_50000_pixels_is_rejected_without_decoding():
    with pytest.raises(ImageRejected, match="decompression bomb"):
        validate(images.png_declaring(50_000, 50_000), name="bomb.png")


@override_settings(MAX_UPLOAD_PIXELS=50)
def test_image_over_the_pixel_limit_is_rejected_with_its_size():
    with pytest.raises(ImageRejected, match="declares 8 × 8 pixels"):
        validate(images.rgb_png(size=(8, 8)))


def test_animated_gif_is_rejected():
    with pytest.raises(ImageRejected, match="GIF image, which is not accepted"):
        validate(images.animated_gif(), name="cells.gif")


def test_still_gif_is_rejected():
    with pytest.raises(ImageRejected, match="GIF image"):
        validate(images.single_frame_gif(), name="cell.gif")


def test_svg_is_rejected():
    with pytest.raises(ImageRejected, match="SVG"):
        validate(images.SVG, name="cell.svg")


def test_multipage_tiff_is_rejected():
    with pytest.raises(ImageRejected, match="2 frames"):
        validate(images.multipage_tiff(), name="stack.tif")


@override_settings(MAX_UPLOAD_BYTES=1000)
def test_oversized_file_is_rejected():
    with pytest.raises(ImageRejected, match=r"is \d+\.\d KB; the limit is 1000 bytes per image"):
        validate(images.noisy_png(size=(32, 32)), name="big.png")
