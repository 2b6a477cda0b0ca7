"""Imaging profile: does a window look as if it came from one of the laboratories the model was trained on?

The confidence and the out-of-distribution score both look at what the classifier sees, and a new
laboratory's cells still get confident wrong answers. This check looks at the acquisition instead, with a
few statistics of the window that differ between microscopes, cameras and stains but hardly between cell
classes: the background's colour, the stain's colour and strength, saturation, sharpness and noise. Each
training laboratory is a Gaussian over them with its own shrunk covariance (``ood.MahalanobisScorer`` per
laboratory: a standardised analyser such as PBC's varies far less than manual microscope fields, and one
covariance shared by both let most of a left-out laboratory through), and a window farther from the
nearest laboratory than a high percentile of the training laboratories' validation windows is flagged
``unfamiliar_imaging``.

Independent of the classifier (plain numpy on the window, well under a millisecond), so it works on any
model folder that carries the statistics (``model_folder.IMAGING_PROFILE_FILE``); a folder without them
flags nothing.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .ood import MahalanobisScorer

logger = logging.getLogger(__name__)

UNFAMILIAR_IMAGING = "unfamiliar_imaging"
# Windows are measured at one small size (about what the classifier's 128 px backbone input resolves), so
# a statistic does not change with the upload's pixel count.
PROFILE_SIZE = 64
# The brightest pixels are the smear's background; the most absorbing ones the stained object.
BACKGROUND_QUANTILE = 0.8
STAINED_QUANTILE = 0.9
DEFAULT_QUANTILE = 0.995
DEFAULT_PER_LAB = 800
# A laboratory without a validation split gives this share of its (sampled) training windows to the
# threshold instead of to the fit, so every training laboratory is represented in the threshold.
HELD_OUT_SHARE = 0.25
FEATURE_NAMES = (
    "background_od_red",
    "background_od_green",
    "background_od_blue",
    "stain_direction_red",
    "stain_direction_green",
    "stain_direction_blue",
    "stain_log_strength",
    "mean_saturation",
    "log_laplacian_variance",
    "log_background_noise",
)
PROFILE_VERSION = 1


def _small(window: Image.Image) -> np.ndarray:
    """The window at PROFILE_SIZE: an integer box reduction first (cheap on large uploads), then a box resize."""
    if window.mode != "RGB":  # serving windows are RGB already: convert() would copy them
        window = window.convert("RGB")
    factor = min(window.size) // (2 * PROFILE_SIZE)
    if factor > 1:
        window = window.reduce(factor)
    small = window.resize((PROFILE_SIZE, PROFILE_SIZE), Image.Resampling.BOX)
    # Channel-first: numpy reduces over three channels far faster as three rows than as a short last axis.
    return np.ascontiguousarray(np.asarray(small, dtype=np.float32).reshape(-1, 3).T)


def imaging_profile(window: Image.Image) -> np.ndarray:
    """The acquisition statistics of one classified window (any size, RGB), as FEATURE_NAMES."""
    pixels = _small(window)
    red, green, blue = pixels
    count = pixels.shape[1]
    density = -np.log((pixels + 1.0) * (1.0 / 256.0))  # absolute optical density, 0 for white
    total = density[0] + density[1] + density[2]
    order = np.argpartition(total, (int(count * (1.0 - BACKGROUND_QUANTILE)), int(count * STAINED_QUANTILE)))
    background = order[: int(count * (1.0 - BACKGROUND_QUANTILE))]
    background_density = density[:, background].mean(axis=1)
    stain = np.maximum(density[:, order[int(count * STAINED_QUANTILE) :]].mean(axis=1) - background_density, 0.0)
    strength = float(np.sqrt(stain @ stain))
    direction = stain / strength if strength > 1e-6 else np.full(3, 1.0 / np.sqrt(3.0))
    brightest = np.maximum(np.maximum(red, green), blue)
    darkest = np.minimum(np.minimum(red, green), blue)
    saturation = float(np.mean((brightest - darkest) / np.maximum(brightest, 1.0)))
    grey = ((red + green + blue) * (1.0 / 3.0)).reshape(PROFILE_SIZE, PROFILE_SIZE)
    laplacian = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4.0 * grey[1:-1, 1:-1]
    is_background = np.zeros(count, dtype=bool)
    is_background[background] = True
    inner_background = is_background.reshape(PROFILE_SIZE, PROFILE_SIZE)[1:-1, 1:-1]
    noise = float(np.abs(laplacian[inner_background]).mean()) if inner_background.any() else 0.0
    return np.array(
        [
            *background_density,
            *direction,
            np.log(strength + 1e-3),
            saturation,
            np.log(float(laplacian.var()) + 1.0),
            np.log(noise + 0.5),
        ],
        dtype=np.float64,
    )


def imaging_profiles(windows: Sequence[Image.Image]) -> np.ndarray:
    if not windows:
        return np.zeros((0, len(FEATURE_NAMES)))
    return np.stack([imaging_profile(window) for window in windows])


@dataclass(frozen=True)
class ImagingProfile:
    """Per-laboratory Gaussians over the imaging statistics and the distance beyond which a window is
    imaged unlike every one of them."""

    scorers: tuple[MahalanobisScorer, ...]  # one per laboratory
    threshold: float
    laboratories: tuple[str, ...]

    def scores(self, windows: Sequence[Image.Image]) -> np.ndarray:
        """Squared distance to the nearest training laboratory over the feature count (about 1 inside)."""
        return self.scores_of_profiles(imaging_profiles(windows))

    def scores_of_profiles(self, profiles: np.ndarray) -> np.ndarray:
        if len(profiles) == 0:
            return np.zeros(0)
        return np.min([scorer.score(profiles) for scorer in self.scorers], axis=0)

    def unfamiliar(self, windows: Sequence[Image.Image]) -> list[bool]:
        return [bool(score > self.threshold) for score in self.scores(windows)]

    def save(self, path: Path) -> None:
        with open(path, "wb") as stream:
            np.savez(
                stream,
                means=np.stack([scorer.means[0] for scorer in self.scorers]),
                whitening=np.stack([scorer.whitening for scorer in self.scorers]),
                threshold=np.float64(self.threshold),
                laboratories=np.array(self.laboratories, dtype=str),
                feature_names=np.array(FEATURE_NAMES, dtype=str),
                version=np.int64(PROFILE_VERSION),
            )

    @classmethod
    def load(cls, path: Path) -> ImagingProfile:
        with np.load(path, allow_pickle=False) as data:
            if tuple(str(name) for name in data["feature_names"]) != FEATURE_NAMES:
                raise ValueError(f"{path} was fitted on other imaging statistics than this code computes")
            means, whitening = data["means"], data["whitening"]
            if means.ndim != 2 or whitening.ndim != 3 or len(means) != len(whitening):
                raise ValueError(f"{path}: inconsistent statistics, means {means.shape}, whitening {whitening.shape}")
            return cls(
                scorers=tuple(
                    MahalanobisScorer(means=mean[None, :], whitening=white)
                    for mean, white in zip(means, whitening, strict=True)
                ),
                threshold=float(data["threshold"]),
                laboratories=tuple(str(name) for name in data["laboratories"]),
            )


@dataclass(frozen=True)
class LaboratoryWindows:
    """One training laboratory's windows: training folders (class sub-folders, or images directly) and
    validation folders (none: a share of the training windows is held out for the threshold)."""

    name: str
    train_dirs: tuple[Path, ...]
    val_dirs: tuple[Path, ...] = ()


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def image_files(directories: Sequence[Path]) -> list[Path]:
    files = set()
    for directory in directories:
        files.update(
            path
            for path in Path(directory).rglob("*")
            if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.endswith(".partial.png")
        )
    return sorted(files)


def _sample(paths: list[Path], count: int | None, rng: random.Random) -> list[Path]:
    if count is None or len(paths) <= count:
        return list(paths)
    return sorted(rng.sample(paths, count))


def _profiles_of(paths: Sequence[Path]) -> np.ndarray:
    from .data import load_rgb

    return imaging_profiles([load_rgb(path) for path in paths])


@dataclass(frozen=True)
class FittedImagingProfile:
    profile: ImagingProfile
    # Per laboratory: windows fitted, validation windows, and the share of those above the threshold.
    summary: dict[str, dict]
    seconds: float

    def metadata(self, *, quantile: float) -> dict:
        return {
            "threshold": self.profile.threshold,
            "quantile": quantile,
            "laboratories": list(self.profile.laboratories),
            "features": list(FEATURE_NAMES),
            "windows": self.summary,
        }


def fit_imaging_profile(
    laboratories: Sequence[LaboratoryWindows],
    *,
    per_lab: int | None = DEFAULT_PER_LAB,
    quantile: float = DEFAULT_QUANTILE,
    seed: int = 0,
    log: Callable[[str], None] = logger.info,
) -> FittedImagingProfile:
    """Fit one Gaussian per laboratory on up to ``per_lab`` training windows each (a laboratory with fewer
    windows than the statistics need is still fitted: the covariance is shrunk), and the threshold at
    ``quantile`` of every laboratory's validation windows (up to ``per_lab`` each)."""
    if not laboratories:
        raise ValueError("an imaging profile needs at least one training laboratory")
    started = time.perf_counter()
    rng = random.Random(seed)
    fit_features, val_features, val_labels = [], [], []
    for index, laboratory in enumerate(laboratories):
        train = image_files(laboratory.train_dirs)
        if not train:
            folders = ", ".join(map(str, laboratory.train_dirs))
            raise ValueError(f"no training windows for {laboratory.name} in {folders}")
        if laboratory.val_dirs:
            fit_paths = _sample(train, per_lab, rng)
            val_paths = _sample(image_files(laboratory.val_dirs), per_lab, rng)
        else:
            chosen = _sample(train, per_lab, rng)
            rng.shuffle(chosen)
            held_out = max(1, round(len(chosen) * HELD_OUT_SHARE))
            fit_paths, val_paths = sorted(chosen[held_out:]), sorted(chosen[:held_out])
        if not val_paths:
            raise ValueError(f"no validation windows for {laboratory.name}")
        fit_features.append(_profiles_of(fit_paths))
        val_features.append(_profiles_of(val_paths))
        val_labels.append(np.full(len(val_paths), index))
        log(f"imaging profile: {laboratory.name}: {len(fit_paths)} windows fitted, {len(val_paths)} for the threshold")
    scorers = tuple(
        MahalanobisScorer.fit(features, np.zeros(len(features), dtype=np.int64), n_classes=1)
        for features in fit_features
    )
    profile = ImagingProfile(scorers=scorers, threshold=np.inf, laboratories=tuple(lab.name for lab in laboratories))
    validation_scores = profile.scores_of_profiles(np.concatenate(val_features))
    threshold = float(np.quantile(validation_scores, quantile))
    labels = np.concatenate(val_labels)
    summary = {
        laboratory.name: {
            "fitted": int(len(fit_features[index])),
            "validation": int(np.sum(labels == index)),
            "validation_flagged": float(np.mean(validation_scores[labels == index] > threshold)),
        }
        for index, laboratory in enumerate(laboratories)
    }
    profile = ImagingProfile(scorers=scorers, threshold=threshold, laboratories=profile.laboratories)
    return FittedImagingProfile(profile=profile, summary=summary, seconds=time.perf_counter() - started)


