"""Training recipes in a registry: each a name, its own config dataclass, where its data comes from, and a
train function. ``manage.py train --recipe NAME`` runs one; ``available_recipes()`` lists them.

- ``frozen-head``: cached frozen activations, a linear head, the top blocks fine-tuned (``frozen_head``).
- ``whole-network``: every layer fine-tuned, batch norm folded, at an internal size (``whole_network``).
- ``multilab``: the bundled model's recipe. The whole network at 128 px on three laboratories read from a
  datasets root: PBC train, the olympus training fields' labelled cells cut at the canonical scale
  (``field_data.export_cell_windows``, oversampled x3) and LISC train (x2); validation on PBC val and
  the olympus validation cells; ``MULTILAB_STYLE_MIX_AUGMENTATION`` (multilab's, other labs' look mixed
  in). ``without`` leaves laboratories out, which
  trains the leave-one-lab-out models (``multilab-no-olympus`` is PBC + LISC, validated on PBC val).
  Both fit the imaging profile of their laboratories into the model folder at the end (``imaging``).

Recipes that read class folders take ``--data`` (and ``--val-data`` or a validation fraction); recipes
that read a datasets root take ``--data-root``. Both take extra training folders (e.g. confirmed cells).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .data import MULTILAB_STYLE_MIX_AUGMENTATION, AugmentationConfig, DatasetError
from .frozen_head import FrozenHeadConfig, train_frozen_head
from .training_common import RecipeConfig, TrainingData, TrainingResult, null_progress
from .whole_network import WholeNetworkConfig, train_whole_network

logger = logging.getLogger(__name__)

# The laboratories a multilab data root holds, as sub-folders: class folders with train/val splits (PBC),
# manifest-layout fields (olympus), class folders of training windows only (LISC).
LABORATORIES = ("pbc", "olympus", "lisc")


class RecipeError(ValueError):
    """A recipe that does not exist, or data or options it cannot use; the message says why."""


@dataclass
class MultilabConfig(RecipeConfig):
    """Defaults are the bundled model's (``inference/bundled/metadata.json`` -> ``training.config``)."""

    whole_network_size: int = 128
    views: int = 2
    finetune_epochs: int = 5
    patience: int = 3
    # Other laboratories' look mixed in (style_mix): +10.1 / +7.8 points on the left-out olympus / LISC (model card).
    augmentation: AugmentationConfig = field(default_factory=lambda: MULTILAB_STYLE_MIX_AUGMENTATION)
    # How often each olympus training cell and each LISC window is repeated (the labs are small).
    olympus_repeat: int = 3
    lisc_repeat: int = 2
    # Chosen on PBC val + olympus val cells (docs/model-card.md): the mirror image averaged in.
    test_time_flips: str = "horizontal"
    # Chosen on PBC val + olympus val (model card, "Test-time flips only where unsure"): no label or flag changed
    # there, the mirror image skipped for 80% / 38% of their cells.
    flip_skip_confidence: float | None = 0.99
    # Exponential moving average of the weights kept in their place at the end (whole_network); 0: none.
    weight_average_momentum: float = 0.0
    # Laboratories left out (leave-one-lab-out models), e.g. ("olympus",).
    without: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    config_class: type[RecipeConfig]
    # (*, config, data, output_dir, name, cache_dir, progress, log, recipe) -> TrainingResult
    train_function: Callable[..., TrainingResult]
    # True: the data come from a datasets root (--data-root); False: from class folders (--data).
    reads_data_root: bool = False
    # Whether the recipe keeps anything in the cache folder (features, cut cells), or a function of its config.
    uses_cache: bool | Callable[[RecipeConfig], bool] = False
    # Config values that differ from the config class's defaults (a named variant of a recipe).
    preset: dict = field(default_factory=dict)
    # Fit the imaging profile of the datasets root's laboratories into the model folder after training.
    fits_imaging_profile: bool = False

    def config(self, **overrides) -> RecipeConfig:
        """The recipe's config: its defaults, its preset, then ``overrides`` (unknown fields refused)."""
        unknown = sorted(set(overrides) - self.config_fields())
        if unknown:
            raise RecipeError(f"recipe {self.name} has no setting(s) {', '.join(unknown)}")
        return self.config_class(**{**self.preset, **overrides})

    def cache_used(self, config: RecipeConfig) -> bool:
        return self.uses_cache(config) if callable(self.uses_cache) else self.uses_cache

    def config_fields(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self.config_class)}


_REGISTRY: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    if recipe.name in _REGISTRY:
        raise RecipeError(f"a recipe named {recipe.name!r} is registered already")
    _REGISTRY[recipe.name] = recipe
    return recipe


def available_recipes() -> list[str]:
    return sorted(_REGISTRY)


def get_recipe(name: str) -> Recipe:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RecipeError(f"unknown recipe {name!r}; recipes: {', '.join(available_recipes())}") from None


