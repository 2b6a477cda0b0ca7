"""Does a per-window colour/stain normalisation help on a laboratory left out of training? A cheap proxy.

    nice -n 19 .venv/bin/python bench/stain_proxy.py --olympus-windows DIR [--per-class 300] [--aug-views 1] [--json]

Frozen ImageNet EfficientNet-Lite0 features (the project's offline backbone, batch norm folded, at 128 px, the
multilab recipe's internal size) of classifier windows, a class-balanced logistic
regression on standardised features trained on the training laboratories, scored on the laboratory left out:

- (a) PBC train + LISC  -> olympus val cells (the issue's direction), and PBC val;
- (b) PBC train + olympus train cells -> LISC (all 600 windows), and PBC val.

Every option normalises each window the same way for training and scoring, after the serving crop/resize to
128 px (and after augmentation, for the augmented rows). Options: none; reinhard (LAB mean/std per window to a
fixed reference); white_balance (channels scaled so the brightest 5% of pixels, the background, become a fixed
white); od_percentile (optical density per channel: background subtracted, 99th percentile scaled to a fixed
reference); macenko (two stain vectors and concentrations per window, re-rendered with a fixed reference stain
matrix); grey (a sanity bound). The fixed references are the median of the PBC training subset's per-window
statistics, so each option maps windows towards PBC's look.

``--olympus-windows DIR`` holds ``train/`` and ``val/`` class folders of the olympus cells cut at the canonical
scale (``inference.field_data.export_cell_windows``; ``manage.py train``'s cache holds them too). Test splits
are never read. Augmentation (``--aug-views N``, ``MULTILAB_AUGMENTATION``) adds N augmented views of every
training window ("aug" rows); 0 skips it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.data import MULTILAB_AUGMENTATION, augment, load_image_folder, load_rgb  # noqa: E402
from inference.preprocessing import fit_to_input, make_preprocessing  # noqa: E402

OPTIONS = ("none", "reinhard", "white_balance", "od_percentile", "macenko", "grey")
# The multilab classifier's internal size; the proxy crops and resizes each window straight to it (the recipe
# goes through a 224 px input first), which makes every normalisation 3x cheaper here.
SIZE = 128
DATASETS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


# ---------------------------------------------------------------------------------------------- normalisations
def _od(pixels: np.ndarray) -> np.ndarray:
    return -np.log((pixels.astype(np.float32) + 1.0) / 256.0)


def _from_od(density: np.ndarray) -> np.ndarray:
    return np.clip(np.exp(-np.maximum(density, 0.0)) * 256.0 - 1.0 + 0.5, 0, 255).astype(np.uint8)


def _content(pixels: np.ndarray) -> np.ndarray:
    """The window's pixels [M, 3] float32 without black padding (LISC rotations, cells cut at a field's edge)."""
    flat = pixels.reshape(-1, 3).astype(np.float32)
    kept = flat[flat.max(1) > 25]
    return kept if len(kept) >= 64 else flat


def _background(pixels: np.ndarray, share: float = 0.05) -> np.ndarray:
    """Mean RGB of the brightest ``share`` of pixels (by channel sum): the smear's background."""
    flat = pixels.reshape(-1, 3).astype(np.float32)
    brightness = flat.sum(1)
    cut = np.quantile(brightness, 1.0 - share)
    return flat[brightness >= cut].mean(0)


def _lab_stats(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from skimage.color import rgb2lab

    lab = rgb2lab(_content(pixels)[None] / 255.0)[0]
    return lab.mean(0), lab.std(0) + 1e-6


def _macenko_fit(pixels: np.ndarray, *, beta: float = 0.15, alpha: float = 1.0):
    """(stain matrix [3, 2] with unit columns, first the more red-absorbing, 99th-percentile concentrations
    [2], background RGB) of one window, or None when too few stained pixels."""
    background = np.maximum(_background(pixels), 1.0)
    density = np.maximum(-np.log((_content(pixels) + 1.0) / (background + 1.0)), 0.0)
    stained = density[density.sum(1) > 2 * beta]
    if len(stained) < 50:
        return None
    _, vectors = np.linalg.eigh(np.cov(stained.T))
    plane = vectors[:, 1:3]
    plane = plane * np.where(plane.sum(0) < 0, -1.0, 1.0)
    projected = stained @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, alpha), np.percentile(angles, 100 - alpha)
    v1 = plane @ np.array([np.cos(low), np.sin(low)])
    v2 = plane @ np.array([np.cos(high), np.sin(high)])
    stains = np.stack([v1, v2], 1) if v1[0] > v2[0] else np.stack([v2, v1], 1)
    stains = np.abs(stains) / (np.linalg.norm(stains, axis=0, keepdims=True) + 1e-8)
    concentrations = np.linalg.lstsq(stains, stained.T, rcond=None)[0]
    return stains, np.percentile(concentrations, 99, axis=1), background