# A fitted profile written outside a model folder: the statistics and their description side by side, to
# attach to a model folder later (``attach_imaging_profile``).
PROFILE_DESCRIPTION_FILE = "imaging_profile.json"


def write_imaging_profile(directory: Path, fitted: FittedImagingProfile, *, quantile: float) -> Path:
    """Save the profile into ``directory``: into a model folder (one holding ``metadata.json``) as its
    imaging artifact, recorded in the metadata with its checksum; into any other folder as the statistics
    and ``imaging_profile.json``."""
    from .model_folder import IMAGING_PROFILE_FILE, IMAGING_PROFILE_KEY, METADATA_FILE

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / IMAGING_PROFILE_FILE
    fitted.profile.save(path)
    description = fitted.metadata(quantile=quantile)
    if (directory / METADATA_FILE).is_file():
        _record_in_model_folder(directory, description)
    else:
        with open(directory / PROFILE_DESCRIPTION_FILE, "w", encoding="utf-8") as stream:
            json.dump({IMAGING_PROFILE_KEY: description}, stream, indent=2, sort_keys=True)
            stream.write("\n")
    return path


def attach_imaging_profile(model_dir: Path, source_dir: Path) -> Path:
    """Copy a profile written outside a model folder (``write_imaging_profile``) into ``model_dir``."""
    from .model_folder import IMAGING_PROFILE_FILE, IMAGING_PROFILE_KEY, read_model_metadata

    model_dir, source_dir = Path(model_dir), Path(source_dir)
    read_model_metadata(model_dir)  # a model folder, or FileNotFoundError
    ImagingProfile.load(source_dir / IMAGING_PROFILE_FILE)  # readable by this code, or ValueError
    with open(source_dir / PROFILE_DESCRIPTION_FILE, encoding="utf-8") as stream:
        description = json.load(stream)[IMAGING_PROFILE_KEY]
    shutil.copyfile(source_dir / IMAGING_PROFILE_FILE, model_dir / IMAGING_PROFILE_FILE)
    _record_in_model_folder(model_dir, description)
    return model_dir / IMAGING_PROFILE_FILE


