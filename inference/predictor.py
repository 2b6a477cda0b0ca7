"""Serving: the active model version, loaded once per process, classifying batches of images.

The serving artifact is a LiteRT (.tflite) file with two outputs, ``logits`` and ``features``
(the pooled backbone features the out-of-distribution score is computed on). The runtime does not import
TensorFlow, so workers start fast and stay small.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from PIL import Image

from .calibration import softmax
from .model_folder import OOD_STATISTICS_FILE
from .models import ModelVersion
from .ood import MahalanobisScorer
from .preprocessing import flipped_views, preprocess_batch, validate_preprocessing, view_count
from .registry import artifact_path, get_active_version
from .runtimes import open_runtime, sha256_of_file

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32
# An image skips its test-time flips only while its plain view's OOD score is at most this share of the
# threshold: averaging views moves the score a little, and must not be what decides a flag.
FLIP_SKIP_OOD_SHARE = 0.8


class ModelUnavailable(RuntimeError):
    """The active model cannot serve; the message says what to do about it."""


@dataclass(frozen=True)
class CellPrediction:
    label: str
    confidence: float
    probabilities: dict[str, float]
    flagged: bool
    ood_score: float | None
    latency_ms: float
    # Why the prediction is shown as "unidentified — needs review": "low_confidence", "out_of_distribution".
    flag_reasons: tuple[str, ...] = field(default_factory=tuple)


def serving_threads() -> int:
    value = os.environ.get("INFERENCE_NUM_THREADS") or getattr(settings, "INFERENCE_NUM_THREADS", 2)
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 2


_blas_controller = None
_blas_controller_lock = threading.Lock()


def single_threaded_blas():
    """A context in which numpy's BLAS runs on the calling thread only.

    The out-of-distribution score is one small matrix product per batch ([N, 1280] x [1280, 1280]).
    OpenBLAS splits it over every core and its threads then spin while they wait for work: on a 2-core
    server that cost ~30 ms of CPU per batch of 10 cells instead of ~1.5 ms on one thread, and the
    scores are bit-for-bit the same (the split is over output blocks, not the sums). Without
    threadpoolctl (not expected: it is in requirements/base.txt) BLAS keeps its own setting.
    """
    global _blas_controller
    if _blas_controller is None:
        with _blas_controller_lock:
            if _blas_controller is None:
                try:
                    from threadpoolctl import ThreadpoolController
                except ImportError:
                    _blas_controller = False
                else:
                    _blas_controller = ThreadpoolController()  # finds the loaded BLAS once per process
    if _blas_controller is False:
        return contextlib.nullcontext()
    return _blas_controller.limit(limits=1, user_api="blas")


class Predictor:
    """Classifies images with one model version. Thread-safe; batches many images per runtime call."""

    def __init__(self, version: ModelVersion, *, num_threads: int | None = None, max_batch: int = DEFAULT_MAX_BATCH):
        self.version = version
        self.classes: list[str] = list(version.classes)
        self.preprocessing = dict(version.preprocessing)
        self.temperature = float(version.temperature or 1.0)
        self.confidence_threshold = float(version.confidence_threshold or 0.0)
        self.ood_threshold = version.ood_threshold
        self.max_batch = max_batch
        self._lock = threading.Lock()
        try:
            validate_preprocessing(self.preprocessing)
        except ValueError as exc:
            raise ModelUnavailable(f"model version {version.name} has invalid preprocessing: {exc}") from exc
        path = self.verified_path(version.serving_artifact)
        try:
            self.runtime = open_runtime(path, num_threads=num_threads or serving_threads())
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelUnavailable(
                f"the serving runtime cannot load {path} (model version {version.name}): {exc}. "
                "The file is corrupt or not a model this platform can serve; re-import or re-train it."
            ) from exc
        self.ood_scorer = self._load_ood_scorer()

    def verified_path(self, filename: str) -> Path:
        """The path of one of this version's files, present and matching its recorded checksum
        (ModelUnavailable otherwise)."""
        path = artifact_path(self.version, filename)
        if not path.is_file():
            raise ModelUnavailable(
                f"model file missing: {path} (model version {self.version.name}). Restore the file or "
                "activate another version."
            )
        expected = (self.version.checksums or {}).get(filename)
        if expected:
            actual = sha256_of_file(path)
            if actual != expected:
                raise ModelUnavailable(
                    f"checksum mismatch for {path} (model version {self.version.name}): expected sha256 "
                    f"{expected}, found {actual}. The file was modified or damaged; restore it or re-import it."
                )
        return path

    def _load_ood_scorer(self) -> MahalanobisScorer | None:
        if self.ood_threshold is None:
            return None
        path = self.verified_path(OOD_STATISTICS_FILE)
        try:
            return MahalanobisScorer.load(path)
        except (ValueError, OSError, KeyError) as exc:
            raise ModelUnavailable(f"out-of-distribution statistics unreadable at {path}: {exc}") from exc

    def predict(self, images: Sequence[Image.Image]) -> list[CellPrediction]:
        results: list[CellPrediction] = []
        for start in range(0, len(images), self.max_batch):
            results.extend(self._predict_batch(images[start : start + self.max_batch]))
        return results

    def predict_arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, features) for already preprocessed inputs, averaged over the version's test-time views
        (`test_time_flips`, skipped where the version says the plain view is sure: `flip_skip_confidence`);
        used by serving, evaluation and benchmarks alike."""
        logits, features, _ = self._scored_arrays(batch)
        return logits, features

    def _scored_arrays(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(logits, features, OOD scores of exactly these features, or None when not computed)."""
        batch = np.asarray(batch, dtype=np.float32)
        step = self._images_per_call()
        parts = [self._views_averaged(batch[start : start + step]) for start in range(0, len(batch), step)]
        if len(parts) == 1:
            return parts[0]
        # Scores of slices are not the whole batch's to the last bit: the caller scores the batch.
        return (*_joined([part[:2] for part in parts]), None)

    def _images_per_call(self) -> int:
        """Images whose views (the image and its test-time flips) fill one runtime call. A batch goes to the
        runtime this many images at a time, each image with its flips: a 16-image task held its preprocessed
        batch, the flipped copy and both concatenated (~38 MB at 224 px) at once, the summed worker's peak
        (bench/worker_memory.py); the runtime's calls keep their size (LiteRT: 4 inputs), and every input's
        outputs are the same whatever else shares its call (tests/inference/test_predictor.py)."""
        per_call = getattr(self.runtime, "max_invoke_batch", None)
        if not per_call:
            return sys.maxsize
        return max(1, per_call // view_count(self.preprocessing.get("test_time_flips", "none")))

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self.runtime.run(np.ascontiguousarray(batch, dtype=np.float32))

    def _views_averaged(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        flips = self.preprocessing.get("test_time_flips", "none")
        skip_at = self.preprocessing.get("flip_skip_confidence")
        views = flipped_views(batch, flips)
        if len(views) == 1:
            return (*self._run(batch), None)
        if skip_at is None:
            logits, features = self._run(np.concatenate(views))
            return (*_views_mean(logits, features, len(views), len(batch)), None)
        # The plain view first; the flipped views only for the images it is not sure of. An image that gets
        # them gets the same average, bit for bit, as without skipping (outputs do not depend on call-mates).
        logits, features = self._run(batch)
        scores = self._ood_scores(features)
        unsure = np.flatnonzero(~self._plain_view_is_sure(logits, scores, float(skip_at)))
        if len(unsure):
            flipped = [view[unsure] for view in views[1:]]
            more_logits, more_features = self._run(np.concatenate(flipped))
            logits[unsure], features[unsure] = _views_mean(
                np.concatenate([logits[unsure], more_logits]),
                np.concatenate([features[unsure], more_features]),
                len(views),
                len(unsure),
            )
            # Scored again with the whole batch (a matrix product's last bits depend on its rows).
            scores = None
        return logits, features, scores

    def _plain_view_is_sure(self, logits: np.ndarray, scores: np.ndarray | None, skip_at: float) -> np.ndarray:
        """Per image: its plain view's calibrated confidence reaches ``skip_at`` and its OOD score stays well
        inside the threshold, so averaging in the flipped views could not change its label or its flags
        (measured on the validation splits: docs/model-card.md, "Test-time flips only where unsure")."""
        sure = softmax(logits / self.temperature).max(axis=1) >= skip_at
        if scores is not None and self.ood_threshold is not None:
            sure &= scores <= FLIP_SKIP_OOD_SHARE * float(self.ood_threshold)
        return sure

    def _ood_scores(self, features: np.ndarray) -> np.ndarray | None:
        if self.ood_scorer is None:
            return None
        with single_threaded_blas():
            return np.asarray(self.ood_scorer.score(features), dtype=np.float64)

    def _predict_batch(self, images: Sequence[Image.Image]) -> list[CellPrediction]:
        if not images:
            return []
        started = time.perf_counter()
        # Preprocessed a runtime call's worth at a time (_images_per_call): never the whole batch's pixels at once.
        step = self._images_per_call()
        parts = [
            self._scored_arrays(preprocess_batch(images[start : start + step], self.preprocessing))
            for start in range(0, len(images), step)
        ]
        logits, features = _joined([part[:2] for part in parts])
        probabilities = softmax(logits / self.temperature)
        # A one-call batch whose plain views were all sure was scored already, on these very features.
        ood_scores = parts[0][2] if len(parts) == 1 and parts[0][2] is not None else self._ood_scores(features)
        latency_ms = (time.perf_counter() - started) * 1000.0 / len(images)
        return [
            self._cell_prediction(
                probabilities[row], None if ood_scores is None else float(ood_scores[row]), latency_ms
            )
            for row in range(len(images))
        ]

    def _cell_prediction(self, probabilities: np.ndarray, ood_score: float | None, latency_ms: float):
        best = int(np.argmax(probabilities))
        confidence = float(probabilities[best])
        reasons = []
        if confidence < self.confidence_threshold:
            reasons.append("low_confidence")
        if ood_score is not None and self.ood_threshold is not None and ood_score > self.ood_threshold:
            reasons.append("out_of_distribution")
        return CellPrediction(
            label=self.classes[best],
            confidence=confidence,
            probabilities={name: float(p) for name, p in zip(self.classes, probabilities, strict=True)},
            flagged=bool(reasons),
            ood_score=ood_score,
            latency_ms=latency_ms,
            flag_reasons=tuple(reasons),
        )


def _views_mean(logits: np.ndarray, features: np.ndarray, views: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows [view 0 of each image, view 1 of each image, ...] averaged per image."""
    return logits.reshape(views, count, -1).mean(axis=0), features.reshape(views, count, -1).mean(axis=0)


def _joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts])


