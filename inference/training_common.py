"""What every training recipe shares: the config fields they all have, the data they are given, class
weights, calibration on validation, and writing the model folder (export, parity check, metadata, report).

The recipes themselves (``frozen_head``, ``whole_network``, and the multi-laboratory one built on the
latter) each import this module and never one another; ``recipes`` holds the registry. Nothing here
imports Django: commands and services register the result.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import choose_confidence_threshold, fit_temperature, softmax
from .data import AugmentationConfig, ImageDataset, load_image_folder, stratified_split
from .evaluation import compute_metrics
from .model_folder import (
    KERAS_ARTIFACT,
    OOD_STATISTICS_FILE,
    SERVING_ARTIFACT,
    new_metadata,
    report_dir,
    write_model_metadata,
)
from .ood import MahalanobisScorer, choose_ood_threshold
from .preprocessing import make_preprocessing

logger = logging.getLogger(__name__)


@dataclass
class RecipeConfig:
    """The fields every recipe has: the network, the optimiser, augmentation and calibration."""

    backbone: str = "efficientnet_lite0"
    input_size: int = 224
    weights: str | None = "imagenet"
    # Views per training image: view 0 plain, the others augmented (``data.augment``).
    views: int = 4
    finetune_epochs: int = 6
    batch_size: int = 32
    finetune_learning_rate: float = 3e-4
    patience: int = 2
    seed: int = 0
    resample: str = "bilinear"
    num_threads: int = 2
    # The confidence threshold keeps at least this validation accuracy among unflagged predictions...
    target_accuracy: float = 0.995
    # ...while flagging at most this share of validation images.
    max_flagged: float = 0.05
    ood_quantile: float = 0.99
    ood_fit_images: int = 4000
    # Views averaged at serving time (preprocessing.TEST_TIME_FLIPS); calibration stays single-view.
    test_time_flips: str = "none"
    # The flipped views only for images whose plain view is less sure than this (preprocessing.py); None: always.
    flip_skip_confidence: float | None = None
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)

    def serving_preprocessing(self) -> dict[str, Any]:
        """The preprocessing the trained model is served with (``ModelVersion.preprocessing``): raw 0..255
        pixels, since the recipes' classifiers scale them inside the graph."""
        return make_preprocessing(
            input_size=self.input_size,
            scale="raw",
            resample=self.resample,
            test_time_flips=self.test_time_flips,
            flip_skip_confidence=self.flip_skip_confidence,
        )

    def to_json(self) -> dict[str, Any]:
        """The config as metadata.json records it (``training.config``)."""
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_json(cls, saved: dict[str, Any], *, strict: bool = True):
        """The config back from metadata.json; ``strict`` refuses keys this recipe does not have (a
        folder trained by another recipe), otherwise they are ignored."""
        saved = dict(saved)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(saved) - known)
        if unknown and strict:
            raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in saved:
                continue
            value = saved[f.name]
            if f.name == "augmentation":
                value = AugmentationConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
            elif isinstance(value, list):
                value = tuple(value)
            values[f.name] = value
        return cls(**values)


@dataclass
class TrainingData:
    """What a recipe trains and validates on: class folders (one sub-folder per class; a folder given twice
    is oversampled twice), and validation folders or, when there are none, a stratified split of the
    training folders (the recipe's ``val_fraction``). ``train_names`` / ``val_name`` are what metadata.json
    records (default: the paths)."""

    train_dirs: list[Path]
    val_dirs: list[Path] = field(default_factory=list)
    train_names: list[str] | None = None
    val_name: str | None = None

    def described(self) -> tuple[list[str], str | None]:
        train = self.train_names or [str(p) for p in self.train_dirs]
        val = self.val_name or (" + ".join(str(p) for p in self.val_dirs) if self.val_dirs else None)
        return train, val


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


def tqdm_progress(description: str, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="img", dynamic_ncols=True, mininterval=2.0)


def load_training_data(
    data: TrainingData, *, seed: int, val_fraction: float | None, log: Callable[[str], None]
) -> tuple[ImageDataset, ImageDataset, ImageDataset]:
    """(all training folders, the part trained on, validation)."""
    dataset = load_image_folder(data.train_dirs)
    if data.val_dirs:
        train_set, val_set = dataset, load_image_folder(data.val_dirs, classes=dataset.classes)
    elif val_fraction:
        train_idx, val_idx = stratified_split(dataset.labels, fraction=val_fraction, seed=seed)
        train_set, val_set = dataset.subset(train_idx), dataset.subset(val_idx)
    else:
        raise ValueError("no validation folders and no validation fraction to split off")
    log(f"{len(train_set)} training and {len(val_set)} validation images, classes: {', '.join(dataset.classes)}")
    return dataset, train_set, val_set


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Weights making every class count equally in the loss (mean weight over samples is 1)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (n_classes * np.maximum(counts, 1)), 0.0)
    return weights.astype(np.float32)


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
    """``config`` needs ``target_accuracy``, ``max_flagged`` and ``ood_quantile``."""
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
    config,
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
    recipe: str | None = None,
) -> TrainingResult:
    """Export, check parity, and write the model folder every training path produces: the LiteRT and
    Keras artifacts, OOD statistics, metadata with checksums and the validation report. ``config`` is a
    recipe's config (or any dataclass with ``backbone``, ``input_size`` and ``num_threads``);
    ``train_dirs`` / ``val_dir`` are recorded as given (paths or descriptions)."""
    from .evaluation import write_report
    from .export import FLOAT16_PARITY_TOLERANCE, PARITY_TOLERANCE, check_parity, export_tflite

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

    training = {
        "config": json.loads(json.dumps(asdict(config), default=str)),
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
    }
    if recipe:
        training["recipe"] = recipe
    metadata = new_metadata(
        name=name,
        backbone=config.backbone,
        classes=classes,
        input_size=config.input_size,
        preprocessing=preprocessing,
        temperature=calibration.temperature,
        confidence_threshold=calibration.confidence_threshold,
        ood_threshold=calibration.ood_threshold,
        metrics={"validation": calibration.val_metrics},
        training=training,
    )
    write_model_metadata(output_dir, metadata, with_checksums=True)
    write_report(
        metrics=calibration.val_metrics,
        probabilities=calibration.val_probabilities,
        labels=val_set.labels,
        output_dir=report_dir(output_dir),
        title=f"{name} on validation",
    )
    log(f"done in {timings['total_s']:.0f} s: {output_dir}")
    return TrainingResult(output_dir=output_dir, metadata=metadata)
