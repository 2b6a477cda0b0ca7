"""Importing a Keras classifier trained elsewhere (a .keras file, or a legacy .h5 such as the seeds'
Blood_Cell.h5: MobileNetV2 + global average pooling + Dense 128 + Dropout + Dense 4 softmax, input
224, pixels scaled by 1/255).

The imported model is rebuilt into the platform's serving form: it takes RGB pixels 0..255 (its own
pixel scaling becomes the first layer, so ``preprocessing.scale`` is "raw") and outputs ``logits``
(the final softmax's pre-activation) and ``features`` (the pooled features). That model is saved as
``model.keras`` (Grad-CAM uses it) and exported to ``model.tflite`` (served); the original file is kept
beside them. Images are resized to the input size without cropping, as Keras' image loaders did.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext

from audit.models import AuditEvent
from audit.services import record

from .backbones.tracing import trace_layers
from .model_folder import KERAS_ARTIFACT, SERVING_ARTIFACT
from .models import ModelVersion
from .preprocessing import make_preprocessing

logger = logging.getLogger(__name__)

BLOOD_CELL_CLASSES = ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL")
# Pixel scalings a legacy model may have been trained with, as (scale, offset) on 0..255 values.
SCALE_MODES = {"1/255": (1.0 / 255.0, 0.0), "-1..1": (1.0 / 127.5, -1.0), "none": None}
DEFAULT_SCALE = "1/255"
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
# The rebuilt model must reproduce the imported one; only float rounding may differ.
REBUILD_TOLERANCE = 1e-4
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")
POOLING_LAYERS = ("GlobalAveragePooling2D", "GlobalMaxPooling2D")


class ImportFailed(ValueError):
    """The file cannot be imported as a model; the message says why. Nothing was registered."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_classes(text: str | None) -> list[str] | None:
    if text is None:
        return None
    classes = [name.strip() for name in text.split(",") if name.strip()]
    if len(set(classes)) != len(classes):
        raise ImportFailed(gettext("class names must be distinct, got %(classes)s") % {"classes": classes})
    return classes


def load_keras_file(path: Path):
    if not path.is_file():
        raise ImportFailed(gettext("file not found: %(path)s") % {"path": path})
    if not path.name.lower().endswith(KERAS_SUFFIXES):
        raise ImportFailed(
            gettext("%(name)s is not a Keras model file (expected %(suffixes)s)")
            % {"name": path.name, "suffixes": ", ".join(KERAS_SUFFIXES)}
        )
    import keras

    try:
        # safe_mode refuses Lambda layers, whose deserialization could run arbitrary code.
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras and h5py raise many types for a file that is not a model
        raise ImportFailed(
            gettext("%(name)s is not a loadable Keras model: %(error)s") % {"name": path.name, "error": exc}
        ) from exc


def _square_input_size(model, requested: int | None) -> int:
    shapes = model.inputs
    if len(shapes) != 1 or len(shapes[0].shape) != 4:
        raise ImportFailed(
            gettext("expected one image input [N, H, W, 3], the model has inputs %(shapes)s") % {"shapes": shapes}
        )
    _, height, width, channels = shapes[0].shape
    if channels != 3:
        raise ImportFailed(
            gettext("expected RGB input with 3 channels, the model takes %(channels)s") % {"channels": channels}
        )
    if height != width:
        raise ImportFailed(
            gettext("expected a square input, the model takes %(height)sx%(width)s")
            % {"height": height, "width": width}
        )
    if height is None:
        if requested is None:
            raise ImportFailed(gettext("the model accepts any input size: give one with --input-size"))
        return requested
    if requested is not None and requested != height:
        raise ImportFailed(
            gettext("--input-size %(requested)s differs from the model's fixed input size %(size)s")
            % {"requested": requested, "size": height}
        )
    return int(height)


def _final_layer(model):
    if len(model.outputs) != 1:
        raise ImportFailed(
            gettext("expected a classifier with one output, the model has %(count)s") % {"count": len(model.outputs)}
        )
    return model.layers[-1]


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "") if activation is not None else ""


