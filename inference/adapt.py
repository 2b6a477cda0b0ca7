"""Adapting a model version to one laboratory: fine-tune on its labelled cells with a replay of base data.

A laboratory's stain, microscope and camera move its cells away from the data a model was trained on.
``adapt_model`` takes a model folder (``model.keras``, ``model.tflite``, ``ood.npz``, ``metadata.json``),
fine-tunes the whole Keras network (few epochs, small learning rate; a classifier that resizes inside,
like the bundled one, trains at its internal resolution) on the lab's cells together with the replay set
shipped in ``inference/replay/`` (so the classes and stains learnt first are not forgotten), re-fits the
temperature, confidence threshold and out-of-distribution statistics with the lab's cells in-domain, and
writes a new model folder through the same export and parity check as training. The imaging profile
(``imaging``) gains the lab as one more laboratory, so the adapted model takes that lab as familiar.

The lab's cells are split by file-name hash: a calibration part (temperature and thresholds are chosen on
it and on part of the replay set, never on cells trained on) and the cells trained on. Evaluation on a
hold-out part is the caller's (``inference.adaptation``), through the predictor that serves.

Nothing here imports Django.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .data import IMAGE_SUFFIXES, AugmentationConfig, DatasetError, ImageDataset
from .export import keras_outputs
from .imaging import adapted_imaging_profile
from .model_folder import IMAGING_PROFILE_KEY, read_model_metadata, write_model_metadata
from .preprocessing import scale_pixels
from .training_common import RecipeConfig, TrainingResult, calibrate, save_model_folder
from .whole_network import WholeNetworkConfig, dihedral_views

logger = logging.getLogger(__name__)

REPLAY_DIR = Path(__file__).resolve().parent / "replay" / "pbc"
MIN_CALIBRATION_CELLS = 16


class AdaptationError(ValueError):
    """The data or the base model cannot be adapted; the message says why."""


class AdaptationCancelled(RuntimeError):
    """Someone asked the adaptation to stop."""


@dataclass
class AdaptConfig:
    epochs: int = 4
    learning_rate: float = 5e-5
    batch_size: int = 32
    # Views decoded per image: view 0 plain, the others augmented as in training (data.augment).
    views: int = 2
    # Replay images per class (None: all shipped), and the share of the loss the replay part carries.
    replay_per_class: int | None = None
    replay_share: float = 0.6
    # Replay cells learn from the base model's own probabilities (this share) and their labels (the rest):
    # distillation keeps what the base model did on its laboratory, not only the label. Measured on the
    # bundled model adapted to 200 olympus cells (PBC test subset of 600, base 98.83 %): share 0.4 and
    # labels only 97.50 %, distillation 0.7 97.83 %, share 0.6 with distillation 1.0 98.50 %; on the whole
    # PBC test split (base 98.59 %) the last lost 0.97 points with 40 replay cells per class and 0.39
    # with the 100 per class now shipped (docs/adaptation.md).
    replay_distillation: float = 1.0
    # Share of the lab's cells (by file-name hash) kept for choosing temperature and thresholds, when the
    # lab gave at least `calibration_min_cells` (below that every cell is trained on and the thresholds
    # are chosen on the replay set's calibration part).
    calibration_fraction: float = 0.2
    calibration_min_cells: int = 100
    replay_calibration_fraction: float = 0.25
    seed: int = 0
    num_threads: int = 2
    target_accuracy: float = 0.995
    max_flagged: float = 0.05
    ood_quantile: float = 0.99
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)


@dataclass
class AdaptResult:
    output_dir: Path
    metadata: dict
    seconds: float
    counts: dict


def hash_fraction(key: str, *, salt: str = "") -> float:
    """A stable number in [0, 1) for a key (a file name, a case), the same on every machine and run."""
    digest = hashlib.sha256(f"{salt}{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_by_hash(dataset: ImageDataset, *, fraction: float, salt: str = "") -> tuple[ImageDataset, ImageDataset]:
    """(rest, held out): files whose name hashes below `fraction` are held out; the choice of a file
    does not depend on which other files are present."""
    held = np.array([hash_fraction(path.name, salt=salt) < fraction for path in dataset.paths], dtype=bool)
    return dataset.subset(np.flatnonzero(~held)), dataset.subset(np.flatnonzero(held))


def load_class_folders(roots: Sequence[Path], *, classes: Sequence[str], per_class: int | None = None) -> ImageDataset:
    """Images under root/<class>/ for the given classes only (folders of other classes are ignored, so a
    replay set can serve models with fewer classes); `per_class` keeps the first files by name hash."""
    paths, labels = [], []
    for index, name in enumerate(classes):
        found = []
        for root in roots:
            folder = Path(root) / name
            if folder.is_dir():
                found += [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        found.sort(key=lambda p: hash_fraction(p.name))
        if per_class is not None:
            found = found[:per_class]
        paths += found
        labels += [index] * len(found)
    return ImageDataset(classes=list(classes), paths=paths, labels=np.asarray(labels, dtype=np.int64), skipped=[])


def concat(first: ImageDataset, second: ImageDataset) -> ImageDataset:
    return ImageDataset(
        classes=first.classes,
        paths=list(first.paths) + list(second.paths),
        labels=np.concatenate([first.labels, second.labels]).astype(np.int64),
        skipped=list(first.skipped) + list(second.skipped),
    )


def _check(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise AdaptationCancelled("adaptation cancelled")


def _sample_weights(labels: np.ndarray, is_lab: np.ndarray, n_classes: int, replay_share: float) -> np.ndarray:
    """Class-balanced within the lab part and within the replay part; the replay part carries
    `replay_share` of the loss (all of it goes to the lab part when there is no replay)."""
    weights = np.zeros(len(labels), dtype=np.float32)
    parts = [(is_lab, 1.0 - replay_share), (~is_lab, replay_share)]
    if not (~is_lab).any():
        parts = [(is_lab, 1.0)]
    for mask, share in parts:
        present = [c for c in range(n_classes) if (mask & (labels == c)).any()]
        for c in present:
            rows = mask & (labels == c)
            weights[rows] = share / (len(present) * rows.sum())
    return weights * len(labels) / weights.sum()


def _batches(pixels: np.ndarray, targets: np.ndarray, weights: np.ndarray, *, batch_size: int, seed: int, scale: str):
    """Shuffled batches over in-memory views: a random view and dihedral transform per image each epoch;
    `targets` [views, N, classes] are the class distributions each view is trained towards."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.shuffle()

        def shuffle(self):
            n = pixels.shape[1]
            self.order = self.rng.permutation(n)
            self.view_of = self.rng.integers(0, pixels.shape[0], size=n)
            self.dihedral = self.rng.integers(0, 8, size=n)

        def __len__(self):
            return math.ceil(pixels.shape[1] / batch_size)

        def __getitem__(self, index):
            rows = self.order[index * batch_size : (index + 1) * batch_size]
            x = dihedral_views(pixels, rows, self.view_of, self.dihedral)
            return scale_pixels(x.astype(np.float32), scale), targets[self.view_of[rows], rows], weights[rows]

        def on_epoch_end(self):
            self.shuffle()

    return Batches()


