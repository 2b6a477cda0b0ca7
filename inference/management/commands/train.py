"""manage.py train --data DIR: transfer learning, evaluation on validation, export, registration."""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.module_loading import import_string

from inference.backbones import DEFAULT_BACKBONE, UnknownBackbone, WeightsUnavailable, available_backbones
from inference.data import AugmentationConfig, DatasetError
from inference.management.commands._model_folders import (
    add_output_arguments,
    output_folder,
    report_and_register,
)
from inference.training import TrainingConfig, null_progress, tqdm_progress, train


class Command(BaseCommand):
    help = "Train a classifier on ImageFolder-style data (one folder per class) and register it."

    def add_arguments(self, parser):
        parser.add_argument("--data", required=True, type=Path, help="training images, one sub-folder per class")
        parser.add_argument("--extra-data", action="append", type=Path, default=[], help="more training folders")
        parser.add_argument(
            "--include-confirmed",
            action="store_true",
            help="add the cells whose labels pathologists confirmed (settings.CONFIRMED_LABELS_EXPORTER)",
        )
        parser.add_argument("--val-data", type=Path, help="validation folder (default: a split of --data)")
        parser.add_argument("--val-fraction", type=float, default=0.1)
        parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"one of {', '.join(available_backbones())}")
        parser.add_argument("--weights", default="imagenet", help='"imagenet", "none" (random) or a weights file')
        parser.add_argument("--input-size", type=int, default=224)
        parser.add_argument("--finetune-from", default="block11", help='first backbone block fine-tuned, or "none"')
        parser.add_argument(
            "--whole-network-size",
            type=int,
            help="fine-tune the whole network (batch norm folded) at this internal size, e.g. 128, instead of "
            "the top blocks on cached activations; the model still takes --input-size and resizes inside",
        )
        parser.add_argument("--views", type=int, default=4, help="cached views per image (view 0 unaugmented)")
        parser.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs (0: head only)")
        parser.add_argument("--head-epochs", type=int, default=40)
        parser.add_argument("--batch-size", type=int, default=32)
        parser.add_argument("--learning-rate", type=float, default=3e-4)
        parser.add_argument("--patience", type=int, default=2)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--threads", type=int, default=2)
        parser.add_argument("--cache-dir", type=Path, help="feature cache (default: VAR_DIR/cache/features)")
        add_output_arguments(parser, default_name="backbone")

    def handle(self, *args, **options):
        name = options["name"] or f"{options['backbone']}-{timezone.now():%Y%m%d-%H%M%S}"
        output = output_folder(name=name, output=options["output"], register=not options["no_register"])
        train_dirs = [options["data"], *options["extra_data"]]
        with tempfile.TemporaryDirectory(prefix="confirmed-") as confirmed_dir:
            if options["include_confirmed"]:
                train_dirs.append(self._export_confirmed(Path(confirmed_dir)))
            config = TrainingConfig(
                backbone=options["backbone"],
                input_size=options["input_size"],
                weights=None if options["weights"] == "none" else options["weights"],
                finetune_from=(
                    "all"
                    if options["whole_network_size"]
                    else None
                    if options["finetune_from"] == "none"
                    else options["finetune_from"]
                ),
                whole_network_size=options["whole_network_size"],
                views=options["views"],
                head_epochs=options["head_epochs"],
                finetune_epochs=options["epochs"],
                batch_size=options["batch_size"],
                finetune_learning_rate=options["learning_rate"],
                patience=options["patience"],
                seed=options["seed"],
                val_fraction=options["val_fraction"],
                num_threads=options["threads"],
                augmentation=AugmentationConfig(),
            )
            try:
                result = train(
                    train_dirs=train_dirs,
                    val_dir=options["val_data"],
                    output_dir=output,
                    name=name,
                    config=config,
                    cache_dir=options["cache_dir"] or Path(settings.VAR_DIR) / "cache" / "features",
                    progress=null_progress if options["quiet_progress"] else tqdm_progress,
                    log=lambda message: self.stdout.write(message),
                )
            except (DatasetError, UnknownBackbone, WeightsUnavailable, ValueError) as exc:
                raise CommandError(str(exc)) from exc
        report_and_register(self, result, register=not options["no_register"], activate=options["activate"])

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
