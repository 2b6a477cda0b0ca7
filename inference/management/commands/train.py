"""manage.py train --recipe NAME: one training recipe of the registry (``inference.recipes``), then
calibration, export and registration.

Recipes that read class folders take ``--data`` (``--val-data`` or ``--val-fraction``); the multilab
recipes read a datasets root (``--data-root``). A setting the chosen recipe does not have is refused rather
than ignored, so a command line always means what it says.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.module_loading import import_string

from inference.backbones import UnknownBackbone, WeightsUnavailable, available_backbones
from inference.data import AUGMENTATIONS, DatasetError
from inference.management.commands._model_folders import (
    add_output_arguments,
    output_folder,
    report_and_register,
)
from inference.recipes import LABORATORIES, RecipeError, available_recipes, get_recipe, run
from inference.training_common import null_progress, tqdm_progress


def _none_or(value: str) -> str | None:
    return None if value == "none" else value


# Option -> (flag, config field, conversion). Given only when typed: the defaults are each recipe's own.
CONFIG_OPTIONS = {
    "backbone": ("--backbone", "backbone", str),
    "weights": ("--weights", "weights", _none_or),
    "input_size": ("--input-size", "input_size", int),
    "finetune_from": ("--finetune-from", "finetune_from", _none_or),
    "whole_network_size": ("--whole-network-size", "whole_network_size", int),
    "views": ("--views", "views", int),
    "epochs": ("--epochs", "finetune_epochs", int),
    "head_epochs": ("--head-epochs", "head_epochs", int),
    "batch_size": ("--batch-size", "batch_size", int),
    "learning_rate": ("--learning-rate", "finetune_learning_rate", float),
    "patience": ("--patience", "patience", int),
    "weight_average": ("--weight-average", "weight_average_momentum", float),
    "seed": ("--seed", "seed", int),
    "threads": ("--threads", "num_threads", int),
    "val_fraction": ("--val-fraction", "val_fraction", float),
    "without": ("--without", "without", tuple),
    "olympus_repeat": ("--olympus-repeat", "olympus_repeat", int),
    "lisc_repeat": ("--lisc-repeat", "lisc_repeat", int),
    "augmentation": ("--augmentation", "augmentation", AUGMENTATIONS.__getitem__),
}


class Command(BaseCommand):
    help = "Train a classifier with one of the training recipes and register it."

    def add_arguments(self, parser):
        parser.add_argument(
            "--recipe",
            choices=available_recipes(),
            help='training recipe (default: "frozen-head", or "whole-network" with --whole-network-size): '
            + "; ".join(f"{name}: {get_recipe(name).description}" for name in available_recipes()),
        )
        data = parser.add_argument_group("data")
        data.add_argument("--data", type=Path, help="training images, one sub-folder per class (folder recipes)")
        data.add_argument("--data-root", type=Path, help="datasets root holding pbc/, olympus/, lisc/ (multilab)")
        data.add_argument("--extra-data", action="append", type=Path, default=[], help="more training folders")
        data.add_argument(
            "--include-confirmed",
            action="store_true",
            help="add the cells whose labels pathologists confirmed (settings.CONFIRMED_LABELS_EXPORTER)",
        )
        data.add_argument("--val-data", type=Path, help="validation folder (default: a split of --data)")
        data.add_argument("--val-fraction", type=float, help="share of --data held out for validation (0.1)")
        data.add_argument(
            "--without", action="append", choices=LABORATORIES, help="multilab: leave this laboratory out"
        )
        data.add_argument(
            "--olympus-repeat", type=int, help="multilab: times each olympus training cell is repeated per epoch (3)"
        )
        data.add_argument("--lisc-repeat", type=int, help="multilab: times each LISC window is repeated per epoch (2)")
        data.add_argument("--cache-dir", type=Path, help="feature / cut-cell cache (default: VAR_DIR/cache/...)")
        model = parser.add_argument_group("model and training (defaults: the recipe's)")
        model.add_argument("--backbone", help=f"one of {', '.join(available_backbones())}")
        model.add_argument("--weights", help='"imagenet", "none" (random) or a weights file')
        model.add_argument("--input-size", type=int)
        model.add_argument("--finetune-from", help='frozen-head: first backbone block fine-tuned, or "none"')
        model.add_argument(
            "--whole-network-size",
            type=int,
            help="whole-network / multilab: fine-tune every layer (batch norm folded) at this internal size, "
            "e.g. 128; the model still takes --input-size and resizes inside",
        )
        model.add_argument("--views", type=int, help="views per image (view 0 unaugmented)")
        model.add_argument(
            "--augmentation",
            choices=sorted(AUGMENTATIONS),
            help="the augmented views' augmentation (inference.data.AUGMENTATIONS); multilab-style-mix adds "
            "other laboratories' low-frequency Fourier amplitude (style) to multilab's",
        )
        model.add_argument("--epochs", type=int, help="fine-tuning epochs (frozen-head: 0 trains the head only)")
        model.add_argument("--head-epochs", type=int, help="frozen-head: linear head epochs")
        model.add_argument("--batch-size", type=int)
        model.add_argument("--learning-rate", type=float)
        model.add_argument("--patience", type=int)
        model.add_argument(
            "--weight-average",
            type=float,
            metavar="MOMENTUM",
            help="keep an exponential moving average of the weights (e.g. 0.999) and end with it",
        )
        model.add_argument("--seed", type=int)
        model.add_argument("--threads", type=int)
        add_output_arguments(parser, default_name="recipe, backbone")

    def handle(self, *args, **options):
        recipe, config = self._recipe_and_config(options)
        cache_dir = options["cache_dir"] or Path(settings.VAR_DIR) / "cache" / (
            "features" if recipe.name == "frozen-head" else ""
        )
        default_name = f"{config.backbone}-{timezone.now():%Y%m%d-%H%M%S}"
        name = options["name"] or (default_name if recipe.name == "frozen-head" else f"{recipe.name}-{default_name}")
        output = output_folder(name=name, output=options["output"], register=not options["no_register"])
        data_dirs = [options["data"]] if options["data"] else []
        data_dirs += options["extra_data"]
        with tempfile.TemporaryDirectory(prefix="confirmed-") as confirmed_dir:
            if options["include_confirmed"]:
                data_dirs.append(self._export_confirmed(Path(confirmed_dir)))
            try:
                result = run(
                    recipe.name,
                    config,
                    output_dir=output,
                    model_name=name,
                    data_dirs=data_dirs,
                    val_dirs=[options["val_data"]] if options["val_data"] else [],
                    data_root=options["data_root"],
                    cache_dir=cache_dir if recipe.cache_used(config) else None,
                    progress=null_progress if options["quiet_progress"] else tqdm_progress,
                    log=lambda message: self.stdout.write(message),
                )
            except (DatasetError, UnknownBackbone, WeightsUnavailable, ValueError) as exc:
                raise CommandError(str(exc)) from exc
        report_and_register(self, result, register=not options["no_register"], activate=options["activate"])

    def _recipe_and_config(self, options):
        """The chosen recipe and its config from the typed options; an option that would do nothing on this
        recipe is an error, before any work."""
        name = options["recipe"] or ("whole-network" if options["whole_network_size"] else "frozen-head")
        recipe = get_recipe(name)
        fields = recipe.config_fields()
        overrides = {}
        for option, (flag, field, convert) in CONFIG_OPTIONS.items():
            if options.get(option) is None:
                continue
            if field not in fields:
                raise CommandError(f"{flag} does nothing with recipe {recipe.name}: it has no {field} setting")
            overrides[field] = convert(options[option])
        if recipe.name == "frozen-head" and getattr(overrides.get("augmentation"), "style_mix_probability", 0):
            # Its feature cache augments one file at a time, with no other laboratory's image at hand.
            raise CommandError(f"--augmentation {options['augmentation']} does nothing with recipe frozen-head")
        if "without" in overrides:
            overrides["without"] = tuple(sorted(set(recipe.preset.get("without", ())) | set(overrides["without"])))
        if recipe.reads_data_root:
            if options["data"]:
                raise CommandError(
                    f"--data does nothing with recipe {recipe.name}: it reads --data-root "
                    "(add training folders with --extra-data)"
                )
            if options["val_data"]:
                raise CommandError(f"--val-data does nothing with recipe {recipe.name}: it chooses its validation data")
            if not options["data_root"]:
                raise CommandError(f"recipe {recipe.name} needs --data-root (the folder holding pbc/, olympus/, lisc/)")
        else:
            if options["data_root"]:
                raise CommandError(f"--data-root does nothing with recipe {recipe.name}: it reads --data")
            if not options["data"]:
                raise CommandError(f"recipe {recipe.name} needs --data (one sub-folder per class)")
            if options["val_data"] and options["val_fraction"] is not None:
                raise CommandError("--val-fraction does nothing with --val-data: validation is that folder")
        try:
            config = recipe.config(**overrides)
        except RecipeError as exc:
            raise CommandError(str(exc)) from exc
        for laboratory in ("olympus", "lisc"):
            if f"{laboratory}_repeat" in overrides and laboratory in config.without:
                raise CommandError(
                    f"--{laboratory}-repeat does nothing with recipe {recipe.name}: {laboratory} is left out"
                )
        if options["cache_dir"] and not recipe.cache_used(config):
            raise CommandError(f"--cache-dir does nothing with recipe {recipe.name}: it caches nothing")
        return recipe, config

    def _export_confirmed(self, directory: Path) -> Path:
        dotted = getattr(settings, "CONFIRMED_LABELS_EXPORTER", "")
        if not dotted:
            raise CommandError(
                "--include-confirmed needs settings.CONFIRMED_LABELS_EXPORTER: the dotted path of a function "
                "(output_dir) -> folder that writes the confirmed cells one folder per class"
            )
        exporter = import_string(dotted)
        folder = Path(exporter(output_dir=directory))
        self.stdout.write(f"confirmed cells exported to {folder}")
        return folder