def _logits_tensor(final, traced):
    """The final layer's pre-softmax scores in the traced graph."""
    import keras

    layer_inputs, layer_outputs = traced[final.name]
    kind = final.__class__.__name__
    if kind == "Dense" and _activation_name(final) == "softmax":
        linear = keras.layers.Dense(final.units, activation=None, name=f"{final.name}_linear")
        logits = linear(layer_inputs)
        linear.set_weights(final.get_weights())
        return logits
    if kind == "Softmax" or (kind == "Activation" and _activation_name(final) == "softmax"):
        return layer_inputs
    if kind == "Dense" and _activation_name(final) == "linear":
        return layer_outputs
    raise ImportFailed(
        gettext(
            "the model's last layer (%(layer)s, %(kind)s %(activation)s) is not a softmax or linear classifier layer"
        )
        % {"layer": final.name, "kind": kind, "activation": _activation_name(final)}
    )


def _features_tensor(model, final, traced):
    pooling = [layer for layer in model.layers if layer.__class__.__name__ in POOLING_LAYERS]
    if pooling:
        return traced[pooling[-1].name][1]
    return traced[final.name][0]


def _backbone_name(model) -> str:
    nested = [layer for layer in model.layers if hasattr(layer, "layers") and layer.count_params()]
    source = max(nested, key=lambda layer: layer.count_params()) if nested else model
    return source.name[:60]


def build_serving_model(model, *, input_size: int, scale: str):
    """The imported model as a platform serving model: RGB 0..255 in, ``logits`` and ``features`` out."""
    import keras

    inputs = keras.Input((input_size, input_size, 3), name="image")
    scaling = SCALE_MODES[scale]
    scaled = inputs if scaling is None else keras.layers.Rescaling(*scaling, name="pixel_scaling")(inputs)
    traced = trace_layers(model, inputs=inputs, feed=scaled).layers
    final = _final_layer(model)
    logits = keras.layers.Identity(name="logits")(_logits_tensor(final, traced))
    features = keras.layers.Identity(name="features")(_features_tensor(model, final, traced))
    try:
        return keras.Model(inputs, {"logits": logits, "features": features}, name=f"{model.name}_serving")
    except ValueError as exc:
        raise ImportFailed(gettext("cannot rebuild the model for serving: %(error)s") % {"error": exc}) from exc


def _check_rebuild(model, serving_model, *, scale: str, sample: np.ndarray) -> float:
    """Largest difference between the imported model's probabilities and the rebuilt model's."""
    from .calibration import softmax

    scaling = SCALE_MODES[scale]
    scaled = sample if scaling is None else sample * scaling[0] + scaling[1]
    original = np.asarray(model(scaled, training=False), dtype=np.float64)
    logits = np.asarray(serving_model(sample, training=False)["logits"], dtype=np.float64)
    if _activation_name(model.layers[-1]) == "linear":
        original = softmax(original)
    difference = float(np.abs(original - softmax(logits)).max())
    if not difference <= REBUILD_TOLERANCE:
        raise ImportFailed(
            gettext("the rebuilt model differs from the imported one by %(difference)s; not importing it")
            % {"difference": f"{difference:.2e}"}
        )
    return difference


def _sample_pixels(input_size: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, size=(4, input_size, input_size, 3)).astype(np.float32)


def _resolve_classes(classes: Sequence[str] | None, n_outputs: int, notes: list[str]) -> list[str]:
    if classes is None:
        if n_outputs == len(BLOOD_CELL_CLASSES):
            notes.append(f"no classes given: assumed Blood_Cell.h5's {', '.join(BLOOD_CELL_CLASSES)} (in that order)")
            return list(BLOOD_CELL_CLASSES)
        raise ImportFailed(
            gettext("the model has %(count)s outputs: name its classes in output order with --classes")
            % {"count": n_outputs}
        )
    classes = list(classes)
    if len(classes) != n_outputs:
        raise ImportFailed(
            gettext("%(given)s classes given (%(classes)s) but the model has %(count)s outputs")
            % {"given": len(classes), "classes": ", ".join(classes), "count": n_outputs}
        )
    return classes