def _record_in_model_folder(directory: Path, description: dict) -> None:
    from .model_folder import IMAGING_PROFILE_KEY, read_model_metadata, write_model_metadata

    metadata = read_model_metadata(directory)
    metadata[IMAGING_PROFILE_KEY] = description
    write_model_metadata(directory, metadata, with_checksums=True)


def load_imaging_profile(path: Path) -> ImagingProfile | None:
    """The profile at ``path``, or None when the model folder has none (nothing is flagged then)."""
    path = Path(path)
    return ImagingProfile.load(path) if path.is_file() else None


# Serving: the profile of the predictor's model version, loaded once per predictor (the predictor itself is
# loaded once per process and replaced when the active version changes).
_serving_profiles: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_serving_lock = threading.Lock()


def serving_profile(predictor) -> ImagingProfile | None:
    """The imaging profile of ``predictor``'s model version, or None when its folder has none. A profile
    listed in the version's checksums must be there and match (``ModelUnavailable`` otherwise)."""
    with _serving_lock:
        if predictor in _serving_profiles:
            return _serving_profiles[predictor]
        profile = _load_serving_profile(predictor)
        _serving_profiles[predictor] = profile
        return profile


def _load_serving_profile(predictor) -> ImagingProfile | None:
    from .model_folder import IMAGING_PROFILE_FILE
    from .predictor import ModelUnavailable
    from .registry import artifact_path

    version = predictor.version
    listed = IMAGING_PROFILE_FILE in (version.checksums or {})
    if not listed and not artifact_path(version, IMAGING_PROFILE_FILE).is_file():
        return None  # a model without a profile flags nothing
    # Present and checksummed like every other file of the version (ModelUnavailable when missing or damaged).
    path = predictor.verified_path(IMAGING_PROFILE_FILE)
    try:
        return ImagingProfile.load(path)
    except (ValueError, OSError, KeyError) as exc:
        raise ModelUnavailable(f"imaging profile unreadable at {path}: {exc}") from exc


