"""Transfer learning on an ImageFolder dataset, fast on a CPU.

1. The frozen bottom of the backbone runs once per image view (LiteRT, XNNPACK) and its activations at
   the fine-tuning boundary are cached on disk, with the pooled features of the frozen network. View 0
   is the plain image; views 1.. are augmented (`data.augment`).
2. Stage 1: a linear head on the frozen pooled features (seconds).
3. Stage 2: the top blocks of the backbone and the head are fine-tuned on the cached activations (batch
   norm frozen, class-balanced loss, early stopping on validation loss, best weights kept).
4. Calibration on validation: temperature, confidence threshold, out-of-distribution statistics.
5. Export to LiteRT with a parity check, and `metadata.json` describing the model version.

Nothing here imports Django: commands and services register the result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .artifacts import write_model_metadata
from .calibration import choose_confidence_threshold, fit_temperature, softmax
from .data import (
    AugmentationConfig,
    DatasetError,
    ImageDataset,
    load_image_folder,
    model_input_pixels,
    stratified_split,
)
from .evaluation import compute_metrics
from .export import (
    FLOAT16_PARITY_TOLERANCE,
    PARITY_TOLERANCE,
    check_parity,
    export_raw_tflite,
    export_tflite,
    keras_outputs,
)
from .ood import OOD_STATISTICS_FILE, MahalanobisScorer, choose_ood_threshold
from .preprocessing import make_preprocessing, scale_pixels

logger = logging.getLogger(__name__)

SERVING_ARTIFACT = "model.tflite"
KERAS_ARTIFACT = "model.keras"


@dataclass
class TrainingConfig:
    backbone: str = "efficientnet_lite0"
    input_size: int = 224
    weights: str | None = "imagenet"
    # First backbone block fine-tuned in stage 2; None trains the head only.
    finetune_from: str | None = "block11"
    # When set, the whole network (batch norm folded) is fine-tuned at this internal resolution instead,
    # the classifier resizing its ``input_size`` input inside (``whole_network.train_whole_network``).
    whole_network_size: int | None = None
    views: int = 4
    head_epochs: int = 40
    finetune_epochs: int = 6
    batch_size: int = 32
    head_learning_rate: float = 1e-3
    finetune_learning_rate: float = 3e-4
    patience: int = 2
    seed: int = 0
    val_fraction: float = 0.1
    resample: str = "bilinear"
    num_threads: int = 2
    # The confidence threshold keeps at least this validation accuracy among unflagged predictions...
    target_accuracy: float = 0.995
    # ...while flagging at most this share of validation images.
    max_flagged: float = 0.05
    ood_quantile: float = 0.99
    ood_fit_images: int = 4000
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)


@dataclass
class TrainingResult:
    output_dir: Path
    metadata: dict


def null_progress(description: str, total: int):
    class _Bar:
        def update(self, n: int = 1) -> None:
            pass

        def close(self) -> None:
            pass

    return _Bar()


def load_training_data(
    train_dirs: list[Path], val_dir: Path | None, *, config: TrainingConfig, log: Callable[[str], None]
) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """(all training folders, the part trained on, validation): ``val_dir``, or a stratified split."""
    dataset = load_image_folder(train_dirs)
    if val_dir is not None:
        train_set, val_set = dataset, load_image_folder([val_dir], classes=dataset.classes)
    else:
        train_idx, val_idx = stratified_split(dataset.labels, fraction=config.val_fraction, seed=config.seed)
        train_set, val_set = dataset.subset(train_idx), dataset.subset(val_idx)
    log(f"{len(train_set)} training and {len(val_set)} validation images, classes: {', '.join(dataset.classes)}")
    return dataset, train_set, val_set


def tqdm_progress(description: str, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="img", dynamic_ncols=True, mininterval=2.0)


def train(
    *,
    train_dirs: list[Path],
    output_dir: Path,
    name: str,
    val_dir: Path | None = None,
    config: TrainingConfig | None = None,
    cache_dir: Path,
    progress: Callable = null_progress,
    log: Callable[[str], None] = logger.info,
) -> TrainingResult:
    config = config or TrainingConfig()
    if config.whole_network_size:
        from .whole_network import train_whole_network

        return train_whole_network(
            train_dirs=train_dirs, output_dir=output_dir, name=name, val_dir=val_dir, config=config,
            progress=progress, log=log,
        )  # fmt: skip
    started = time.perf_counter()
    timings: dict[str, float] = {}
    import keras

    from .backbones import backbone_spec, get_backbone

    backbone_spec(config.backbone)  # an unknown name fails before any data is read
    dataset, train_set, val_set = load_training_data(train_dirs, val_dir, config=config, log=log)
    classes = dataset.classes

    preprocessing = make_preprocessing(input_size=config.input_size, scale="raw", resample=config.resample)
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
        train_dirs=train_dirs,
        val_dir=val_dir,
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
    )


@dataclass
class Calibration:
    """What is chosen on validation data: temperature, thresholds, OOD statistics, and the metrics."""

    temperature: float
    confidence_threshold: float
    ood_threshold: float
    scorer: MahalanobisScorer
    val_probabilities: np.ndarray
    val_metrics: dict


def calibrate(*, val_logits, val_features, val_labels, ood_features, ood_labels, classes, config) -> Calibration:
    temperature = fit_temperature(val_logits, val_labels)
    val_probabilities = softmax(val_logits / temperature)
    confidence_threshold = choose_confidence_threshold(
        val_probabilities.max(1),
        val_probabilities.argmax(1) == val_labels,
        target_accuracy=config.target_accuracy,
        max_flagged=config.max_flagged,
    )
    scorer = MahalanobisScorer.fit(ood_features, ood_labels, n_classes=len(classes))
    val_ood = scorer.score(val_features)
    ood_threshold = choose_ood_threshold(val_ood, quantile=config.ood_quantile)
    flagged = (val_probabilities.max(1) < confidence_threshold) | (val_ood > ood_threshold)
    val_metrics = compute_metrics(labels=val_labels, probabilities=val_probabilities, classes=classes, flagged=flagged)
    return Calibration(temperature, confidence_threshold, ood_threshold, scorer, val_probabilities, val_metrics)


def save_model_folder(
    *,
    output_dir,
    classifier,
    parity_sample: np.ndarray,
    name: str,
    config: TrainingConfig,
    classes: list[str],
    preprocessing: dict,
    calibration: Calibration,
    train_dirs,
    val_dir,
    dataset,
    train_set,
    val_set,
    details: dict,
    timings: dict,
    started: float,
    log: Callable[[str], None],
    float16: bool = False,
) -> TrainingResult:
    """Export, check parity, and write the model folder every training path produces: the LiteRT and
    Keras artifacts, OOD statistics, metadata with checksums and the validation report."""
    t0 = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    export_tflite(classifier, output_dir / SERVING_ARTIFACT, float16=float16)
    parity = check_parity(
        classifier,
        output_dir / SERVING_ARTIFACT,
        parity_sample,
        tolerance=FLOAT16_PARITY_TOLERANCE if float16 else PARITY_TOLERANCE,
        num_threads=config.num_threads,
    )
    classifier.save(output_dir / KERAS_ARTIFACT)
    calibration.scorer.save(output_dir / OOD_STATISTICS_FILE)
    timings["export_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started

    metadata = {
        "name": name,
        "backbone": config.backbone,
        "classes": classes,
        "input_size": config.input_size,
        "preprocessing": preprocessing,
        "serving_artifact": SERVING_ARTIFACT,
        "keras_artifact": KERAS_ARTIFACT,
        "temperature": calibration.temperature,
        "confidence_threshold": calibration.confidence_threshold,
        "ood_threshold": calibration.ood_threshold,
        "metrics": {"validation": calibration.val_metrics},
        "training": {
            "config": _jsonable(asdict(config)),
            "train_dirs": [str(p) for p in train_dirs],
            "val_dir": str(val_dir) if val_dir else None,
            "data_fingerprint": train_set.fingerprint(),
            "val_fingerprint": val_set.fingerprint(),
            "train_counts": train_set.counts(),
            "val_counts": val_set.counts(),
            "skipped_files": [str(p) for p, _ in dataset.skipped],
            **details,
            "export_parity_max_abs_diff": parity,
            "serving_weights": "float16" if float16 else "float32",
            "timings_s": {k: round(v, 1) for k, v in timings.items()},
        },
    }
    write_model_metadata(output_dir, metadata, with_checksums=True)
    from .evaluation import write_report

    write_report(
        metrics=calibration.val_metrics,
        probabilities=calibration.val_probabilities,
        labels=val_set.labels,
        output_dir=output_dir / "report-validation",
        title=f"{name} on validation",
    )
    log(f"done in {timings['total_s']:.0f} s: {output_dir}")
    return TrainingResult(output_dir=output_dir, metadata=metadata)


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Weights making every class count equally in the loss (mean weight over samples is 1)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


def _split_tensor(backbone, config: TrainingConfig):
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


def _cache_key(config: TrainingConfig, preprocessing: dict, split_tensor) -> str:
    described = {
        "backbone": config.backbone,
        "weights": str(config.weights),
        "split": [config.finetune_from, list(split_tensor.shape[1:])],
        "preprocessing": preprocessing,
        "augmentation": asdict(config.augmentation),
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


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


def _finetune(*, top, train_views, labels, class_weights, val_view, val_labels, config: TrainingConfig) -> int:
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


__all__ = ["DatasetError", "TrainingConfig", "TrainingResult", "balanced_class_weights", "train"]