def training_data(
    recipe: Recipe,
    config: RecipeConfig,
    *,
    data_dirs: list[Path] = (),
    val_dirs: list[Path] = (),
    data_root: Path | None = None,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = logger.info,
) -> TrainingData:
    """What ``recipe`` trains on: ``data_dirs`` (and ``val_dirs``) for folder recipes; for a recipe that
    reads a datasets root, its laboratories there plus ``data_dirs`` as extra training folders."""
    data_dirs, val_dirs = [Path(p) for p in data_dirs], [Path(p) for p in val_dirs]
    if not recipe.reads_data_root:
        if data_root is not None:
            raise RecipeError(f"recipe {recipe.name} reads class folders (--data), not a datasets root")
        if not data_dirs:
            raise RecipeError(f"recipe {recipe.name} needs training folders (--data)")
        return TrainingData(train_dirs=data_dirs, val_dirs=val_dirs)
    if data_root is None:
        raise RecipeError(f"recipe {recipe.name} needs a datasets root (--data-root) holding {', '.join(LABORATORIES)}")
    if val_dirs:
        raise RecipeError(f"recipe {recipe.name} chooses its own validation data; --val-data does nothing with it")
    return multilab_data(config, data_root=Path(data_root), extra_dirs=data_dirs, cache_dir=cache_dir, log=log)


def run(
    name: str,
    config: RecipeConfig | None = None,
    *,
    output_dir: Path,
    model_name: str,
    data_dirs: list[Path] = (),
    val_dirs: list[Path] = (),
    data_root: Path | None = None,
    cache_dir: Path | None = None,
    progress: Callable = null_progress,
    log: Callable[[str], None] = logger.info,
) -> TrainingResult:
    """Train one recipe end to end and write its model folder to ``output_dir``."""
    recipe = get_recipe(name)
    config = config or recipe.config()
    if not isinstance(config, recipe.config_class):
        raise RecipeError(f"recipe {recipe.name} takes a {recipe.config_class.__name__}, not {type(config).__name__}")
    data = training_data(
        recipe, config, data_dirs=data_dirs, val_dirs=val_dirs, data_root=data_root, cache_dir=cache_dir, log=log
    )
    result = recipe.train_function(
        config=config, data=data, output_dir=output_dir, name=model_name, cache_dir=cache_dir, progress=progress,
        log=log, recipe=recipe.name,
    )  # fmt: skip
    if recipe.fits_imaging_profile:
        fit_imaging_profile_from_root(
            data_root=Path(data_root), output_dir=output_dir, without=tuple(config.without), cache_dir=cache_dir,
            log=log,
        )  # fmt: skip
    return result


def multilab_data(
    config: MultilabConfig,
    *,
    data_root: Path,
    extra_dirs: list[Path] = (),
    cache_dir: Path | None = None,
    log: Callable[[str], None] = logger.info,
) -> TrainingData:
    """PBC train + olympus training cells (x olympus_repeat) + LISC train (x lisc_repeat) and the extra
    folders; validation PBC val + olympus validation cells; the laboratories in ``config.without`` left out.
    The olympus cells are cut once into ``cache_dir`` (``olympus_cell_windows``)."""
    without = set(config.without)
    unknown = sorted(without - set(LABORATORIES))
    if unknown:
        raise RecipeError(f"unknown laboratory {', '.join(unknown)}; laboratories: {', '.join(LABORATORIES)}")
    if {"pbc", "olympus"} <= without:
        raise RecipeError("leaving out both PBC and olympus leaves nothing to validate on")
    train_dirs: list[Path] = []
    train_names: list[str] = []
    val_dirs: list[Path] = []
    val_names: list[str] = []

    def folder(*parts: str) -> Path:
        path = data_root.joinpath(*parts)
        if not path.is_dir():
            raise DatasetError(f"data folder not found: {path}")
        return path

    if "pbc" not in without:
        train_dirs.append(folder("pbc", "train"))
        train_names.append("pbc/train")
        val_dirs.append(folder("pbc", "val"))
        val_names.append("pbc/val")
    if "olympus" not in without:
        olympus = folder("olympus")
        for split, repeat in (("train", config.olympus_repeat), ("val", 1)):
            windows = olympus_cell_windows(olympus, split=split, cache_dir=cache_dir, log=log)
            if split == "train":
                train_dirs.extend([windows] * repeat)
                train_names.append(f"olympus/train (cell windows, x{repeat})")
            else:
                val_dirs.append(windows)
                val_names.append("olympus/val (cell windows)")
    if "lisc" not in without:
        train_dirs.extend([folder("lisc", "train")] * config.lisc_repeat)
        train_names.append(f"lisc/train (x{config.lisc_repeat})")
    for extra in extra_dirs:
        train_dirs.append(Path(extra))
        train_names.append(str(extra))
    return TrainingData(
        train_dirs=train_dirs,
        val_dirs=val_dirs,
        train_names=train_names,
        val_name=" + ".join(val_names),
    )


