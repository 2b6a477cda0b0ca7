"""Upload validation: a file is judged by decoding it with Pillow, never by its name or declared type.

The declared pixel count is checked from the header before any pixel is decoded, so a small file that
claims billions of pixels (a decompression bomb) is refused without exhausting memory.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from io import BytesIO

from django.conf import settings
from django.utils.translation import gettext
from PIL import Image, ImageMode, UnidentifiedImageError

from inference.preprocessing import to_rgb

ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff", "BMP": "image/bmp"}
ACCEPTED_DESCRIPTION = "JPEG, PNG, TIFF or BMP"
# Formats Pillow may recognise but this platform refuses, named so the message says what the file is.
KNOWN_REFUSED_FORMATS = {"GIF", "WEBP", "ICO", "PSD", "PDF", "EPS", "MPO", "APNG"}


class ImageRejected(ValueError):
    """The file is not an acceptable cell image; str(exc) is the message shown to the user."""


@dataclass(frozen=True)
class ValidatedImage:
    data: bytes
    sha256: str
    size_bytes: int
    width: int
    height: int
    image_format: str
    content_type: str
    # The decoded upright RGB picture, for whoever needs its pixels next (the thumbnail): decoded once.
    picture: Image.Image | None = field(default=None, repr=False, compare=False)


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def _looks_like_svg(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith((b"<svg", b"<?xml", b"<!doctype svg")) and b"<svg" in head.lower()


def read_upload(uploaded_file, *, limit: int) -> bytes:
    """At most limit + 1 bytes of the upload, enough to tell whether it is over the limit."""
    if hasattr(uploaded_file, "seek"):
        uploaded_file.seek(0)
    if hasattr(uploaded_file, "chunks"):
        data = bytearray()
        for chunk in uploaded_file.chunks():
            data.extend(chunk)
            if len(data) > limit:
                break
        return bytes(data[: limit + 1])
    return uploaded_file.read(limit + 1)


def validate_image(uploaded_file) -> ValidatedImage:
    """Raise ImageRejected with a clear message, or return the bytes and what was learnt from decoding them."""
    # Set by the upload handler (hematovision/uploads.py) for a file it did not keep: too large, one too many.
    refusal = getattr(uploaded_file, "upload_refusal", "")
    if refusal:
        raise ImageRejected(refusal)
    max_bytes = settings.MAX_UPLOAD_BYTES
    max_pixels = settings.MAX_UPLOAD_PIXELS
    declared_size = getattr(uploaded_file, "size", None)
    if declared_size is not None and declared_size > max_bytes:
        raise ImageRejected(
            gettext("is %(size)s; the limit is %(limit)s per image.")
            % {"size": human_size(declared_size), "limit": human_size(max_bytes)}
        )
    data = read_upload(uploaded_file, limit=max_bytes)
    if not data:
        raise ImageRejected(gettext("is empty (0 bytes)."))
    if len(data) > max_bytes:
        raise ImageRejected(
            gettext("is larger than %(limit)s, the limit per image.") % {"limit": human_size(max_bytes)}
        )
    if _looks_like_svg(data[:1024]):
        raise ImageRejected(
            gettext("is an SVG drawing, not a microscope photograph; upload %(formats)s images.")
            % {"formats": ACCEPTED_DESCRIPTION}
        )

    with warnings.catch_warnings():
        # Pillow's own bomb limit is a warning below 2x; the platform's limit is checked explicitly below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageRejected(
                gettext(
                    "declares far more pixels than the limit of %(limit)s per image (a possible decompression bomb); "
                    "it was not decoded."
                )
                % {"limit": f"{max_pixels:,}"}
            ) from exc
        except UnidentifiedImageError as exc:
            raise ImageRejected(
                gettext("is not an image that can be decoded (wrong or unknown file type); upload %(formats)s images.")
                % {"formats": ACCEPTED_DESCRIPTION}
            ) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageRejected(gettext("could not be read as an image: %(error)s.") % {"error": exc}) from exc
        with image:
            return _check_decoded(image, data, max_pixels=max_pixels)


def decoded_bytes(image: Image.Image) -> int:
    """What the picture takes once decoded, from its header: width × height × bands × bytes per sample at the
    file's own depth (a 16-bit sample counts 2 bytes; Pillow may report a 16-bit RGB file as mode RGB, so the
    raw mode of its tiles is read too), and at least 3 bytes a pixel, the RGB it becomes."""
    mode = ImageMode.getmode(image.mode)
    sample_bytes = int(mode.typestr[-1]) if mode.typestr[-1].isdigit() else 1
    for tile in image.tile or ():
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else "")
        if isinstance(rawmode, str):
            if ";16" in rawmode:
                sample_bytes = max(sample_bytes, 2)
            elif ";32" in rawmode:
                sample_bytes = max(sample_bytes, 4)
    per_pixel = max(len(mode.bands) * sample_bytes, 3)
    return image.width * image.height * per_pixel


def _check_decoded(image: Image.Image, data: bytes, *, max_pixels: int) -> ValidatedImage:
    image_format = image.format or "unknown"
    if image_format not in ACCEPTED_FORMATS:
        if image_format in KNOWN_REFUSED_FORMATS:
            message = gettext("is a %(format)s image, which is not accepted; upload %(formats)s images.")
        else:
            message = gettext("is in %(format)s format, which is not accepted; upload %(formats)s images.")
        raise ImageRejected(message % {"format": image_format, "formats": ACCEPTED_DESCRIPTION})
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageRejected(
            gettext("declares an empty picture (%(width)s × %(height)s pixels).") % {"width": width, "height": height}
        )
    if width * height > max_pixels:
        raise ImageRejected(
            gettext(
                "declares %(width)s × %(height)s pixels (%(pixels)s); the limit is %(limit)s pixels (40 megapixels) "
                "per image."
            )
            % {
                "width": f"{width:,}",
                "height": f"{height:,}",
                "pixels": f"{width * height:,}",
                "limit": f"{max_pixels:,}",
            }
        )
    decoded = decoded_bytes(image)
    max_decoded = settings.MAX_DECODED_BYTES
    if decoded > max_decoded:
        raise ImageRejected(
            gettext(
                "would take %(size)s once decoded (%(width)s × %(height)s pixels at %(bytes)s bytes each); the limit "
                "is %(limit)s of decoded pixels per image. It was not decoded."
            )
            % {
                "size": human_size(decoded),
                "width": f"{width:,}",
                "height": f"{height:,}",
                "bytes": decoded // (width * height),
                "limit": human_size(max_decoded),
            }
        )
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise ImageRejected(
            gettext("contains %(frames)s frames (animated or multi-page); upload each cell as a single-frame image.")
            % {"frames": frames}
        )
    try:
        image.load()
        upright = to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise ImageRejected(
            gettext("declares more pixels than the limit of %(limit)s per image.") % {"limit": f"{max_pixels:,}"}
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(
            gettext("is damaged or truncated and cannot be decoded (%(error)s).") % {"error": exc}
        ) from exc
    return ValidatedImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        width=upright.width,
        height=upright.height,
        image_format=image_format,
        content_type=ACCEPTED_FORMATS[image_format],
        picture=upright,
    )
