"""Grad-CAM: where in a cell image the classifier looked for a class (Selvaraju et al., 2017).

The gradient of the class score with respect to the last convolutional feature map, averaged over
space, weights that map's channels; their ReLU'd sum, scaled to [0, 1], is the heat map. It needs
the Keras model (gradients), not the serving export, so it works for model versions that have a
``keras_artifact``; TensorFlow is imported only when a heat map is computed, and each version's
model is loaded once per process.

The feature map is taken from the classifier's last top-level layer with a 4-D output: the last
convolution of a flat model, or the whole backbone when a classifier calls it as a nested layer.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .models import ModelVersion
from .preprocessing import preprocess, to_rgb
from .registry import artifact_path, get_active_version

OVERLAY_MAX_OPACITY = 0.6
MODEL_CACHE_SIZE = 2
CAM_FUNCTION_CACHE_SIZE = 4

_model_cache: OrderedDict[tuple, object] = OrderedDict()
_model_cache_lock = threading.Lock()
_compute_lock = threading.Lock()
_cam_functions: dict[tuple[int, str | None], tuple] = {}
_cam_function_lock = threading.Lock()


class GradCamUnavailable(RuntimeError):
    """No heat map can be computed for this model version; the message says why."""


def _last_feature_map_layer(keras_model, traced):
    for layer in reversed(keras_model.layers):
        if layer.__class__.__name__ == "InputLayer" or layer.name not in traced.layers:
            continue
        output = traced.layers[layer.name][1]
        if not isinstance(output, (list, tuple, dict)) and len(output.shape) == 4:
            return layer
    raise ValueError(f"{keras_model.name} has no layer with a 4-D (convolutional) output")


# The heat map of the last convolutional layer of a small-input network is a handful of cells (4x4 for the
# bundled model, which sees cells at 128 px) and comes out nearly uniform; the deepest layer whose map has at
# least this many cells on its shorter side keeps the class evidence and shows where in the cell it lies.
FINE_MAP_MIN_SIDE = 8
_fine_layers: dict[int, tuple] = {}


def fine_feature_layer_name(keras_model) -> str | None:
    """The deepest top-level layer with a 4-D output at least FINE_MAP_MIN_SIDE on its shorter side; None when
    the last feature map is already that fine or no layer is (then Grad-CAM uses the last one)."""
    cached = _fine_layers.get(id(keras_model))
    if cached is not None and cached[0]() is keras_model:
        return cached[1]
    from .backbones.tracing import trace_layers

    traced = trace_layers(keras_model)
    last = _last_feature_map_layer(keras_model, traced)
    name = None
    if min(traced.layers[last.name][1].shape[1:3]) < FINE_MAP_MIN_SIDE:
        for layer in reversed(keras_model.layers):
            if layer.__class__.__name__ == "InputLayer" or layer.name not in traced.layers:
                continue
            output = traced.layers[layer.name][1]
            if isinstance(output, (list, tuple, dict)) or len(output.shape) != 4:
                continue
            if min(output.shape[1:3]) >= FINE_MAP_MIN_SIDE:
                name = layer.name
                break
    _fine_layers[id(keras_model)] = (weakref.ref(keras_model), name)
    return name


def _softmax_dense(layer) -> bool:
    activation = getattr(layer, "activation", None)
    return layer.__class__.__name__ == "Dense" and getattr(activation, "__name__", "") == "softmax"


def _class_scores_tensor(keras_model, traced):
    """The tensor whose entries are the class scores: ``logits`` of a model with named outputs, or the
    pre-softmax input of a final softmax Dense layer (softmax saturates, so its gradient says little)."""
    output = traced.outputs
    if isinstance(output, Mapping):
        if "logits" not in output:
            raise ValueError(f"{keras_model.name} has named outputs {sorted(output)} but no 'logits'")
        return output["logits"], None
    if isinstance(output, (list, tuple)):
        output = output[0]
    last = keras_model.layers[-1]
    if _softmax_dense(last):
        return traced.layers[last.name][0], last
    return output, None


@dataclass(frozen=True)
class _CamFunction:
    compute: Callable  # (inputs [1, H, W, C], class index) -> class activation map [h, w], not normalised
    n_classes: int


def _build_cam_function(keras_model, layer_name: str | None) -> _CamFunction:
    import keras
    import tensorflow as tf

    from .backbones.tracing import trace_layers

    traced = trace_layers(keras_model)
    feature_layer = keras_model.get_layer(layer_name) if layer_name else _last_feature_map_layer(keras_model, traced)
    if feature_layer.name not in traced.layers:
        raise ValueError(f"{feature_layer.name} is not a top-level layer of {keras_model.name}")
    scores_tensor, softmax_dense = _class_scores_tensor(keras_model, traced)
    grad_model = keras.Model(traced.inputs, [traced.layers[feature_layer.name][1], scores_tensor])

    # Compiled once per model: eager execution of a whole backbone with a tape is several times slower.
    @tf.function(reduce_retracing=True)
    def compute(inputs, class_index):
        with tf.GradientTape() as tape:
            feature_maps, scores = grad_model(inputs, training=False)
            if softmax_dense is not None:
                scores = tf.matmul(scores, softmax_dense.kernel) + softmax_dense.bias
            class_score = tf.gather(scores, class_index, axis=1)
        gradients = tape.gradient(class_score, feature_maps)
        channel_weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(channel_weights * feature_maps, axis=-1))[0]

    n_classes = softmax_dense.units if softmax_dense is not None else scores_tensor.shape[-1]
    return _CamFunction(compute=compute, n_classes=int(n_classes))


def _cam_function(keras_model, layer_name: str | None) -> _CamFunction:
    key = (id(keras_model), layer_name)
    with _cam_function_lock:
        cached = _cam_functions.get(key)
        if cached is not None and cached[0]() is keras_model:
            return cached[1]
    function = _build_cam_function(keras_model, layer_name)
    with _cam_function_lock:
        _cam_functions[key] = (weakref.ref(keras_model), function)
        while len(_cam_functions) > CAM_FUNCTION_CACHE_SIZE:
            _cam_functions.pop(next(iter(_cam_functions)))
    return function


def gradcam_heatmap(keras_model, array: np.ndarray, class_index: int, layer_name: str | None = None) -> np.ndarray:
    """Heat map [h, w] in [0, 1] at the feature map's resolution, for one preprocessed image.

    ``array``: the model's input, shape [H, W, C] or [1, H, W, C]. ``layer_name``: a top-level layer
    with a 4-D output (default: the last one). All zeros when nothing in the image supports the class.
    """
    batch = np.asarray(array, dtype=np.float32)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[0] != 1:
        raise ValueError(f"expected one image of shape [H, W, C] or [1, H, W, C], got {batch.shape}")
    function = _cam_function(keras_model, layer_name)
    if not 0 <= class_index < function.n_classes:
        raise ValueError(f"class_index {class_index} is out of range for {function.n_classes} classes")
    cam = np.asarray(function.compute(batch, np.int32(class_index)), dtype=np.float64)
    peak = cam.max()
    return cam / peak if peak > 0 else np.zeros_like(cam)


def heat_colors(heatmap: np.ndarray) -> np.ndarray:
    """A jet-like colour ramp (blue -> green -> red) as uint8 RGB, without matplotlib."""
    h = np.clip(heatmap, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # where red, green and blue peak
    rgb = np.clip(1.5 - np.abs(4.0 * (h - centres)), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def overlay_heatmap(image: Image.Image, heatmap: np.ndarray, *, box: tuple[int, int, int, int] | None = None):
    """``image`` with ``heatmap`` blended over ``box`` (left, top, right, bottom; default the whole image).
    Opacity follows the heat, so regions the model ignored stay as they were."""
    rgb = to_rgb(image)
    width, height = rgb.size
    left, top, right, bottom = box or (0, 0, width, height)
    heat_image = Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype(np.uint8), mode="L")
    heat_image = heat_image.resize((right - left, bottom - top), Image.Resampling.BILINEAR)
    full_heat = np.zeros((height, width), dtype=np.float64)
    full_heat[top:bottom, left:right] = np.asarray(heat_image, dtype=np.float64) / 255.0
    alpha = (OVERLAY_MAX_OPACITY * full_heat)[..., None]
    base = np.asarray(rgb, dtype=np.float64)
    blended = base * (1.0 - alpha) + heat_colors(full_heat).astype(np.float64) * alpha
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB")


def _input_box(image: Image.Image, preprocessing: Mapping) -> tuple[int, int, int, int]:
    """The region of the image the model sees (preprocessing may crop to a centred square)."""
    width, height = image.size
    if preprocessing.get("crop") == "center_square" and width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return left, top, left + side, top + side
    return 0, 0, width, height


def _sha256_of_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_keras_model(version: ModelVersion):
    """The version's Keras model, checksum-verified and loaded once per process."""
    if not version.keras_artifact:
        raise GradCamUnavailable(
            f"model version {version.name} has no Keras model file, which Grad-CAM needs (only "
            f"{version.serving_artifact} is stored)."
        )
    path = artifact_path(version, version.keras_artifact)
    expected = (version.checksums or {}).get(version.keras_artifact, "")
    key = (version.pk, str(path), expected)
    with _model_cache_lock:
        if key in _model_cache:
            _model_cache.move_to_end(key)
            return _model_cache[key]
        if not path.is_file():
            raise GradCamUnavailable(f"Keras model file missing: {path} (model version {version.name})")
        if expected and _sha256_of_file(path) != expected:
            raise GradCamUnavailable(f"checksum mismatch for {path} (model version {version.name}); not loading it")
        try:
            import keras
        except ImportError as exc:
            raise GradCamUnavailable(
                "Grad-CAM needs TensorFlow on the web server (pip install -r requirements/ml.txt)"
            ) from exc

        try:
            model = keras.models.load_model(path, compile=False)
        except (ValueError, OSError, TypeError) as exc:
            raise GradCamUnavailable(f"cannot load {path} (model version {version.name}): {exc}") from exc
        _model_cache[key] = model
        while len(_model_cache) > MODEL_CACHE_SIZE:
            _model_cache.popitem(last=False)
        return model


