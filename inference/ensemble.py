"""Averaging several trained classifiers into one model version.

Members are model folders written by ``manage.py train`` with the same classes and preprocessing (for
example two whole-network fine-tunings with different seeds, whose errors differ). The ensemble is one
flat Keras graph: each member's layers, renamed with a member prefix, run on the shared input, and
their logits and pooled features are averaged. Averaging logits is a geometric mean of the members'
probabilities; members fine-tuned from the same ImageNet weights keep their feature channels aligned,
so the averaged features still serve the out-of-distribution score with statistics of one feature
size. One LiteRT file serves it, so workers, the predictor and Grad-CAM need nothing new (Grad-CAM takes
the last top-level feature map, which is the last member's: its map is what that member looked at). Temperature,
thresholds and out-of-distribution statistics are fitted anew on validation: the ensemble's
confidence is not any member's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .data import load_image_folder
from .model_folder import KERAS_ARTIFACT, read_model_metadata, write_model_metadata
from .preprocessing import scale_pixels
from .training import TrainingConfig
from .training_common import TrainingResult, calibrate, null_progress, save_model_folder

logger = logging.getLogger(__name__)


class EnsembleError(ValueError):
    """The members cannot be combined (too few, missing files, different classes or preprocessing)."""


def read_members(member_dirs: list[Path]) -> list[dict]:
    """Each member's metadata, checked to be combinable."""
    if len(member_dirs) < 2:
        raise EnsembleError("an ensemble needs at least two member model folders")
    metadata = []
    for directory in member_dirs:
        directory = Path(directory)
        if not (directory / KERAS_ARTIFACT).is_file():
            raise EnsembleError(f"{directory} has no {KERAS_ARTIFACT}: members must be trained model folders")
        metadata.append(read_model_metadata(directory))
    first = metadata[0]
    for directory, other in zip(member_dirs[1:], metadata[1:], strict=True):
        for key in ("classes", "preprocessing"):
            if other.get(key) != first.get(key):
                raise EnsembleError(f"{directory}: its {key} differ from {member_dirs[0]}'s")
    return metadata


def build_ensemble(members: list, *, name: str = "ensemble"):
    """One flat model averaging the members' ``logits`` and ``features`` outputs."""
    import keras

    inputs = keras.Input(members[0].input_shape[1:], name="image")
    outputs = []
    for index, member in enumerate(members):
        prefix = f"m{index}_"

        def renamed(layer, prefix=prefix):
            return layer.__class__.from_config({**layer.get_config(), "name": prefix + layer.name})

        clone = keras.models.clone_model(member, input_tensors=inputs, clone_function=renamed)
        clone.set_weights(member.get_weights())
        outputs.append(clone.output)
    logits = keras.layers.Average(name="logits")([out["logits"] for out in outputs])
    features = keras.layers.Average(name="features")([out["features"] for out in outputs])
    return keras.Model(inputs, {"logits": logits, "features": features}, name=name)


def combine_models(
    *,
    member_dirs: list[Path],
    train_dirs: list[Path],
    val_dir: Path,
    output_dir: Path,
    name: str,
    float16: bool = False,
    num_threads: int = 2,
    progress: Callable = null_progress,
    log: Callable[[str], None] = logger.info,
) -> TrainingResult:
    """Build, calibrate on ``val_dir``, export and write the ensemble's model folder. ``train_dirs`` give
    the out-of-distribution statistics (the members' training data)."""
    import keras

    from .export import keras_outputs
    from .whole_network import load_views

    started = time.perf_counter()
    timings: dict[str, float] = {}
    member_metadata = read_members(member_dirs)
    first = member_metadata[0]
    config = _config_from(first, num_threads=num_threads)
    dataset = load_image_folder(train_dirs, classes=first["classes"])
    val_set = load_image_folder([val_dir], classes=first["classes"])
    preprocessing = first["preprocessing"]
    if preprocessing.get("scale") != "raw":
        raise EnsembleError("ensembles are built from models fed raw 0..255 pixels (whole-network training)")

    t0 = time.perf_counter()
    members = [keras.models.load_model(Path(d) / KERAS_ARTIFACT, compile=False) for d in member_dirs]
    ensemble = build_ensemble(members, name="classifier")
    timings["build_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    val_pixels = load_views(val_set, views=1, preprocessing=preprocessing, config=config, progress=progress)[0]
    ood_rows = np.sort(np.random.default_rng(config.seed).permutation(len(dataset))[: config.ood_fit_images])
    ood_pixels = load_views(
        dataset.subset(ood_rows), views=1, preprocessing=preprocessing, config=config, progress=progress
    )[0]
    timings["decode_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    val_logits, val_features = keras_outputs(ensemble, val_pixels)
    _, ood_features = keras_outputs(ensemble, ood_pixels)
    member_accuracies = []
    for member in members:
        member_logits, _ = keras_outputs(member, val_pixels)
        member_accuracies.append(float(np.mean(member_logits.argmax(1) == val_set.labels)))
    ensemble_accuracy = float(np.mean(val_logits.argmax(1) == val_set.labels))
    log(
        "validation accuracy: members "
        + ", ".join(f"{a:.4f}" for a in member_accuracies)
        + f"; ensemble {ensemble_accuracy:.4f}"
    )
    calibration = calibrate(
        val_logits=val_logits,
        val_features=val_features,
        val_labels=val_set.labels,
        ood_features=ood_features,
        ood_labels=dataset.labels[ood_rows],
        classes=first["classes"],
        config=config,
    )
    timings["calibration_s"] = time.perf_counter() - t0
    members_training_s = sum(_training_seconds(meta) or 0.0 for meta in member_metadata)
    timings["members_training_s"] = members_training_s

    result = save_model_folder(
        output_dir=output_dir,
        classifier=ensemble,
        parity_sample=scale_pixels(val_pixels[:16], preprocessing["scale"]),
        name=name,
        config=config,
        classes=first["classes"],
        preprocessing=preprocessing,
        calibration=calibration,
        train_dirs=train_dirs,
        val_dir=val_dir,
        dataset=dataset,
        train_set=dataset,
        val_set=val_set,
        details={
            "ensemble": {
                "members": [
                    {
                        "name": meta.get("name"),
                        "folder": str(directory),
                        "checksums": meta.get("checksums", {}),
                        "config": meta.get("training", {}).get("config"),
                        "validation_accuracy": accuracy,
                        "training_s": _training_seconds(meta),
                    }
                    for directory, meta, accuracy in zip(member_dirs, member_metadata, member_accuracies, strict=True)
                ],
                "combination": "mean of logits and of pooled features",
            },
            "stage2_val_accuracy": ensemble_accuracy,
        },
        timings=timings,
        started=started,
        log=log,
        float16=float16,
    )
    # Wall-clock time from data to served model: the members' training and this step.
    result.metadata["training"]["timings_s"]["total_with_members_s"] = round(
        members_training_s + result.metadata["training"]["timings_s"]["total_s"], 1
    )
    write_model_metadata(output_dir, result.metadata, with_checksums=True)
    return result


def _config_from(metadata: dict, *, num_threads: int) -> TrainingConfig:
    """The first member's training configuration (calibration settings and seed come from it)."""
    config = TrainingConfig.from_json(metadata.get("training", {}).get("config") or {}, strict=False)
    config.num_threads = num_threads
    return config


def _training_seconds(metadata: dict) -> float | None:
    seconds = metadata.get("training", {}).get("timings_s", {}).get("total_s")
    return float(seconds) if seconds is not None else None
