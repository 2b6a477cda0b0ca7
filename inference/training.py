"""Training by class folders with one config holding every recipe's settings: the entry point scripts have
used since before the recipe registry (``inference.recipes``), kept so that they keep working.

``train(train_dirs=..., val_dir=..., config=TrainingConfig(...))`` runs the "whole-network" recipe when
``config.whole_network_size`` is set and the "frozen-head" recipe otherwise, each with the fields of this
config that it has. New code names a recipe and builds its own config (``recipes.get_recipe(name).config()``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .data import DatasetError
from .recipes import get_recipe, run
from .training_common import (
    Calibration,
    RecipeConfig,
    TrainingResult,
    balanced_class_weights,
    calibrate,
    null_progress,
    save_model_folder,
    tqdm_progress,
)

logger = logging.getLogger(__name__)


@dataclass
class TrainingConfig(RecipeConfig):
    # frozen-head: first backbone block fine-tuned in stage 2; None trains the head only.
    finetune_from: str | None = "block11"
    # whole-network when set: the internal resolution the whole network is fine-tuned at.
    whole_network_size: int | None = None
    head_epochs: int = 40
    head_learning_rate: float = 1e-3
    val_fraction: float = 0.1


def recipe_config(config: TrainingConfig) -> tuple[str, RecipeConfig]:
    """The recipe a TrainingConfig describes, and that recipe's own config."""
    recipe = get_recipe("whole-network" if config.whole_network_size else "frozen-head")
    names = recipe.config_fields()
    return recipe.name, recipe.config(**{key: value for key, value in vars(config).items() if key in names})


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
    recipe, recipe_cfg = recipe_config(config or TrainingConfig())
    return run(
        recipe,
        recipe_cfg,
        output_dir=output_dir,
        model_name=name,
        data_dirs=list(train_dirs),
        val_dirs=[val_dir] if val_dir is not None else [],
        cache_dir=cache_dir,
        progress=progress,
        log=log,
    )


__all__ = [
    "Calibration",
    "DatasetError",
    "TrainingConfig",
    "TrainingResult",
    "balanced_class_weights",
    "calibrate",
    "null_progress",
    "recipe_config",
    "save_model_folder",
    "tqdm_progress",
    "train",
]
