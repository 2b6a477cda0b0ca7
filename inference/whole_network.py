"""Fine-tuning the whole network, batch norm folded, at a reduced internal resolution.

The classifier takes the usual preprocessed input (``input_size``, e.g. 224 px) and resizes it inside the
model (bilinear, as LiteRT's RESIZE_BILINEAR) to ``whole_network_size`` (e.g. 128 px) before the
backbone, so serving, evaluation and Grad-CAM are unchanged while training and serving cost about a third.
Every backbone layer is trained: batch norm is folded into the convolutions first (nothing left for small
batches to disturb). Training images are decoded once into memory (view 0 plain, views 1.. augmented as
in ``data.augment``, same seeds as the feature cache); each epoch picks one view per image and a random
flip/rotation. Calibration, out-of-distribution statistics and export as every recipe does
(``training_common``). This is the "whole-network" recipe, and the multi-laboratory one's training.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import ImageDataset, model_input_pixels, style_groups, style_mix, style_reference
from .export import keras_outputs
from .preprocessing import scale_pixels
from .training_common import (
    RecipeConfig,
    TrainingData,
    TrainingResult,
    balanced_class_weights,
    calibrate,
    load_training_data,
    null_progress,
    save_model_folder,
)

logger = logging.getLogger(__name__)

RECIPE = "whole-network"
WARMUP_FRACTION = 0.05
HEAD_DROPOUT = 0.2


@dataclass
class WholeNetworkConfig(RecipeConfig):
    # The backbone's internal resolution; the classifier takes ``input_size`` and resizes inside.
    whole_network_size: int = 128
    # Share of the training folders held out for validation when no validation folder is given.
    val_fraction: float = 0.1
    # Momentum of an exponential moving average of the weights, which replaces them when training ends
    # (0: the last step's weights).
    weight_average_momentum: float = 0.0


def load_views(dataset: ImageDataset, *, views: int, preprocessing: dict, config, progress):
    """uint8 pixels [views, N, S, S, 3]: view 0 plain, the others augmented (seeded per image and view).
    ``config`` needs ``seed``, ``num_threads`` and ``augmentation`` (a recipe's or adaptation's config)."""
    size = preprocessing["input_size"]
    pixels = np.empty((views, len(dataset), size, size, 3), dtype=np.uint8)
    # Style mixing takes its references from the plain view 0 of other folders' images, decoded first.
    groups = style_groups(dataset) if config.augmentation.style_mix_probability else None
    for view in range(views):
        bar = progress(f"decoding view {view}", len(dataset))

        def one(index: int, view=view) -> np.ndarray:
            rng = np.random.default_rng([config.seed, view, index]) if view > 0 else None
            array = model_input_pixels(dataset.paths[index], preprocessing, rng=rng, config=config.augmentation)
            if rng is not None and groups is not None:
                reference = pixels[0, style_reference(groups, index, rng=rng)]
                array = style_mix(array, reference, rng=rng, config=config.augmentation)
            return array

        with ThreadPoolExecutor(max_workers=max(1, config.num_threads)) as pool:
            for index, array in enumerate(pool.map(one, range(len(dataset)))):
                pixels[view, index] = array
                bar.update(1)
        bar.close()
    return pixels


def build_classifier(config, n_classes: int):
    """Input ``input_size`` -> resize -> folded backbone at ``whole_network_size`` -> pooled features ->
    logits; every backbone layer top-level (Grad-CAM and block names work as for other classifiers).
    ``config`` needs ``backbone``, ``weights``, ``input_size`` and ``whole_network_size``."""
    import keras

    from .backbones import get_backbone
    from .backbones.folding import fold_batch_norm
    from .backbones.tracing import trace_layers

    backbone = fold_batch_norm(
        get_backbone(config.backbone, input_size=config.whole_network_size, weights=config.weights)
    )
    inputs = keras.Input((config.input_size, config.input_size, 3), name="image")
    resized = keras.layers.Resizing(
        config.whole_network_size, config.whole_network_size, interpolation="bilinear", name="internal_resize"
    )(inputs)
    traced = trace_layers(backbone, inputs=inputs, feed=resized)
    features = keras.layers.GlobalAveragePooling2D(name="features")(traced.outputs)
    dropped = keras.layers.Dropout(HEAD_DROPOUT, name="head_dropout")(features)
    # A zero head: the first steps train it alone (no gradient reaches the backbone through zero weights).
    logits = keras.layers.Dense(
        n_classes, name="logits", kernel_initializer="zeros", kernel_regularizer=keras.regularizers.L2(1e-4)
    )(dropped)
    return keras.Model(inputs, {"logits": logits, "features": features}, name="classifier")


def dihedral_views(pixels: np.ndarray, rows, view_of, dihedral) -> np.ndarray:
    """uint8 [len(rows), S, S, 3]: for each row its chosen view (of ``pixels`` [views, N, S, S, 3]) under its
    flip/rotation code 0..7 (bit 2: mirror, bits 0-1: quarter turns)."""
    x = np.empty((len(rows), *pixels.shape[2:]), dtype=np.uint8)
    for out, row in enumerate(rows):
        image = pixels[view_of[row], row]
        k = dihedral[row]
        if k & 4:
            image = image[:, ::-1]
        x[out] = np.rot90(image, k & 3)
    return x


def _batches(pixels: np.ndarray, labels, weights, *, batch_size: int, seed: int | None):
    """A keras PyDataset over in-memory views: training (seed given) shuffles, picks a view per image and
    a random dihedral transform; evaluation (seed None) yields view 0 in order."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed) if seed is not None else None
            self.shuffle()

        def shuffle(self):
            n = pixels.shape[1]
            if self.rng is None:
                self.order, self.view_of, self.dihedral = np.arange(n), np.zeros(n, int), np.zeros(n, int)
            else:
                self.order = self.rng.permutation(n)
                self.view_of = self.rng.integers(0, pixels.shape[0], size=n)
                self.dihedral = self.rng.integers(0, 8, size=n)

        def __len__(self):
            return math.ceil(pixels.shape[1] / batch_size)

        def __getitem__(self, index):
            rows = self.order[index * batch_size : (index + 1) * batch_size]
            x = dihedral_views(pixels, rows, self.view_of, self.dihedral).astype(np.float32)
            if labels is None:
                return (x,)
            y = labels[rows]
            return x, y, weights[y]

        def on_epoch_end(self):
            if self.rng is not None:
                self.shuffle()

    return Batches()


