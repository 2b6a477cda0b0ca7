"""The one preprocessing path shared by training, evaluation and serving.

Every model version stores the parameters of `preprocess` in `ModelVersion.preprocessing`; training
writes them, the predictor reads them back, so a served image goes through exactly the pixels the
model was trained on. Keep this module free of TensorFlow: serving workers import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageOps

RESAMPLING_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

# How pixel values (0..255 RGB) become model inputs.
#   lite:  (x - 127) / 128, the scaling EfficientNet-Lite's TF release was trained with
#   tf:    x / 127.5 - 1 (MobileNetV2, keras.applications "tf" mode)
#   torch: ImageNet mean/std on x / 255
#   caffe: BGR with ImageNet means subtracted (ResNet50)
#   raw:   x unchanged, for models that rescale inside the graph (keras EfficientNetB0)
SCALE_MODES = ("lite", "tf", "torch", "caffe", "raw")
CROP_MODES = ("center_square", "none")
# Views the classifier sees of each input at serving time, their logits and features averaged. A cell has
# no left or right, top or bottom; flipped views average out some of a single view's noise. Absent means
# "none" (models trained before this option).
#   none:       the input as it is
#   horizontal: the input and its mirror image (2 views)
#   dihedral4:  the input, mirrored, upside down, and both (4 views)
# "flip_skip_confidence" (optional): the flipped views run only for images whose plain view's calibrated
# confidence is below it (or whose OOD score is near the threshold): the predictor's _plain_view_is_sure.
TEST_TIME_FLIPS = ("none", "horizontal", "dihedral4")

_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)

PREPROCESSING_VERSION = 1


def make_preprocessing(
    *,
    input_size: int,
    scale: str = "lite",
    resample: str = "bilinear",
    crop: str = "center_square",
    test_time_flips: str = "none",
    flip_skip_confidence: float | None = None,
) -> dict[str, Any]:
    """The dict stored in ModelVersion.preprocessing; validated so a typo fails at training time."""
    params = {
        "version": PREPROCESSING_VERSION,
        "input_size": int(input_size),
        "scale": scale,
        "resample": resample,
        "crop": crop,
        "test_time_flips": test_time_flips,
    }
    if flip_skip_confidence is not None:
        params["flip_skip_confidence"] = flip_skip_confidence
    validate_preprocessing(params)
    return params


def validate_preprocessing(params: Mapping[str, Any]) -> None:
    size = params.get("input_size")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"preprocessing input_size must be an integer >= 8, got {size!r}")
    if params.get("scale") not in SCALE_MODES:
        raise ValueError(f"preprocessing scale must be one of {SCALE_MODES}, got {params.get('scale')!r}")
    if params.get("resample") not in RESAMPLING_FILTERS:
        raise ValueError(
            f"preprocessing resample must be one of {tuple(RESAMPLING_FILTERS)}, got {params.get('resample')!r}"
        )
    if params.get("crop") not in CROP_MODES:
        raise ValueError(f"preprocessing crop must be one of {CROP_MODES}, got {params.get('crop')!r}")
    if params.get("test_time_flips", "none") not in TEST_TIME_FLIPS:
        raise ValueError(
            f"preprocessing test_time_flips must be one of {TEST_TIME_FLIPS}, got {params.get('test_time_flips')!r}"
        )
    skip_at = params.get("flip_skip_confidence")
    if skip_at is not None and (
        isinstance(skip_at, bool) or not isinstance(skip_at, int | float) or not 0 <= skip_at <= 1
    ):
        raise ValueError(f"preprocessing flip_skip_confidence must be a number from 0 to 1, got {skip_at!r}")


def flipped_views(batch: np.ndarray, flips: str) -> list[np.ndarray]:
    """The views of a preprocessed batch [N, S, S, 3] that `test_time_flips` asks for, the batch first."""
    views = [batch]
    if flips in ("horizontal", "dihedral4"):
        views.append(batch[:, :, ::-1])
    if flips == "dihedral4":
        views += [batch[:, ::-1, :], batch[:, ::-1, ::-1]]
    return views


def view_count(flips: str) -> int:
    """How many views flipped_views gives each image."""
    return len(flipped_views(np.empty((0, 1, 1, 3), dtype=np.float32), flips))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any decodable image as 8-bit RGB, upright as its EXIF orientation says.

    Grey, 16-bit and float images are rescaled to 0..255; transparent pixels are composited on white
    (the background of a smear); CMYK and palette images are converted; multi-frame files use frame 0.
    """
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)
    try:
        image = ImageOps.exif_transpose(image)
    except (ValueError, TypeError, OSError, SyntaxError):
        # A malformed EXIF block must not make a readable image unusable; keep its stored orientation.
        pass
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _high_depth_grey_to_rgb(image)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot convert an image in mode {mode} to RGB: {exc}") from exc


def _high_depth_grey_to_rgb(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F" and values.size and values.max() <= 1.0:
        values = values * 255.0
    elif values.size and values.max() > 255:
        values = values / 257.0  # 65535 -> 255
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def fit_to_input(image: Image.Image, params: Mapping[str, Any]) -> Image.Image:
    """Crop and resize an RGB image to the model's square input, as its preprocessing says."""
    size = params["input_size"]
    if params["crop"] == "center_square":
        width, height = image.size
        side = min(width, height)
        if width != height:
            left = (width - side) // 2
            top = (height - side) // 2
            image = image.crop((left, top, left + side, top + side))
    if image.size != (size, size):
        image = image.resize((size, size), RESAMPLING_FILTERS[params["resample"]])
    return image


def scale_pixels(pixels: np.ndarray, scale: str) -> np.ndarray:
    """Map uint8 RGB pixels (..., 3) to the model's input range as float32."""
    x = pixels.astype(np.float32, copy=False)
    if scale in ("lite", "tf") and x is not pixels:
        # In place on the new float32 copy: the same operations in the same order as below, bit for bit,
        # without two more input-sized temporaries per image.
        if scale == "lite":
            x -= 127.0
            x /= 128.0
        else:
            x /= 127.5
            x -= 1.0
        return x
    if scale == "lite":
        return (x - 127.0) / 128.0
    if scale == "tf":
        return x / 127.5 - 1.0
    if scale == "torch":
        return (x - _TORCH_MEAN) / _TORCH_STD
    if scale == "caffe":
        return x[..., ::-1] - _CAFFE_MEAN_BGR
    if scale == "raw":
        return x.copy() if x is pixels else x
    raise ValueError(f"unknown scale mode {scale!r}")


def preprocess(image: Image.Image, params: Mapping[str, Any]) -> np.ndarray:
    """The model input (input_size, input_size, 3) float32 for one image of any size and mode."""
    rgb = fit_to_input(to_rgb(image), params)
    return scale_pixels(np.asarray(rgb, dtype=np.uint8), params["scale"])


def preprocess_batch(images: Iterable[Image.Image], params: Mapping[str, Any]) -> np.ndarray:
    validate_preprocessing(params)
    arrays = [preprocess(image, params) for image in images]
    size = params["input_size"]
    if not arrays:
        return np.zeros((0, size, size, 3), dtype=np.float32)
    return np.stack(arrays)