_predictor: Predictor | None = None
_predictor_key: tuple | None = None
_predictor_lock = threading.Lock()


def _version_key(version: ModelVersion) -> tuple:
    return (version.pk, version.activated_at, tuple(sorted((version.checksums or {}).items())))


def get_predictor() -> Predictor:
    """The predictor of the active model version; loaded once per process, reloaded when the active
    version changes. Registers the bundled model first when no version is active."""
    version = get_active_version()
    automatic = version is None or version.source == ModelVersion.Source.BUNDLED
    if automatic and getattr(settings, "INFERENCE_AUTO_BUNDLED_MODEL", True):
        from .services import BundledModelMissing, bundled_model_superseded, ensure_bundled_model

        try:
            # ensure_bundled_model would ask for the active version again: only call it when it has work to do.
            if version is None or bundled_model_superseded(version):
                version = ensure_bundled_model()
        except BundledModelMissing as exc:
            raise ModelUnavailable(f"no active model version, and {exc}") from exc
    if version is None:
        raise ModelUnavailable("no active model version: an administrator must activate one (or train/import a model).")
    global _predictor, _predictor_key
    key = _version_key(version)
    with _predictor_lock:
        if _predictor is None or _predictor_key != key:
            logger.info("loading model version %s (%s)", version.name, version.serving_artifact)
            _predictor = Predictor(version)
            _predictor_key = key
        return _predictor


