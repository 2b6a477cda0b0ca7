"""Backbones from ``keras.applications`` with offline-only ImageNet weights.

Keras downloads ImageNet weights on first use; this platform runs without internet, so weights come
from Keras' cache (``$KERAS_HOME/models`` or ``~/.keras/models``) or from a file the user names. Each
model is built with random weights and the file is loaded explicitly, so nothing ever tries to download.
Every model takes float RGB 0..255 and does its own input scaling.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import WeightsUnavailable, load_keras_weights

MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)
RESNET_RGB_MEAN = (123.68, 116.779, 103.939)  # caffe-style ImageNet means, RGB order
EFFICIENTNET_IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def imagenet_weights_filename(name: str, *, input_size: int, include_top: bool) -> str:
    """The file name under which Keras caches the ImageNet weights of ``name``."""
    if name == "mobilenet_v2":
        rows = input_size if input_size in MOBILENET_V2_SIZES else 224
        return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}{'' if include_top else '_no_top'}.h5"
    if name == "efficientnet_b0":
        return "efficientnetb0.h5" if include_top else "efficientnetb0_notop.h5"
    if name == "resnet50":
        return f"resnet50_weights_tf_dim_ordering_tf_kernels{'' if include_top else '_notop'}.h5"
    raise ValueError(f"no Keras ImageNet weights file is known for {name!r}")


def resolve_weights_file(name: str, weights, *, input_size: int, include_top: bool) -> Path | None:
    """Path of the weights to load, None for random initialisation; WeightsUnavailable if not on disk."""
    if weights is None:
        return None
    if weights == "imagenet":
        filename = imagenet_weights_filename(name, input_size=input_size, include_top=include_top)
        cached = keras_cache_dir() / filename
        if cached.is_file():
            return cached
        raise WeightsUnavailable(
            f"ImageNet weights for {name} are not in the Keras cache ({cached}) and cannot be downloaded "
            f"here. Copy {filename} (from https://storage.googleapis.com/keras-applications/) to "
            f"{keras_cache_dir()}, or pass --weights PATH to use a local file, or use the default backbone "
            f"efficientnet_lite0, whose weights ship with the platform."
        )
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailable(f"weights file not found: {path}")
    return path


def _build(name: str, keras, inputs, *, include_top: bool):
    layers = keras.layers
    applications = keras.applications
    if name == "mobilenet_v2":
        scaled = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="input_scaling")(inputs)
        return applications.MobileNetV2(input_tensor=scaled, include_top=include_top, weights=None, name=name)
    if name == "efficientnet_b0":
        # Keras' EfficientNet scales its own 0..255 input (Rescaling + Normalization inside).
        return applications.EfficientNetB0(input_tensor=inputs, include_top=include_top, weights=None, name=name)
    if name == "resnet50":
        # Caffe-style mean subtraction; the BGR channel order is absorbed into conv1's kernel on load.
        centred = layers.Rescaling(1.0, offset=[-mean for mean in RESNET_RGB_MEAN], name="input_scaling")(inputs)
        return applications.ResNet50(input_tensor=centred, include_top=include_top, weights=None, name=name)
    raise ValueError(f"{name!r} is not a keras.applications backbone")


def _adapt_loaded_imagenet_weights(name: str, model) -> None:
    if name == "resnet50":
        conv1 = model.get_layer("conv1_conv")
        kernel, bias = conv1.get_weights()
        conv1.set_weights([kernel[:, :, ::-1, :], bias])  # the weights expect BGR; the model is fed RGB
    elif name == "efficientnet_b0":
        # Keras adds Rescaling(1/sqrt(stddev)) after its Normalization only when it downloads the weights
        # itself; folding that factor into the variance gives the same outputs with a local file.
        normalization = next(layer for layer in model.layers if layer.__class__.__name__ == "Normalization")
        mean, variance, count = normalization.get_weights()
        normalization.set_weights([mean, variance * EFFICIENTNET_IMAGENET_STDDEV_RGB, count])


def keras_application_backbone(name: str, *, input_size: int, weights="imagenet", include_top: bool = False):
    weights_file = resolve_weights_file(name, weights, input_size=input_size, include_top=include_top)
    import keras

    inputs = keras.Input(shape=(input_size, input_size, 3), name="image")
    model = _build(name, keras, inputs, include_top=include_top)
    if weights_file is not None:
        load_keras_weights(model, weights_file)
        if not weights_file.name.endswith(".weights.h5"):
            # Keras' ImageNet files are legacy .h5; a Keras 3 .weights.h5 was saved from a model built
            # here, whose weights are already adapted.
            _adapt_loaded_imagenet_weights(name, model)
    return model
