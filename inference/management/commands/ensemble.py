"""manage.py ensemble --member DIR --member DIR ...: average trained models into one model version."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from inference.data import DatasetError
from inference.ensemble import EnsembleError, combine_models
from inference.management.commands._model_folders import (
    add_output_arguments,
    output_folder,
    report_and_register,
)
from inference.training_common import null_progress, tqdm_progress


class Command(BaseCommand):
    help = (
        "Combine model folders written by `train` (same classes and preprocessing) into one model that "
        "averages them, calibrated on validation data, and register it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--member", action="append", type=Path, required=True, help="a member model folder")
        parser.add_argument(
            "--data", action="append", type=Path, required=True, help="the members' training images (OOD statistics)"
        )
        parser.add_argument("--val-data", required=True, type=Path, help="validation images, one folder per class")
        parser.add_argument("--float16", action="store_true", help="store the served model's weights as float16")
        parser.add_argument("--threads", type=int, default=2)
        add_output_arguments(parser, default_name="ensemble")

    def handle(self, *args, **options):
        name = options["name"] or f"ensemble-{timezone.now():%Y%m%d-%H%M%S}"
        output = output_folder(name=name, output=options["output"], register=not options["no_register"])
        try:
            result = combine_models(
                member_dirs=options["member"],
                train_dirs=options["data"],
                val_dir=options["val_data"],
                output_dir=output,
                name=name,
                float16=options["float16"],
                num_threads=options["threads"],
                progress=null_progress if options["quiet_progress"] else tqdm_progress,
                log=lambda message: self.stdout.write(message),
            )
        except (DatasetError, EnsembleError, FileNotFoundError) as exc:
            raise CommandError(str(exc)) from exc
        report_and_register(self, result, register=not options["no_register"], activate=options["activate"])