def reset_predictor() -> None:
    """Forget the loaded model (tests, and after files of the active version were replaced)."""
    global _predictor, _predictor_key
    with _predictor_lock:
        _predictor = None
        _predictor_key = None
    reset_shadow_predictor()


# Shadow mode: the version in shadow, loaded once per process like the active one and reloaded when the
# shadow version changes (another version, or the same one started again). It must never hold up or break
# the active path, so a version that cannot load is logged and skipped, and not tried again before
# SHADOW_RETRY_SECONDS (or before the shadow version changes).
SHADOW_RETRY_SECONDS = 60.0
_shadow: Predictor | None = None
_shadow_key: tuple | None = None
_shadow_failed: tuple[tuple, float] | None = None
_shadow_lock = threading.Lock()


def get_shadow_predictor() -> Predictor | None:
    """The predictor of the version in shadow mode, or None when there is none or it cannot load."""
    global _shadow, _shadow_key, _shadow_failed
    version = ModelVersion.objects.filter(is_shadow=True, is_active=False).first()
    if version is None:
        return None
    key = (*_version_key(version), version.shadow_since)
    with _shadow_lock:
        if _shadow is not None and _shadow_key == key:
            return _shadow
        if _shadow_failed is not None and _shadow_failed[0] == key:
            if time.monotonic() - _shadow_failed[1] < SHADOW_RETRY_SECONDS:
                return None
        try:
            logger.info("loading shadow model version %s (%s)", version.name, version.serving_artifact)
            predictor = Predictor(version)
        except Exception:  # noqa: BLE001 - the shadow is optional; the active path goes on without it
            logger.exception("shadow model version %s cannot be loaded; cells are classified without it", version.name)
            _shadow, _shadow_key, _shadow_failed = None, None, (key, time.monotonic())
            return None
        _shadow, _shadow_key, _shadow_failed = predictor, key, None
        return predictor