def gradcam_overlay(image: Image.Image, class_name: str | None = None, version: ModelVersion | None = None):
    """The image (its own size) with a Grad-CAM heat map for ``class_name`` (default: the predicted
    class) under ``version`` (default: the active one). Raises GradCamUnavailable or ValueError."""
    rgb, heatmap, box = gradcam_map(image, class_name, version)
    return overlay_heatmap(rgb, heatmap, box=box)


def heatmap_image(size: tuple[int, int], heatmap: np.ndarray, *, box: tuple[int, int, int, int] | None = None):
    """The heat map alone as an RGBA image of ``size`` (width, height), for a viewer that lays it over the cell
    at an opacity of the reader's choice. The map is stretched to its own range (min -> 0, max -> 1) so a map
    that is high everywhere still shows where it is highest, and upsampled bicubically (no 7x7 blocks); outside
    ``box`` (what the model did not see) it is transparent. Colours follow ``heat_colors``."""
    width, height = size
    left, top, right, bottom = box or (0, 0, width, height)
    cam = np.asarray(heatmap, dtype=np.float64)
    low, high = float(cam.min()), float(cam.max())
    cam = (cam - low) / (high - low) if high > low else np.zeros_like(cam)
    resized = Image.fromarray(cam.astype(np.float32), mode="F").resize(
        (right - left, bottom - top), Image.Resampling.BICUBIC
    )
    stretched = np.clip(np.asarray(resized, dtype=np.float64), 0.0, 1.0)
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[top:bottom, left:right, :3] = heat_colors(stretched)
    rgba[top:bottom, left:right, 3] = 255
    return Image.fromarray(rgba, mode="RGBA")


