"""The "frozen-head" recipe: transfer learning on cached activations, fast on a CPU.

1. The frozen bottom of the backbone runs once per image view (LiteRT, XNNPACK) and its activations at
   the fine-tuning boundary are cached on disk, with the pooled features of the frozen network. View 0
   is the plain image; views 1.. are augmented (`data.augment`).
2. Stage 1: a linear head on the frozen pooled features (seconds).
3. Stage 2: the top blocks of the backbone and the head are fine-tuned on the cached activations (batch
   norm frozen, class-balanced loss, early stopping on validation loss, best weights kept).
4. Calibration on validation: temperature, confidence threshold, out-of-distribution statistics.
5. Export to LiteRT with a parity check, and `metadata.json` describing the model version
   (``training_common.save_model_folder``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .data import AugmentationConfig, ImageDataset, model_input_pixels
from .export import export_raw_tflite, keras_outputs
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

RECIPE = "frozen-head"


@dataclass
class FrozenHeadConfig(RecipeConfig):
    # First backbone block fine-tuned in stage 2; None trains the head only.
    finetune_from: str | None = "block11"
    head_epochs: int = 40
    head_learning_rate: float = 1e-3
    # Share of the training folders held out for validation when no validation folder is given.
    val_fraction: float = 0.1


def train_frozen_head(
    *,
    config: FrozenHeadConfig,
    data: TrainingData,
    output_dir: Path,
    name: str,
    cache_dir: Path,
    progress: Callable = null_progress,
    log: Callable[[str], None] = logger.info,
) -> TrainingResult:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    import keras

    from .backbones import backbone_spec, get_backbone

    backbone_spec(config.backbone)  # an unknown name fails before any data is read
    dataset, train_set, val_set = load_training_data(data, seed=config.seed, val_fraction=config.val_fraction, log=log)
    classes = dataset.classes

    preprocessing = config.serving_preprocessing()
    keras.utils.set_random_seed(config.seed)
    backbone = get_backbone(config.backbone, input_size=config.input_size, weights=config.weights)
    split_tensor = _split_tensor(backbone, config)
    pooling = keras.layers.GlobalAveragePooling2D(name="features")
    features = pooling(backbone.output)

    # 1. Cache the frozen part's activations and pooled features.
    t0 = time.perf_counter()
    extractor = keras.Model(backbone.input, {"activations": split_tensor, "features": features})
    cache = FeatureCache(
        root=cache_dir,
        extractor=extractor,
        key=_cache_key(config, preprocessing, split_tensor),
        preprocessing=preprocessing,
        activation_shape=tuple(split_tensor.shape[1:]),
        num_threads=config.num_threads,
    )
    train_views = [
        cache.view(dataset=train_set, view=view, seed=config.seed, augmentation=config.augmentation, progress=progress)
        for view in range(max(1, config.views))
    ]
    val_view = cache.view(dataset=val_set, view=0, seed=config.seed, augmentation=None, progress=progress)
    timings["feature_cache_s"] = time.perf_counter() - t0

    # 2. Linear head on frozen features.
    t0 = time.perf_counter()
    class_weights = balanced_class_weights(train_set.labels, len(classes))
    head = keras.layers.Dense(len(classes), name="logits", kernel_regularizer=keras.regularizers.L2(1e-4))
    head_inputs = keras.Input((features.shape[-1],))
    head_model = keras.Model(head_inputs, head(head_inputs))
    head_model.compile(
        optimizer=keras.optimizers.Adam(config.head_learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x_head = np.concatenate([v.features for v in train_views])
    y_head = np.tile(train_set.labels, len(train_views))
    head_model.fit(
        x_head,
        y_head,
        sample_weight=class_weights[y_head],
        validation_data=(val_view.features, val_set.labels),
        epochs=config.head_epochs,
        batch_size=256,
        verbose=0,
        callbacks=[keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)],
    )
    head_accuracy = float(np.mean(np.argmax(head_model.predict(val_view.features, verbose=0), 1) == val_set.labels))
    timings["head_s"] = time.perf_counter() - t0
    log(f"stage 1 (frozen backbone, linear head): validation accuracy {head_accuracy:.4f}")

    logits = head(features)
    top = keras.Model(split_tensor, {"logits": logits, "features": features})

    # 3. Fine-tune the top blocks.
    finetune_accuracy = None
    epochs_run = 0
    if config.finetune_from and config.finetune_epochs > 0:
        from .backbones import set_trainable_blocks

        t0 = time.perf_counter()
        set_trainable_blocks(top, config.backbone, first_block=config.finetune_from)
        epochs_run = _finetune(
            top=keras.Model(split_tensor, logits),
            train_views=train_views,
            labels=train_set.labels,
            class_weights=class_weights,
            val_view=val_view,
            val_labels=val_set.labels,
            config=config,
        )
        timings["finetune_s"] = time.perf_counter() - t0
        val_logits, _ = keras_outputs(top, val_view.activations)
        finetune_accuracy = float(np.mean(val_logits.argmax(1) == val_set.labels))
        log(f"stage 2 (fine-tuned from {config.finetune_from}): validation accuracy {finetune_accuracy:.4f}")

    # 4. Calibration, thresholds and out-of-distribution statistics, all on validation data.
    t0 = time.perf_counter()
    if finetune_accuracy is None:
        # The backbone is unchanged: its pooled features are the cached ones.
        val_features = val_view.features.astype(np.float64)
        val_logits = np.asarray(head_model.predict(val_features, verbose=0), dtype=np.float64)
        ood_rows = np.arange(len(train_set))
        train_features = train_views[0].features.astype(np.float64)
    else:
        val_logits, val_features = keras_outputs(top, val_view.activations)
        # A random subset is enough for class means and a shrunk covariance, and spares a pass over all.
        ood_rows = np.sort(np.random.default_rng(config.seed).permutation(len(train_set))[: config.ood_fit_images])
        _, train_features = keras_outputs(top, train_views[0].activations[ood_rows])
    calibration = calibrate(
        val_logits=val_logits,
        val_features=val_features,
        val_labels=val_set.labels,
        ood_features=train_features,
        ood_labels=train_set.labels[ood_rows],
        classes=classes,
        config=config,
    )
    timings["calibration_s"] = time.perf_counter() - t0

    # 5. Export.
    classifier = keras.Model(backbone.input, {"logits": logits, "features": features}, name="classifier")
    sample = np.stack(
        [scale_pixels(model_input_pixels(path, preprocessing), preprocessing["scale"]) for path in val_set.paths[:16]]
    )
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
            "stage1_val_accuracy": head_accuracy,
            "stage2_val_accuracy": finetune_accuracy,
            "finetune_epochs_run": epochs_run,
        },
        timings=timings,
        started=started,
        log=log,
        recipe=RECIPE,
    )


def _split_tensor(backbone, config: FrozenHeadConfig):
    """The tensor where the frozen part ends: the input of the first fine-tuned block (or the output)."""
    from .backbones import backbone_spec, block_of_layer

    if not config.finetune_from:
        return backbone.output
    spec = backbone_spec(config.backbone)
    if config.finetune_from not in spec.block_prefixes:
        raise ValueError(
            f"{config.backbone} has no block {config.finetune_from!r}; its blocks are: {', '.join(spec.blocks)}"
        )
    for layer in backbone.layers:
        if block_of_layer(config.backbone, layer.name) == config.finetune_from:
            return layer.input
    raise ValueError(f"no layer of block {config.finetune_from} found in {config.backbone}")


def _cache_key(config: FrozenHeadConfig, preprocessing: dict, split_tensor) -> str:
    described = {
        "backbone": config.backbone,
        "weights": str(config.weights),
        "split": [config.finetune_from, list(split_tensor.shape[1:])],
        "preprocessing": preprocessing,
        "augmentation": asdict(config.augmentation),
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class CachedView:
    activations: np.ndarray  # [N, h, w, C] float16 (memory-mapped)
    features: np.ndarray  # [N, D] float32


class FeatureCache:
    """Activations of the frozen part of the backbone, one memory-mapped file per (dataset, view)."""

    def __init__(
        self, *, root: Path, extractor, key: str, preprocessing: dict, activation_shape: tuple, num_threads: int
    ):
        self.root = Path(root) / key
        self.activation_shape = activation_shape
        self.root.mkdir(parents=True, exist_ok=True)
        self.extractor = extractor
        self.preprocessing = preprocessing
        self.num_threads = num_threads
        self._runtime = None

    def _runtime_for(self):
        if self._runtime is None:
            from .runtimes import LiteRTRuntime

            path = self.root / "extractor.tflite"
            if not path.is_file():
                export_raw_tflite(self.extractor, path)
            self._runtime = LiteRTRuntime(path, num_threads=self.num_threads, outputs=("activations", "features"))
        return self._runtime

    def view(
        self, *, dataset: ImageDataset, view: int, seed: int, augmentation: AugmentationConfig | None, progress
    ) -> CachedView:
        tag = hashlib.sha256(f"{dataset.fingerprint()}:{view}".encode()).hexdigest()[:16]
        act_path = self.root / f"{tag}.activations.npy"
        feat_path = self.root / f"{tag}.features.npy"
        if act_path.is_file() and feat_path.is_file():
            return CachedView(np.load(act_path, mmap_mode="r"), np.load(feat_path))
        runtime = self._runtime_for()
        n = len(dataset)
        shape = self.activation_shape
        partial = act_path.with_suffix(".partial.npy")
        activations = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(n, *shape))
        features = None
        batch = 32
        bar = progress(f"caching view {view}", n)

        def pixels(index: int) -> np.ndarray:
            rng = None
            if view > 0 and augmentation is not None:
                rng = np.random.default_rng([seed, view, index])
            return model_input_pixels(dataset.paths[index], self.preprocessing, rng=rng, config=augmentation)

        with ThreadPoolExecutor(max_workers=2) as pool:
            for start in range(0, n, batch):
                indices = range(start, min(n, start + batch))
                x = scale_pixels(np.stack(list(pool.map(pixels, indices))), self.preprocessing["scale"])
                outputs = runtime.run_named(x)
                activations[start : start + len(indices)] = outputs["activations"].astype(np.float16)
                if features is None:
                    features = np.zeros((n, outputs["features"].shape[-1]), dtype=np.float32)
                features[start : start + len(indices)] = outputs["features"]
                bar.update(len(indices))
        bar.close()
        activations.flush()
        del activations
        partial.rename(act_path)
        np.save(feat_path, features)
        return CachedView(np.load(act_path, mmap_mode="r"), features)


def _finetune(*, top, train_views, labels, class_weights, val_view, val_labels, config: FrozenHeadConfig) -> int:
    """Fine-tune on cached activations; each epoch sees every image once, in a random cached view."""
    import keras

    class Views(keras.utils.PyDataset):
        def __init__(self, epoch_seed: int):
            super().__init__()
            self.rng = np.random.default_rng(epoch_seed)
            self.shuffle()

        def shuffle(self):
            self.order = self.rng.permutation(len(labels))
            self.view_of = self.rng.integers(0, len(train_views), size=len(labels))

        def __len__(self):
            return math.ceil(len(labels) / config.batch_size)

        def __getitem__(self, index):
            rows = np.sort(self.order[index * config.batch_size : (index + 1) * config.batch_size])
            x = np.empty((len(rows), *train_views[0].activations.shape[1:]), dtype=np.float32)
            for view in np.unique(self.view_of[rows]):
                chosen = rows[self.view_of[rows] == view]
                x[np.isin(rows, chosen)] = train_views[view].activations[chosen]
            y = labels[rows]
            return x, y, class_weights[y]

        def on_epoch_end(self):
            self.shuffle()

    steps = math.ceil(len(labels) / config.batch_size) * config.finetune_epochs
    schedule = keras.optimizers.schedules.CosineDecay(config.finetune_learning_rate, decay_steps=steps, alpha=0.05)
    top.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    val_x = np.asarray(val_view.activations, dtype=np.float32)
    history = top.fit(
        Views(config.seed),
        validation_data=(val_x, val_labels),
        epochs=config.finetune_epochs,
        verbose=1,
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
        ],
    )
    return len(history.history["loss"])
