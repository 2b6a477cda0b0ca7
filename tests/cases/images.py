"""Tiny generated image files, good and bad, for upload tests."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO

from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from inference.testing import synthetic_cell_image


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def upload(name: str, data: bytes, content_type: str = "application/octet-stream") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type=content_type)


def rgb_jpeg(size=(8, 8), colour=(200, 40, 90)) -> bytes:
    return encode(Image.new("RGB", size, colour), "JPEG")


def rgb_png(size=(8, 8), colour=(20, 140, 90)) -> bytes:
    return encode(Image.new("RGB", size, colour), "PNG")


def cell_png(class_index: int = 0, n_classes: int = 3, *, seed: int = 0) -> bytes:
    """A picture the tiny test model recognises as class `class_index`."""
    return encode(synthetic_cell_image(class_index, n_classes, seed=seed), "PNG")


def noisy_png(size=(64, 64), seed: int = 1) -> bytes:
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG")


def truncated_jpeg() -> bytes:
    import numpy as np

    pixels = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels), "JPEG", quality=90)
    return data[: len(data) // 2]


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels, with almost no pixel data: a decompression bomb."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (8, 8), (10, 200, 30, 0)), "JPEG")


def png_16_bit() -> bytes:
    image = Image.new("I;16", (8, 8))
    image.putdata([i * 1000 for i in range(64)])
    return encode(image, "PNG")


def animated_gif() -> bytes:
    frames = [Image.new("P", (8, 8), index) for index in range(2)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def single_frame_gif() -> bytes:
    return encode(Image.new("P", (8, 8), 3), "GIF")


def multipage_tiff() -> bytes:
    pages = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    return encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect/></svg>'


def jpeg_with_orientation(orientation: int, size=(8, 4)) -> bytes:
    image = Image.new("RGB", size, (120, 60, 30))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes())