def unfamiliar_windows(predictor, windows: Sequence[Image.Image]) -> list[bool]:
    """Which windows are imaged unlike every training laboratory of ``predictor``'s model (all False when
    the model has no imaging profile)."""
    profile = serving_profile(predictor) if hasattr(predictor, "version") else None
    if profile is None or not windows:
        return [False] * len(windows)
    return profile.unfamiliar(windows)


# --- A laboratory added by adaptation ---------------------------------------------------------------------
#
# A model adapted on one laboratory's reviewed cells must take that laboratory as familiar, or it flags every
# cell of the very lab that trained it (and the activation gate's flagged share refuses every candidate). The
# adapted model's profile is the base's laboratories plus one Gaussian fitted on the windows the classifier
# was fine-tuned on. A lab gives few of them (tens to hundreds, against 800 per training laboratory), so the
# new covariance is shrunk toward the base laboratories' pooled one, as a prior worth
# ADAPTED_PRIOR_WINDOWS windows: with 40 windows the pooled shape still counts for half, with 400 for a tenth.
# Below MIN_ADAPTED_WINDOWS not even the mean is trustworthy (10 statistics), so no laboratory is added and
# the base profile is copied unchanged. The threshold stays the base's: it was chosen on validation windows
# of the training laboratories, and the adapting lab has no validation windows of its own to choose on.
MIN_ADAPTED_WINDOWS = 20
ADAPTED_PRIOR_WINDOWS = 40