def _targets(classifier, pixels, labels, is_lab, n_classes: int, distillation: float, scale: str) -> np.ndarray:
    """[views, N, classes]: one-hot labels for the lab's cells; for replay cells, the base model's
    probabilities on that very view mixed with the label (`distillation` of the former)."""
    from .calibration import softmax

    one_hot = np.eye(n_classes, dtype=np.float32)[labels]
    targets = np.repeat(one_hot[None], pixels.shape[0], axis=0)
    replay = np.flatnonzero(~is_lab)
    if distillation > 0 and len(replay):
        for view in range(pixels.shape[0]):
            logits, _ = keras_outputs(classifier, scale_pixels(pixels[view][replay].astype(np.float32), scale))
            targets[view, replay] = (1 - distillation) * one_hot[replay] + distillation * softmax(logits)
    return targets


def adapt_model(
    *,
    base_dir: Path,
    data: ImageDataset,
    output_dir: Path,
    name: str,
    config: AdaptConfig | None = None,
    replay_dirs: Sequence[Path] = (REPLAY_DIR,),
    progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] = logger.info,
) -> AdaptResult:
    """Fine-tune the model in `base_dir` on `data` (its classes must be the model's, in order) plus the
    replay set; write the adapted model folder to `output_dir`. `progress(fraction, message)` is called
    along the way; `should_stop()` is polled between steps and batches (AdaptationCancelled)."""
    import keras

    from .whole_network import load_views

    config = config or AdaptConfig()
    report = progress or (lambda fraction, message: None)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    base_dir = Path(base_dir)
    metadata = read_model_metadata(base_dir)
    classes = list(metadata["classes"])
    if list(data.classes) != classes:
        raise AdaptationError(f"the cells' classes {data.classes} are not the model's {classes}")
    if not metadata.get("keras_artifact") or not (base_dir / metadata["keras_artifact"]).is_file():
        raise AdaptationError(f"{metadata['name']} has no Keras model file: it cannot be adapted (only re-imported)")
    if len(data) == 0:
        raise AdaptationError("no labelled cells to adapt on")
    present = sorted({classes[label] for label in data.labels})
    if len(present) < 2:
        raise AdaptationError(f"need labelled cells of at least two classes, found {', '.join(present) or 'none'}")
    preprocessing = metadata["preprocessing"]
    scale = preprocessing["scale"]

    lab_train, lab_cal = split_by_hash(data, fraction=config.calibration_fraction, salt="calibration:")
    if len(lab_train) == 0 or len(data) < config.calibration_min_cells:
        lab_train, lab_cal = data, data.subset([])
    replay = load_class_folders(replay_dirs, classes=classes, per_class=config.replay_per_class)
    replay_train, replay_cal = split_by_hash(replay, fraction=config.replay_calibration_fraction, salt="calibration:")
    train_set = concat(lab_train, replay_train)
    cal_set = concat(lab_cal, replay_cal)
    if len(cal_set) < MIN_CALIBRATION_CELLS:
        # Too few held-back cells to choose thresholds on: use the training cells (optimistic, said so).
        log(f"only {len(cal_set)} calibration cells; calibrating on the training cells as well")
        cal_set = concat(cal_set, train_set)
    is_lab = np.arange(len(train_set)) < len(lab_train)
    log(
        f"adapting {metadata['name']}: {len(lab_train)} lab cells to train on, {len(lab_cal)} to calibrate on; "
        f"replay {len(replay_train)} + {len(replay_cal)}"
    )

    # 1. Decode: the lab's and replay cells, plain and augmented views, at the model's input size.
    _check(should_stop)
    report(0.02, "decoding cells")
    t0 = time.perf_counter()
    pixel_config = RecipeConfig(seed=config.seed, num_threads=config.num_threads, augmentation=config.augmentation)

    def bar(description, total):
        class _Bar:
            done = 0

            def update(self, n=1):
                self.done += n
                _check(should_stop)

            def close(self):
                pass

        return _Bar()

    train_pixels = load_views(
        train_set, views=max(1, config.views), preprocessing=preprocessing, config=pixel_config, progress=bar
    )
    cal_pixels = load_views(cal_set, views=1, preprocessing=preprocessing, config=pixel_config, progress=bar)[0]
    timings["decode_s"] = time.perf_counter() - t0

    # 2. Fine-tune the whole network.
    _check(should_stop)
    report(0.15, "fine-tuning")
    t0 = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    classifier = keras.saving.load_model(base_dir / metadata["keras_artifact"], compile=False)
    for layer in classifier.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # small mixed batches must not move running statistics
    trainer = keras.Model(classifier.input, classifier.output["logits"])
    weights = _sample_weights(train_set.labels, is_lab, len(classes), config.replay_share)
    targets = _targets(
        classifier, train_pixels, train_set.labels, is_lab, len(classes), config.replay_distillation, scale
    )
    batches = _batches(train_pixels, targets, weights, batch_size=config.batch_size, seed=config.seed, scale=scale)
    steps = max(1, len(batches) * config.epochs)
    trainer.compile(
        optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps, alpha=0.1)
        ),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
    )

    class Watch(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step, self.cancelled = 0, False

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            report(0.15 + 0.7 * self.step / steps, f"fine-tuning: step {self.step} of {steps}")
            if should_stop is not None and should_stop():
                self.cancelled = True
                self.model.stop_training = True

    watch = Watch()
    history = trainer.fit(batches, epochs=config.epochs, verbose=0, callbacks=[watch])
    if watch.cancelled:
        raise AdaptationCancelled("adaptation cancelled")
    timings["finetune_s"] = time.perf_counter() - t0

    # 3. Temperature, confidence threshold and OOD statistics with the lab's cells in-domain.
    report(0.86, "calibrating")
    t0 = time.perf_counter()
    cal_logits, cal_features = keras_outputs(classifier, scale_pixels(cal_pixels.astype(np.float32), scale))
    _, train_features = keras_outputs(classifier, scale_pixels(train_pixels[0].astype(np.float32), scale))
    calibration_config = RecipeConfig(
        target_accuracy=config.target_accuracy, max_flagged=config.max_flagged, ood_quantile=config.ood_quantile
    )
    calibration = calibrate(
        val_logits=cal_logits,
        val_features=cal_features,
        val_labels=cal_set.labels,
        ood_features=train_features,
        ood_labels=train_set.labels,
        classes=classes,
        config=calibration_config,
    )
    timings["calibration_s"] = time.perf_counter() - t0
    _check(should_stop)

    # 4. Export through the same path as training (parity check included).
    report(0.9, "exporting")
    base_training = metadata.get("training", {}).get("config", {})
    # What save_model_folder records as the config: the base's network (and its internal size, when it
    # resizes inside) with this adaptation's calibration settings.
    exported = {
        "backbone": metadata["backbone"],
        "input_size": metadata["input_size"],
        "num_threads": config.num_threads,
        "target_accuracy": config.target_accuracy,
        "max_flagged": config.max_flagged,
        "ood_quantile": config.ood_quantile,
    }
    internal_size = base_training.get("whole_network_size")
    export_config = (
        WholeNetworkConfig(**exported, whole_network_size=internal_size) if internal_size else RecipeConfig(**exported)
    )
    counts = {
        "adapt": data.counts(),
        "trained_on": lab_train.counts(),
        "calibration": lab_cal.counts(),
        "replay": replay_train.counts(),
        "replay_calibration": replay_cal.counts(),
    }
    adaptation = {
        "base": {
            "name": metadata["name"],
            "checksums": metadata.get("checksums", {}),
            "data_fingerprint": metadata.get("training", {}).get("data_fingerprint"),
        },
        "config": _jsonable(asdict(config)),
        "counts": counts,
        "data_fingerprint": data.fingerprint(),
        "replay": [str(p) for p in replay_dirs],
        "history": {k: [round(float(v), 5) for v in vs] for k, vs in history.history.items()},
    }
    result: TrainingResult = save_model_folder(
        output_dir=output_dir,
        classifier=classifier,
        parity_sample=scale_pixels(cal_pixels[:16].astype(np.float32), scale),
        name=name,
        config=export_config,
        classes=classes,
        preprocessing=preprocessing,
        calibration=calibration,
        train_dirs=sorted({str(Path(p).parent.parent) for p in data.paths}),
        val_dir=None,
        dataset=train_set,
        train_set=train_set,
        val_set=cal_set,
        details={"adaptation": adaptation, "stage2_val_accuracy": calibration.val_metrics["accuracy"]},
        timings=timings,
        started=started,
        log=log,
    )
    # 5. The imaging profile: the base's laboratories plus this lab (fitted on the cells trained on), so the
    # adapted model does not flag the lab that trained it as unfamiliar_imaging.
    description, imaging_report = adapted_imaging_profile(
        base_dir, output_dir, laboratory=f"adapted:{name}", paths=lab_train.paths
    )
    if description is not None:
        result.metadata[IMAGING_PROFILE_KEY] = description
    result.metadata["training"].setdefault("adaptation", adaptation)["imaging_profile"] = imaging_report
    log(f"imaging profile: {imaging_report.get('reason') or imaging_report['status']}")
    seconds = time.perf_counter() - started
    result.metadata["training"]["timings_s"]["total_s"] = round(seconds, 1)
    write_model_metadata(output_dir, result.metadata, with_checksums=True)
    report(0.95, "adapted")
    return AdaptResult(output_dir=Path(output_dir), metadata=result.metadata, seconds=seconds, counts=counts)


def differential_agreement(
    *, case_of: Sequence[str], labels: np.ndarray, predicted: np.ndarray, classes: Sequence[str]
) -> dict | None:
    """How well per-case differentials (per-class percentages) from the model match the confirmed ones,
    as laboratories compare an analyser with a manual count: mean and worst absolute difference in
    percentage points over cases and classes. None when no cell has a case."""
    case_of = np.asarray([str(c) if c is not None else "" for c in case_of])
    labels = np.asarray(labels)
    predicted = np.asarray(predicted)
    differences, per_case = [], []
    for case in sorted(set(case_of) - {""}):
        rows = case_of == case
        n = int(rows.sum())
        confirmed = np.bincount(labels[rows], minlength=len(classes)) / n * 100
        model = np.bincount(predicted[rows], minlength=len(classes)) / n * 100
        difference = np.abs(confirmed - model)
        differences.append(difference)
        per_case.append({"cells": n, "max_abs_pp": round(float(difference.max()), 2)})
    if not differences:
        return None
    stacked = np.stack(differences)
    return {
        "cases": len(differences),
        "mean_abs_pp": float(stacked.mean()),
        "max_abs_pp": float(stacked.max()),
        "per_class_mean_abs_pp": {name: float(stacked[:, i].mean()) for i, name in enumerate(classes)},
    }


def _jsonable(value):
    import json

    return json.loads(json.dumps(value, default=str))


__all__ = [
    "AdaptConfig",
    "AdaptResult",
    "AdaptationCancelled",
    "AdaptationError",
    "DatasetError",
    "adapt_model",
    "differential_agreement",
    "hash_fraction",
    "split_by_hash",
]