def gradcam_map(
    image: Image.Image, class_name: str | None = None, version: ModelVersion | None = None, *, fine: bool = True
):
    """(upright RGB image, heat map [h, w] in [0, 1], the box of the image the model saw) for ``class_name``
    (default: the predicted class) under ``version`` (default: the active one). ``fine``: from the deepest
    feature map at least FINE_MAP_MIN_SIDE cells wide (fine_feature_layer_name), else from the last one."""
    version = version or get_active_version()
    if version is None:
        raise GradCamUnavailable("no active model version")
    classes = list(version.classes)
    if class_name is not None and class_name not in classes:
        raise ValueError(f"{class_name!r} is not a class of model version {version.name} ({', '.join(classes)})")
    model = load_keras_model(version)
    rgb = to_rgb(image)
    preprocessing = version.preprocessing
    array = preprocess(rgb, preprocessing)
    with _compute_lock:
        if class_name is None:
            class_index = _predicted_class(model, array)
        else:
            class_index = classes.index(class_name)
        layer_name = fine_feature_layer_name(model) if fine else None
        heatmap = gradcam_heatmap(model, array, class_index, layer_name)
    return rgb, heatmap, _input_box(rgb, preprocessing)


def _predicted_class(model, array: np.ndarray) -> int:
    output = model(array[None], training=False)
    if isinstance(output, Mapping):
        output = output["logits"]
    elif isinstance(output, (list, tuple)):
        output = output[0]
    return int(np.argmax(np.asarray(output)[0]))
