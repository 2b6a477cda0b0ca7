"""manage.py ensemble --member DIR --member DIR ...: average trained models into one model version."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from inference.data import DatasetError
from inference.ensemble import EnsembleError, combine_models
from inference.models import ModelVersion
from inference.services import activate_version, register_from_metadata
from inference.training import null_progress, tqdm_progress


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
        parser.add_argument("--name", help="model version name (default: ensemble and time)")
        parser.add_argument("--output", type=Path, help="model folder (default: MODEL_STORE_DIR/<name>)")
        parser.add_argument("--no-register", action="store_true", help="write the model folder only")
        parser.add_argument("--activate", action="store_true", help="make the new version the active one")
        parser.add_argument("--quiet-progress", action="store_true")

    def handle(self, *args, **options):
        name = options["name"] or f"ensemble-{timezone.now():%Y%m%d-%H%M%S}"
        if not options["no_register"] and ModelVersion.objects.filter(name=name).exists():
            raise CommandError(f"a model version named {name!r} exists; choose another --name")
        store = Path(settings.MODEL_STORE_DIR)
        output = (options["output"] or store / name).resolve()
        if not options["no_register"] and not output.is_relative_to(store.resolve()):
            raise CommandError(
                f"--output must be inside MODEL_STORE_DIR ({store}) to register it, or add --no-register"
            )
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
        validation = result.metadata["metrics"]["validation"]
        self.stdout.write(
            f"validation: accuracy {validation['accuracy']:.4f}, macro-F1 {validation['macro_f1']:.4f}, "
            f"ECE {validation['ece']:.4f}, flagged {validation['flagged_fraction']:.2%}"
        )
        if options["no_register"]:
            self.stdout.write(self.style.SUCCESS(f"model written to {output} (not registered)"))
            return
        version = register_from_metadata(
            metadata=result.metadata,
            source=ModelVersion.Source.TRAINED,
            artifact_dir=str(output.relative_to(store.resolve())),
        )
        if options["activate"]:
            activate_version(version)
        self.stdout.write(self.style.SUCCESS(f"registered model version {version.name} ({output})"))