def train_whole_network(
    *,
    config: WholeNetworkConfig,
    data: TrainingData,
    output_dir: Path,
    name: str,
    progress: Callable = null_progress,
    log: Callable[[str], None] = logger.info,
    recipe: str = RECIPE,
) -> TrainingResult:
    """Train on ``data`` with ``config`` (a ``WholeNetworkConfig`` or a recipe config built on it, whose
    ``val_fraction``, when it has one, splits validation off when ``data`` has no validation folders)."""
    import keras

    started = time.perf_counter()
    timings: dict[str, float] = {}
    dataset, train_set, val_set = load_training_data(
        data, seed=config.seed, val_fraction=getattr(config, "val_fraction", None), log=log
    )
    classes = dataset.classes
    preprocessing = config.serving_preprocessing()

    t0 = time.perf_counter()
    train_pixels = load_views(
        train_set, views=max(1, config.views), preprocessing=preprocessing, config=config, progress=progress
    )
    val_pixels = load_views(val_set, views=1, preprocessing=preprocessing, config=config, progress=progress)
    timings["decode_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    classifier = build_classifier(config, len(classes))
    class_weights = balanced_class_weights(train_set.labels, len(classes))
    trainer = keras.Model(classifier.input, classifier.output["logits"])
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    steps = steps_per_epoch * config.finetune_epochs
    warmup = max(1, int(steps * WARMUP_FRACTION))
    schedule = keras.optimizers.schedules.CosineDecay(
        config.finetune_learning_rate * 0.01,
        decay_steps=max(1, steps - warmup),
        alpha=0.01,
        warmup_target=config.finetune_learning_rate,
        warmup_steps=warmup,
    )
    momentum = getattr(config, "weight_average_momentum", 0.0)
    trainer.compile(
        optimizer=keras.optimizers.Adam(schedule, use_ema=momentum > 0, ema_momentum=momentum or 0.99),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = trainer.fit(
        _batches(train_pixels, train_set.labels, class_weights, batch_size=config.batch_size, seed=config.seed),
        validation_data=_batches(
            val_pixels, val_set.labels, np.ones(len(classes), np.float32), batch_size=64, seed=None
        ),
        epochs=config.finetune_epochs,
        verbose=2,
        callbacks=[
            # With a weight average the average is the result; restoring the best epoch would replace it.
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=config.patience, restore_best_weights=not momentum
            )
        ],
    )
    epochs_run = len(history.history["loss"])
    timings["finetune_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    val_logits, val_features = keras_outputs(classifier, val_pixels[0])
    finetune_accuracy = float(np.mean(val_logits.argmax(1) == val_set.labels))
    log(f"whole network at {config.whole_network_size} px: validation accuracy {finetune_accuracy:.4f}")
    ood_rows = np.sort(np.random.default_rng(config.seed).permutation(len(train_set))[: config.ood_fit_images])
    _, ood_features = keras_outputs(classifier, train_pixels[0][ood_rows])
    calibration = calibrate(
        val_logits=val_logits,
        val_features=val_features,
        val_labels=val_set.labels,
        ood_features=ood_features,
        ood_labels=train_set.labels[ood_rows],
        classes=classes,
        config=config,
    )
    timings["calibration_s"] = time.perf_counter() - t0

    sample = scale_pixels(val_pixels[0][:16], preprocessing["scale"])
    return save_model_folder(
        output_dir=output_dir,
        classifier=classifier,
        parity_sample=sample,
        name=name,
        config=config,
        classes=classes,
        preprocessing=preprocessing,
        calibration=calibration,
        train_dirs=data.described()[0],
        val_dir=data.described()[1],
        dataset=dataset,
        train_set=train_set,
        val_set=val_set,
        details={
            "stage1_val_accuracy": None,
            "stage2_val_accuracy": finetune_accuracy,
            "finetune_epochs_run": epochs_run,
            "history": {k: [round(float(v), 5) for v in vs] for k, vs in history.history.items()},
        },
        timings=timings,
        started=started,
        log=log,
        recipe=recipe,
    )