def import_keras_model(
    *,
    path: str | Path,
    name: str | None = None,
    classes: Sequence[str] | None = None,
    input_size: int | None = None,
    scale: str = DEFAULT_SCALE,
    activate: bool = False,
    actor=None,
) -> ModelVersion:
    """Copy, rebuild, export, verify and register a Keras model file as a ModelVersion (source=imported).

    Raises ImportFailed with a message for the user; on failure nothing is registered or left behind.
    The import (and activation, if asked) is audited.
    """
    path = Path(path)
    if scale not in SCALE_MODES:
        raise ImportFailed(
            gettext("unknown pixel scaling %(scale)s; choose one of %(modes)s")
            % {"scale": repr(scale), "modes": ", ".join(SCALE_MODES)}
        )
    model = load_keras_file(path)
    file_sha256 = sha256_of(path)
    name = name or f"{path.stem}-{file_sha256[:8]}"
    if not NAME_PATTERN.match(name):
        raise ImportFailed(
            gettext("model name %(name)s must be letters, digits, '.', '_' or '-' (at most 120)") % {"name": repr(name)}
        )
    if ModelVersion.objects.filter(name=name).exists():
        raise ImportFailed(
            gettext("a model version named %(name)s already exists; choose another --name") % {"name": repr(name)}
        )
    store = Path(settings.MODEL_STORE_DIR)
    destination = store / name
    if destination.exists():
        raise ImportFailed(
            gettext("%(path)s already exists; choose another --name or remove that directory") % {"path": destination}
        )

    notes: list[str] = []
    size = _square_input_size(model, input_size)
    n_outputs = model.outputs[0].shape[-1]
    classes = _resolve_classes(classes, n_outputs, notes)
    if scale == DEFAULT_SCALE:
        notes.append(f"pixels scaled by {scale} (the default, as Blood_Cell.h5 was trained)")
    serving_model = build_serving_model(model, input_size=size, scale=scale)
    sample = _sample_pixels(size)
    rebuild_difference = _check_rebuild(model, serving_model, scale=scale, sample=sample)

    from .export import check_parity, export_tflite

    store.mkdir(parents=True, exist_ok=True)
    staging = store / f".importing-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        shutil.copy2(path, staging / path.name)
        serving_model.save(staging / KERAS_ARTIFACT)
        export_tflite(serving_model, staging / SERVING_ARTIFACT)
        export_difference = check_parity(serving_model, staging / SERVING_ARTIFACT, sample)
        checksums = {
            filename: sha256_of(staging / filename) for filename in (path.name, KERAS_ARTIFACT, SERVING_ARTIFACT)
        }
        staging.rename(destination)
    except ImportFailed:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to write or export must leave nothing behind
        shutil.rmtree(staging, ignore_errors=True)
        raise ImportFailed(gettext("exporting %(name)s failed: %(error)s") % {"name": path.name, "error": exc}) from exc

    import_details = {
        "original_file": path.name,
        "original_sha256": file_sha256,
        "pixel_scaling": scale,
        "rebuild_difference": rebuild_difference,
        "export_difference": export_difference,
        "notes": notes,
    }
    try:
        with transaction.atomic():
            version = _register(
                name=name,
                backbone=_backbone_name(model),
                classes=classes,
                size=size,
                checksums=checksums,
                import_details=import_details,
                actor=actor,
            )
            record(
                action=AuditEvent.Action.MODEL_IMPORTED,
                actor=actor,
                obj=version,
                details={"name": name, "classes": classes, "input_size": size, **import_details},
            )
            if activate:
                from .services import activate_version

                activate_version(version, actor)
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    logger.info("imported model %s from %s as version %s", path.name, file_sha256[:12], name)
    return version


def _register(*, name, backbone, classes, size, checksums, import_details, actor) -> ModelVersion:
    from .services import register_version

    return register_version(
        name=name,
        source=ModelVersion.Source.IMPORTED,
        backbone=backbone,
        classes=classes,
        input_size=size,
        preprocessing=make_preprocessing(input_size=size, scale="raw", resample="bilinear", crop="none"),
        artifact_dir=name,
        serving_artifact=SERVING_ARTIFACT,
        keras_artifact=KERAS_ARTIFACT,
        training={"imported": import_details},
        checksums=checksums,
        actor=actor,
    )
