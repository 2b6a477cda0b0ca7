"""A tiny but real model version for tests of everything that classifies (cases, API, pages).

`build_tiny_model_version()` trains a small Keras CNN for a few steps on synthetic colour-coded
"cells" (class i is a disc of hue i / n on a pale background), exports it to LiteRT, fits its
out-of-distribution statistics, registers it and activates it. The files are built once per process
and re-registered for each test, since test databases roll back but the model store does not.
"""

from __future__ import annotations

import colorsys
import hashlib
import threading
import uuid
from pathlib import Path

import numpy as np
from django.conf import settings
from PIL import Image, ImageDraw

from .model_folder import (
    KERAS_ARTIFACT,
    METADATA_FILE,
    OOD_STATISTICS_FILE,
    SERVING_ARTIFACT,
    new_metadata,
    read_model_metadata,
    write_model_metadata,
)
from .models import ModelVersion
from .ood import MahalanobisScorer
from .preprocessing import make_preprocessing, preprocess_batch
from .services import activate_version, register_from_metadata

DEFAULT_TINY_CLASSES = ("LYMPHOCYTE", "NEUTROPHIL", "PLATELET")
_build_lock = threading.Lock()


def synthetic_cell_image(class_index: int, n_classes: int, *, size: int = 48, seed: int = 0) -> Image.Image:
    """An RGB image the tiny model learns to call class `class_index`: a disc of that class's hue (the
    cytoplasm) around a purple nucleus, which is what `locate` looks for in a stained smear."""
    rng = np.random.default_rng(seed)
    red, green, blue = colorsys.hsv_to_rgb(class_index / n_classes, 0.85, 0.8)
    image = Image.new("RGB", (size, size), (235, 225, 230))
    draw = ImageDraw.Draw(image)
    radius = size * rng.uniform(0.25, 0.4)
    cx, cy = size / 2 + rng.uniform(-size / 10, size / 10, size=2)
    draw.ellipse(
        (cx - radius, cy - radius, cx + radius, cy + radius), fill=(int(red * 255), int(green * 255), int(blue * 255))
    )
    nucleus = radius * 0.55
    draw.ellipse((cx - nucleus, cy - nucleus, cx + nucleus, cy + nucleus), fill=(110, 40, 150))
    noise = rng.normal(0, 6, size=(size, size, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _tiny_keras_model(*, n_classes: int, input_size: int):
    import keras
    from keras import layers

    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    features = layers.GlobalAveragePooling2D(name="features")(x)
    logits = layers.Dense(n_classes, name="logits")(features)
    return keras.Model(inputs, {"logits": logits, "features": features}, name="tiny_cnn")


def _build_files(directory: Path, *, classes: tuple[str, ...], input_size: int, seed: int) -> None:
    import keras

    from .export import check_parity, export_tflite

    keras.utils.set_random_seed(seed)
    preprocessing = make_preprocessing(input_size=input_size, scale="tf", resample="bilinear")
    n = len(classes)
    labels = np.arange(8 * n) % n
    images = [synthetic_cell_image(int(c), n, seed=seed * 1000 + i) for i, c in enumerate(labels)]
    x = preprocess_batch(images, preprocessing)
    model = _tiny_keras_model(n_classes=n, input_size=input_size)
    model.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
    )
    model.fit(x, {"logits": labels}, epochs=30, batch_size=len(labels), verbose=0)
    directory.mkdir(parents=True, exist_ok=True)
    export_tflite(model, directory / SERVING_ARTIFACT)
    check_parity(model, directory / SERVING_ARTIFACT, x[:4])
    model.save(directory / KERAS_ARTIFACT)
    features = np.asarray(model(x, training=False)["features"])
    scorer = MahalanobisScorer.fit(features, labels, n_classes=n)
    scorer.save(directory / OOD_STATISTICS_FILE)
    # Generous: the tiny model's features are crude, tests want in-distribution images not flagged.
    ood_threshold = float(scorer.score(features).max() * 3.0 + 1.0)
    write_model_metadata(
        directory,
        new_metadata(
            name=directory.name,
            backbone="tiny_cnn",
            classes=list(classes),
            input_size=input_size,
            preprocessing=preprocessing,
            ood_threshold=ood_threshold,
            training={"synthetic": True, "seed": seed},
        ),
    )


def build_tiny_model_version(
    *,
    classes: tuple[str, ...] = DEFAULT_TINY_CLASSES,
    input_size: int = 32,
    seed: int = 0,
    name: str | None = None,
    confidence_threshold: float = 0.0,
    activate: bool = True,
    actor=None,
) -> ModelVersion:
    classes = tuple(classes)
    digest = hashlib.sha256(repr((classes, input_size, seed)).encode()).hexdigest()[:12]
    directory = Path(settings.MODEL_STORE_DIR) / f"tiny-{digest}"
    with _build_lock:
        if not (directory / METADATA_FILE).is_file():
            _build_files(directory, classes=classes, input_size=input_size, seed=seed)
    metadata = read_model_metadata(directory)
    metadata["confidence_threshold"] = confidence_threshold
    version = register_from_metadata(
        metadata=metadata,
        source=ModelVersion.Source.TRAINED,
        artifact_dir=directory.name,
        name=name or f"{directory.name}-{uuid.uuid4().hex[:8]}",
        actor=actor,
    )
    if activate:
        activate_version(version, actor)
    return version