def olympus_cell_windows(
    olympus: Path, *, split: str, cache_dir: Path | None, log: Callable[[str], None] = logger.info
) -> Path:
    """The folder of the olympus ``split`` fields' labelled cells cut at the canonical scale (cut once
    into ``cache_dir``; ``export_cell_windows`` skips cells already cut)."""
    from .field_data import export_cell_windows

    root = Path(cache_dir) if cache_dir is not None else olympus.parent / ".cache"
    key = hashlib.sha256(str(olympus.resolve()).encode()).hexdigest()[:12]
    windows = root / "cell-windows" / key / split
    counts = export_cell_windows(olympus, split=split, output_dir=windows)
    log(f"olympus {split} cells cut at the canonical scale: {counts}")
    return windows


def multilab_laboratories(
    *,
    data_root: Path,
    without: tuple[str, ...] = (),
    cache_dir: Path | None = None,
    log: Callable[[str], None] = logger.info,
):
    """The training laboratories of a datasets root, each with its training and validation windows, for
    the imaging profile (``imaging.LaboratoryWindows``): PBC train/val, the olympus train/val cells, LISC
    train (no validation split)."""
    from .imaging import LaboratoryWindows

    unknown = sorted(set(without) - set(LABORATORIES))
    if unknown:
        raise RecipeError(f"unknown laboratory {', '.join(unknown)}; laboratories: {', '.join(LABORATORIES)}")
    data_root = Path(data_root)

    def folder(*parts: str) -> Path:
        path = data_root.joinpath(*parts)
        if not path.is_dir():
            raise DatasetError(f"data folder not found: {path}")
        return path

    laboratories = []
    if "pbc" not in without:
        laboratories.append(LaboratoryWindows("pbc", (folder("pbc", "train"),), (folder("pbc", "val"),)))
    if "olympus" not in without:
        olympus = folder("olympus")
        train, val = (olympus_cell_windows(olympus, split=s, cache_dir=cache_dir, log=log) for s in ("train", "val"))
        laboratories.append(LaboratoryWindows("olympus", (train,), (val,)))
    if "lisc" not in without:
        laboratories.append(LaboratoryWindows("lisc", (folder("lisc", "train"),)))
    if not laboratories:
        raise RecipeError("no laboratory left to fit an imaging profile on")
    return laboratories


def fit_imaging_profile_from_root(
    *,
    data_root: Path,
    output_dir: Path,
    without: tuple[str, ...] = (),
    cache_dir: Path | None = None,
    per_lab: int | None = None,
    quantile: float | None = None,
    log: Callable[[str], None] = logger.info,
):
    """Fit the imaging profile of a datasets root's laboratories and write it into ``output_dir`` (a model
    folder, or a plain folder); returns the ``FittedImagingProfile``."""
    from .imaging import DEFAULT_PER_LAB, DEFAULT_QUANTILE, fit_imaging_profile, write_imaging_profile

    laboratories = multilab_laboratories(data_root=data_root, without=without, cache_dir=cache_dir, log=log)
    quantile = DEFAULT_QUANTILE if quantile is None else quantile
    fitted = fit_imaging_profile(
        laboratories, per_lab=DEFAULT_PER_LAB if per_lab is None else per_lab, quantile=quantile, log=log
    )
    write_imaging_profile(output_dir, fitted, quantile=quantile)
    log(f"imaging profile: threshold {fitted.profile.threshold:.3f}, {fitted.seconds:.1f} s, {fitted.summary}")
    return fitted


def _frozen_head(*, config, data, output_dir, name, cache_dir, progress, log, recipe):
    if cache_dir is None:
        raise RecipeError("the frozen-head recipe needs a feature cache folder")
    return train_frozen_head(
        config=config, data=data, output_dir=output_dir, name=name, cache_dir=cache_dir, progress=progress, log=log
    )


def _whole_network(*, config, data, output_dir, name, cache_dir, progress, log, recipe):
    return train_whole_network(
        config=config, data=data, output_dir=output_dir, name=name, progress=progress, log=log, recipe=recipe
    )


def _cuts_olympus_cells(config: MultilabConfig) -> bool:
    return "olympus" not in config.without


register(
    Recipe(
        name="frozen-head",
        description="cached frozen activations, linear head, top blocks fine-tuned (fast on a CPU)",
        config_class=FrozenHeadConfig,
        train_function=_frozen_head,
        uses_cache=True,
    )
)
register(
    Recipe(
        name="whole-network",
        description="every layer fine-tuned, batch norm folded, at an internal size",
        config_class=WholeNetworkConfig,
        train_function=_whole_network,
    )
)
register(
    Recipe(
        name="multilab",
        description="the bundled model: PBC + olympus cells + LISC, whole network at 128 px",
        config_class=MultilabConfig,
        train_function=_whole_network,
        reads_data_root=True,
        uses_cache=_cuts_olympus_cells,
        fits_imaging_profile=True,
    )
)
register(
    Recipe(
        name="multilab-no-olympus",
        description="leave-one-lab-out: the multilab recipe on PBC + LISC, validated on PBC val",
        config_class=MultilabConfig,
        train_function=_whole_network,
        reads_data_root=True,
        uses_cache=_cuts_olympus_cells,
        preset={"without": ("olympus",)},
        fits_imaging_profile=True,
    )
)