def _covariance_of(scorer: MahalanobisScorer) -> np.ndarray:
    """The covariance behind a scorer's whitening (W @ W.T is its inverse)."""
    return np.linalg.inv(scorer.whitening @ scorer.whitening.T)


def _whitening_of(covariance: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh((covariance + covariance.T) / 2.0)
    eigenvalues = np.maximum(eigenvalues, max(float(eigenvalues.max()) * 1e-9, 1e-12))
    return eigenvectors / np.sqrt(eigenvalues)


def with_laboratory(
    profile: ImagingProfile,
    name: str,
    features: np.ndarray,
    *,
    prior_windows: float = ADAPTED_PRIOR_WINDOWS,
) -> ImagingProfile:
    """``profile`` plus one laboratory fitted on ``features`` (its windows' imaging statistics): their mean,
    and their covariance shrunk toward the mean covariance of ``profile``'s laboratories as if the pooled
    shape had been seen on ``prior_windows`` windows. Same threshold."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] != len(FEATURE_NAMES) or len(features) < 2:
        raise ValueError(f"need at least two windows' imaging statistics, got an array of shape {features.shape}")
    pooled = np.mean([_covariance_of(scorer) for scorer in profile.scorers], axis=0)
    mean = features.mean(axis=0)
    count = len(features)
    scatter = (features - mean).T @ (features - mean)
    covariance = (scatter + prior_windows * pooled) / (count + prior_windows)
    scorer = MahalanobisScorer(means=mean[None, :], whitening=_whitening_of(covariance))
    laboratories = (*profile.laboratories, name)
    if len(set(laboratories)) != len(laboratories):
        raise ValueError(f"the imaging profile already has a laboratory named {name!r}")
    return ImagingProfile(scorers=(*profile.scorers, scorer), threshold=profile.threshold, laboratories=laboratories)


def adapted_imaging_profile(
    base_dir: Path,
    output_dir: Path,
    *,
    laboratory: str,
    paths: Sequence[Path],
    min_windows: int = MIN_ADAPTED_WINDOWS,
    prior_windows: float = ADAPTED_PRIOR_WINDOWS,
) -> tuple[dict | None, dict]:
    """Write the adapted model's imaging profile into ``output_dir``: ``base_dir``'s with ``laboratory`` fitted
    on the windows at ``paths``, or the base's copied unchanged when there are fewer than ``min_windows``.
    Returns (the description for the metadata key ``imaging_profile``, or None when the base has no profile
    and nothing is written; a report of what was done). The caller records the description in the
    metadata and writes it with checksums."""
    from .model_folder import IMAGING_PROFILE_FILE, IMAGING_PROFILE_KEY, read_model_metadata

    base_dir, output_dir = Path(base_dir), Path(output_dir)
    base = load_imaging_profile(base_dir / IMAGING_PROFILE_FILE)
    if base is None:
        return None, {"status": "none", "reason": "the base model has no imaging profile"}
    description = dict(read_model_metadata(base_dir).get(IMAGING_PROFILE_KEY) or {})
    description.setdefault("threshold", base.threshold)
    description.setdefault("features", list(FEATURE_NAMES))
    windows = dict(description.get("windows") or {})
    output_dir.mkdir(parents=True, exist_ok=True)
    if len(paths) < min_windows:
        base.save(output_dir / IMAGING_PROFILE_FILE)
        report = {
            "status": "copied",
            "windows": len(paths),
            "min_windows": min_windows,
            "reason": f"fewer than {min_windows} cells to fit the laboratory on: the base profile is kept",
        }
        description["laboratories"] = list(base.laboratories)
        description["adaptation"] = report
        return description, report
    features = _profiles_of(list(paths))
    adapted = with_laboratory(base, laboratory, features, prior_windows=prior_windows)
    adapted.save(output_dir / IMAGING_PROFILE_FILE)
    report = {
        "status": "added",
        "laboratory": laboratory,
        "windows": len(paths),
        "prior_windows": prior_windows,
        "fitted_flagged": float(np.mean(adapted.scores_of_profiles(features) > adapted.threshold)),
    }
    windows[laboratory] = {"fitted": len(paths), "validation": 0, "validation_flagged": None}
    description.update(laboratories=list(adapted.laboratories), windows=windows, adaptation=report)
    return description, report