class Normaliser:
    """One option, with its fixed reference (fitted on PBC training windows)."""

    def __init__(self, option: str, reference_windows: list[np.ndarray]):
        self.option = option
        self.reference: dict = {}
        if option == "reinhard":
            stats = [_lab_stats(w) for w in reference_windows]
            self.reference = {
                "mean": np.median([s[0] for s in stats], 0),
                "std": np.median([s[1] for s in stats], 0),
            }
        elif option == "white_balance":
            self.reference = {"white": np.median([_background(w) for w in reference_windows], 0)}
        elif option == "od_percentile":
            self.reference = {
                "background": np.median([_od(_background(w)) for w in reference_windows], 0),
                "p99": np.median([self._od_p99(w) for w in reference_windows], 0),
            }
        elif option == "macenko":
            fits = [f for f in (_macenko_fit(w) for w in reference_windows) if f is not None]
            self.reference = {
                "stains": np.median([f[0] for f in fits], 0),
                "max": np.median([f[1] for f in fits], 0),
                "background": np.median([f[2] for f in fits], 0),
            }
        self.fallbacks = 0

    @staticmethod
    def _od_p99(pixels: np.ndarray) -> np.ndarray:
        density = np.maximum(_od(_content(pixels)) - _od(_background(pixels)), 0.0)
        return np.percentile(density, 99, axis=0) + 1e-3

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        ref = self.reference
        if self.option == "none":
            return pixels
        if self.option == "grey":
            grey = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
            return np.repeat(np.clip(grey + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
        if self.option == "reinhard":
            from skimage.color import lab2rgb, rgb2lab

            lab = rgb2lab(pixels)
            mean, std = _lab_stats(pixels)
            lab = (lab - mean) / std * ref["std"] + ref["mean"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # out-of-gamut colours are clipped, as intended
                rgb = lab2rgb(lab)
            return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
        if self.option == "white_balance":
            gains = ref["white"] / np.maximum(_background(pixels), 1.0)
            return np.clip(pixels.astype(np.float32) * gains + 0.5, 0, 255).astype(np.uint8)
        if self.option == "od_percentile":
            density = np.maximum(_od(pixels) - _od(_background(pixels)), 0.0)
            density = density * (ref["p99"] / self._od_p99(pixels)) + ref["background"]
            return _from_od(density)
        if self.option == "macenko":
            fit = _macenko_fit(pixels)
            if fit is None:
                self.fallbacks += 1
                return pixels
            stains, maximum, background = fit
            flat = pixels.reshape(-1, 3).astype(np.float32)
            density = np.maximum(-np.log((flat + 1.0) / (background + 1.0)), 0.0)
            concentrations = np.linalg.lstsq(stains, density.T, rcond=None)[0]
            concentrations *= (ref["max"] / np.maximum(maximum, 1e-6))[:, None]
            out = (ref["background"] + 1.0) * np.exp(-(ref["stains"] @ concentrations)).T - 1.0
            return np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(pixels.shape)
        raise ValueError(f"unknown option {self.option!r}")


# ---------------------------------------------------------------------------------------------------- data
def balanced(dataset, per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(dataset.labels):
        members = np.flatnonzero(dataset.labels == label)
        keep.extend(rng.permutation(members)[:per_class] if per_class else members)
    return dataset.subset(np.sort(np.asarray(keep)))


def window_pixels(path: Path, preprocessing: dict, rng=None) -> np.ndarray:
    image = load_rgb(path)
    if rng is not None:
        image = augment(image, rng=rng, config=MULTILAB_AUGMENTATION)
    return np.asarray(fit_to_input(image, preprocessing), dtype=np.uint8)


def feature_model():
    from inference.whole_network import build_classifier

    config = SimpleNamespace(
        backbone="efficientnet_lite0", weights="imagenet", input_size=SIZE, whole_network_size=SIZE
    )
    return build_classifier(config, 2)


def features_of(model, windows: np.ndarray) -> np.ndarray:
    from inference.export import keras_outputs

    return keras_outputs(model, windows)[1]


def accuracy_of(train_x, train_y, tests, *, c: float, seed: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced", random_state=seed)
    model.fit(scaler.transform(train_x), train_y)
    return {name: float(np.mean(model.predict(scaler.transform(x)) == y)) for name, (x, y) in tests.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DATASETS)
    parser.add_argument("--olympus-windows", type=Path, required=True, help="folder with train/ and val/ cut cells")
    parser.add_argument("--options", default=",".join(OPTIONS))
    parser.add_argument("--per-class", type=int, default=300, help="training windows per class per lab (0: all)")
    parser.add_argument("--val-per-class", type=int, default=0, help="PBC val windows per class (0: all)")
    parser.add_argument("--aug-views", type=int, default=1, help="augmented views per training window (0: none)")
    parser.add_argument("--reference-windows", type=int, default=200)
    parser.add_argument("--C", type=float, default=0.1, dest="c")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    classes = sorted(
        ["BASOPHIL", "EOSINOPHIL", "ERYTHROBLAST", "IG", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL", "PLATELET"]
    )
    sets = {
        "pbc_train": balanced(
            load_image_folder([args.datasets / "pbc" / "train"], classes=classes, verify=False),
            args.per_class,
            args.seed,
        ),
        "pbc_val": balanced(
            load_image_folder([args.datasets / "pbc" / "val"], classes=classes, verify=False), args.val_per_class, 3
        ),
        "lisc": balanced(
            load_image_folder([args.datasets / "lisc" / "train"], classes=classes, verify=False), args.per_class, 1
        ),
        "olympus_train": balanced(
            load_image_folder([args.olympus_windows / "train"], classes=classes, verify=False), args.per_class, 2
        ),
        "olympus_val": balanced(load_image_folder([args.olympus_windows / "val"], classes=classes, verify=False), 0, 4),
    }
    training_sets = ("pbc_train", "lisc", "olympus_train")
    preprocessing = make_preprocessing(input_size=SIZE, scale="raw")
    plain = {name: [window_pixels(p, preprocessing) for p in ds.paths] for name, ds in sets.items()}
    augmented = {
        name: [
            window_pixels(p, preprocessing, rng=np.random.default_rng([args.seed, view + 1, i]))
            for view in range(args.aug_views)
            for i, p in enumerate(sets[name].paths)
        ]
        for name in training_sets
    }
    reference = plain["pbc_train"][:: max(1, len(plain["pbc_train"]) // args.reference_windows)]
    model = feature_model()
    results = {
        "counts": {name: len(ds) for name, ds in sets.items()},
        "per_class": args.per_class,
        "aug_views": args.aug_views,
        "C": args.c,
        "load_average": os.getloadavg()[0],
        "options": {},
    }
    for option in args.options.split(","):
        normalise = Normaliser(option, reference)
        cpu = time.process_time()
        normalised = {name: np.stack([normalise(w) for w in windows]) for name, windows in plain.items()}
        cpu_ms = 1000.0 * (time.process_time() - cpu) / sum(len(w) for w in plain.values())
        feats = {name: features_of(model, windows) for name, windows in normalised.items()}
        labels = {name: sets[name].labels for name in sets}
        aug_feats = {}
        if args.aug_views:
            aug_feats = {
                name: features_of(model, np.stack([normalise(w) for w in augmented[name]])) for name in training_sets
            }
        row = {"cpu_ms_per_window": cpu_ms, "macenko_fallbacks": normalise.fallbacks}
        directions = {"a": (("pbc_train", "lisc"), "olympus_val"), "b": (("pbc_train", "olympus_train"), "lisc")}
        for direction, (train_names, left_out) in directions.items():
            tests = {left_out: (feats[left_out], labels[left_out]), "pbc_val": (feats["pbc_val"], labels["pbc_val"])}
            for mode in ("plain", "aug") if args.aug_views else ("plain",):
                x = [feats[n] for n in train_names]
                y = [labels[n] for n in train_names]
                if mode == "aug":
                    x += [aug_feats[n] for n in train_names]
                    y += [np.tile(labels[n], args.aug_views) for n in train_names]
                scores = accuracy_of(np.concatenate(x), np.concatenate(y), tests, c=args.c, seed=args.seed)
                row[f"{direction}_{mode}"] = {"left_out": left_out, **scores}
        results["options"][option] = row
        if not args.json:
            print(f"{option}: {json.dumps(row)}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"counts {results['counts']}; C {args.c}; aug views {args.aug_views}; load {results['load_average']:.2f}")
    header = "| option | (a) olympus val | (a) PBC val | (b) LISC | (b) PBC val | CPU ms/window |"
    for mode in ("plain", "aug") if args.aug_views else ("plain",):
        print(f"\naugmentation {'off' if mode == 'plain' else 'on'}")
        print(header)
        print("|---|---|---|---|---|---|")
        for option, row in results["options"].items():
            a, b = row[f"a_{mode}"], row[f"b_{mode}"]
            print(
                f"| {option} | {100 * a['olympus_val']:.1f}% | {100 * a['pbc_val']:.2f}% | {100 * b['lisc']:.1f}% "
                f"| {100 * b['pbc_val']:.2f}% | {row['cpu_ms_per_window']:.2f} |"
            )


if __name__ == "__main__":
    main()