def reset_shadow_predictor() -> None:
    global _shadow, _shadow_key, _shadow_failed
    with _shadow_lock:
        _shadow, _shadow_key, _shadow_failed = None, None, None


# What a classification task asks for: both predictors, from one light query. The active and shadow rows'
# identifying columns (not their metrics or training JSON) are read on every call, so a switch made by an
# administrator reaches the next task in every process, as with get_predictor(); the predictors already
# loaded are reused while those columns are unchanged, and get_predictor() / get_shadow_predictor() (which
# register the bundled model, load, and raise ModelUnavailable) run only when they change.
_serving_sql: dict[str, str] = {}
_active_row: tuple | None = None  # (row key, the Predictor loaded for it)
_shadow_row: tuple | None = None
_bundled_name: tuple | None = None  # (stat of the bundled metadata file, its model name)


def _serving_rows() -> list[tuple]:
    """(pk, is_active, source, name, activated_at, shadow_since, checksums as stored) of the active and
    shadow versions: one statement, built once per process and database vendor."""
    from django.db import connections, router

    connection = connections[router.db_for_read(ModelVersion)]
    sql = _serving_sql.get(connection.vendor)
    if sql is None:
        quote, meta = connection.ops.quote_name, ModelVersion._meta
        names = ["id", "is_active", "source", "name", "activated_at", "shadow_since", "checksums"]
        columns = ", ".join(quote(meta.get_field(name).column) for name in names)
        active, shadow = (quote(meta.get_field(name).column) for name in ("is_active", "is_shadow"))
        sql = _serving_sql[connection.vendor] = (
            f"SELECT {columns} FROM {quote(meta.db_table)} WHERE {active} OR {shadow}"  # noqa: S608 - no values
        )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def _bundled_superseded(name: str) -> bool:
    """services.bundled_model_superseded for a bundled version named `name`, with the bundled metadata
    read again only when its file changes (stat) instead of on every task."""
    global _bundled_name
    from .model_folder import METADATA_FILE, read_model_metadata

    path = Path(settings.BUNDLED_MODEL_DIR) / METADATA_FILE
    try:
        stat = path.stat()
    except OSError:
        return False
    signature = (str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino)
    if _bundled_name is None or _bundled_name[0] != signature:
        try:
            _bundled_name = (signature, read_model_metadata(path.parent)["name"])
        except (OSError, ValueError, KeyError):
            return False
    return _bundled_name[1] != name


def get_serving_predictors() -> tuple[Predictor, Predictor | None]:
    """(get_predictor(), the shadow predictor or None) with one query when neither version changed.
    Raises ModelUnavailable like get_predictor(); a shadow that cannot be looked up or loaded is logged
    and None, like get_shadow_predictor()."""
    global _active_row, _shadow_row
    rows = _serving_rows()
    active = next((row for row in rows if row[1]), None)
    shadow = next((row for row in rows if not row[1]), None)
    predictor = None
    if active is not None:
        key = (active[0], active[4], active[6])
        cached = _active_row
        if cached is not None and cached[0] == key and cached[1] is _predictor:
            bundled = active[2] == ModelVersion.Source.BUNDLED
            if not (
                bundled and getattr(settings, "INFERENCE_AUTO_BUNDLED_MODEL", True) and _bundled_superseded(active[3])
            ):
                predictor = cached[1]
    if predictor is None:
        predictor = get_predictor()
        _active_row = (
            ((active[0], active[4], active[6]), predictor) if active and predictor.version.pk == active[0] else None
        )
    if shadow is None:
        return predictor, None
    key = (shadow[0], shadow[4], shadow[6], shadow[5])
    cached = _shadow_row
    if cached is not None and cached[0] == key and cached[1] is _shadow and _shadow is not None:
        return predictor, cached[1]
    try:
        loaded = get_shadow_predictor()
    except Exception:  # noqa: BLE001 - shadow mode is optional; the active path goes on without it
        logger.exception("the shadow model version could not be looked up; cells are classified without it")
        return predictor, None
    _shadow_row = (key, loaded) if loaded is not None and loaded.version.pk == shadow[0] else None
    return predictor, loaded
