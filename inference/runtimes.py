"""Serving runtimes for exported models, free of Django and TensorFlow.

An exported classifier has one input (a preprocessed batch [N, S, S, 3]) and two outputs, ``logits``
and ``features``; each runtime returns them as (logits, features).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class LiteRTRuntime:
    """A LiteRT interpreter (XNNPACK on CPU). One interpreter is not re-entrant: callers hold a lock."""

    name = "litert"

    def __init__(self, path: Path, *, num_threads: int, outputs: tuple[str, ...] = ("features", "logits")):
        from ai_edge_litert.interpreter import Interpreter

        self.num_threads = num_threads
        self._interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        signatures = self._interpreter.get_signature_list()
        if not signatures:
            raise ValueError("the model has no serving signature")
        key, signature = next(iter(signatures.items()))
        if sorted(signature["outputs"]) != sorted(outputs) or len(signature["inputs"]) != 1:
            raise ValueError(f"expected one input and outputs {sorted(outputs)}, found {signature}")
        self._input_name = signature["inputs"][0]
        self._runner = self._interpreter.get_signature_runner(key)
        # The signature runner resizes and re-plans the interpreter's memory on every call (~3 ms of CPU for a
        # batch of 10), even when the batch has the shape of the last one. A model whose signature runs the
        # primary subgraph is driven directly instead, re-planned only when the batch shape changes.
        self._direct = getattr(self._runner, "_subgraph_index", None) == 0
        if self._direct:
            self._input_index = self._runner.get_input_details()[self._input_name]["index"]
            self._output_indexes = {name: detail["index"] for name, detail in self._runner.get_output_details().items()}
            # The runner holds the interpreter's internals, which the interpreter takes for a live view of its
            # buffers and then refuses to resize.
            self._runner = None
        self._planned_shape: tuple[int, ...] | None = None

    # The most images one invoke takes; a larger batch runs in slices of this size. The interpreter plans its
    # tensor arena for the largest batch it has seen and keeps it: after one 16-image task each pool process
    # held 37 MB more for the rest of its life (4 images: 8 MB), for no gain in CPU per image (4.7-5.7 ms per
    # image at 1, 2, 4, 8 or 16 a call on the 2-core machine) and bit-identical outputs (bench/worker_memory.py).
    max_invoke_batch = 4

    def run_named(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self.max_invoke_batch
        if len(batch) > step:
            parts = [self._run_slice(batch[start : start + step]) for start in range(0, len(batch), step)]
            return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        return self._run_slice(batch)

    def _run_slice(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if not self._direct:
            return self._runner(**{self._input_name: batch})
        interpreter = self._interpreter
        if batch.shape != self._planned_shape:
            interpreter.resize_tensor_input(self._input_index, batch.shape)
            interpreter.allocate_tensors()
            self._planned_shape = batch.shape
        interpreter.set_tensor(self._input_index, batch)
        interpreter.invoke()
        return {name: interpreter.get_tensor(index) for name, index in self._output_indexes.items()}

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = self.run_named(batch)
        return np.asarray(outputs["logits"], dtype=np.float64), np.asarray(outputs["features"], dtype=np.float64)


def open_runtime(path: Path, *, num_threads: int):
    if path.suffix == ".tflite":
        return LiteRTRuntime(path, num_threads=num_threads)
    raise ValueError(f"no serving runtime for {path.name} (expected a LiteRT .tflite file)")
