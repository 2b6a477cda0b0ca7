"""Exporting a trained Keras classifier to the serving runtimes, and checking the export agrees with Keras.

The Keras model must map a preprocessed batch [N, S, S, 3] to a dict with ``logits`` [N, classes] and
``features`` [N, D] (the pooled features the out-of-distribution score uses).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .calibration import softmax
from .runtimes import open_runtime

PARITY_TOLERANCE = 1e-3
# Rounding weights to float16 moves probabilities by up to about 1e-2 on cells; what must not move is
# accuracy, which the model card compares on the test split (the issue allows 0.2 points).
FLOAT16_PARITY_TOLERANCE = 3e-2


class ExportParityError(RuntimeError):
    """The exported model's probabilities differ from Keras' beyond the tolerance."""


def _check_outputs(keras_model) -> None:
    names = sorted(keras_model.output_names if hasattr(keras_model, "output_names") else [])
    if names and names != ["features", "logits"]:
        raise ValueError(f"the model must output 'logits' and 'features', it outputs {names}")


def export_tflite(
    keras_model,
    path: Path,
    *,
    int8_calibration: Callable[[], Iterable[np.ndarray]] | None = None,
    float16: bool = False,
    dynamic_range: bool = False,
) -> Path:
    """Write a LiteRT flatbuffer with a dynamic batch dimension. With int8_calibration (a callable
    yielding preprocessed batches), weights and activations are quantized to int8 (float input/output).
    With float16, weights are stored as float16 (half the file; XNNPACK computes in float32 as before).
    With dynamic_range, weights are int8 and activations float (measured costlier in CPU than float32 here:
    XNNPACK leaves the hybrid convolutions to LiteRT's own kernels; docs/benchmarks.md, hquant)."""
    _check_outputs(keras_model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {}
    if float16:
        import tensorflow as tf

        kwargs = {"optimizations": [tf.lite.Optimize.DEFAULT], "target_spec": {"supported_types": [tf.float16]}}
    if dynamic_range:
        import tensorflow as tf

        kwargs = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if int8_calibration is not None:
        import tensorflow as tf

        def representative_dataset():
            for batch in int8_calibration():
                for row in np.asarray(batch, dtype=np.float32):
                    yield [row[None]]

        kwargs = {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": representative_dataset,
        }
    # Write atomically: a half-written file must never be mistaken for a model.
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        scratch_path = Path(scratch) / path.name
        with contextlib.redirect_stdout(io.StringIO()):
            keras_model.export(str(scratch_path), format="litert", verbose=False, **kwargs)
        os.replace(scratch_path, path)
    return path


def export_raw_tflite(keras_model, path: Path) -> Path:
    """Any Keras model as LiteRT (used for the frozen feature extractor during training)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        scratch_path = Path(scratch) / path.name
        with contextlib.redirect_stdout(io.StringIO()):
            keras_model.export(str(scratch_path), format="litert", verbose=False)
        os.replace(scratch_path, path)
    return path


def keras_outputs(keras_model, batch: np.ndarray, *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(logits, features) of a model with those named outputs, run in batches (any array, memory-mapped too)."""
    logits, features = [], []
    for start in range(0, len(batch), batch_size):
        outputs = keras_model(np.asarray(batch[start : start + batch_size], dtype=np.float32), training=False)
        logits.append(np.asarray(outputs["logits"], dtype=np.float64))
        features.append(np.asarray(outputs["features"], dtype=np.float64))
    return np.concatenate(logits), np.concatenate(features)


def probability_difference(keras_model, artifact: Path, batch: np.ndarray, *, num_threads: int = 2) -> float:
    """Largest absolute difference between Keras' and the exported model's class probabilities."""
    batch = np.asarray(batch, dtype=np.float32)
    keras_logits, _ = keras_outputs(keras_model, batch)
    runtime = open_runtime(Path(artifact), num_threads=num_threads)
    exported_logits, _ = runtime.run(batch)
    return float(np.abs(softmax(keras_logits) - softmax(exported_logits)).max())


def check_parity(
    keras_model, artifact: Path, batch: np.ndarray, *, tolerance: float = PARITY_TOLERANCE, num_threads: int = 2
) -> float:
    """Raise ExportParityError when the export disagrees with Keras; return the difference measured."""
    difference = probability_difference(keras_model, artifact, batch, num_threads=num_threads)
    if not difference <= tolerance:
        raise ExportParityError(
            f"{Path(artifact).name}: probabilities differ from Keras by {difference:.2e} (tolerance {tolerance:.0e})"
        )
    return difference
