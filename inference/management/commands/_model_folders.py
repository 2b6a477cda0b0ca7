"""What the commands that write a model folder (`train`, `ensemble`) share: where the folder goes, and
registering it afterwards."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference.models import ModelVersion
from inference.services import activate_version, register_from_metadata
from inference.training_common import TrainingResult


def add_output_arguments(parser, *, default_name: str) -> None:
    parser.add_argument("--name", help=f"model version name (default: {default_name} and time)")
    parser.add_argument("--output", type=Path, help="model folder (default: MODEL_STORE_DIR/<name>)")
    parser.add_argument("--no-register", action="store_true", help="write the model folder only")
    parser.add_argument("--activate", action="store_true", help="make the new version the active one")
    parser.add_argument("--quiet-progress", action="store_true")


def output_folder(*, name: str, output: Path | None, register: bool) -> Path:
    """The model folder to write; fails before any work when the result could not be registered."""
    if register and ModelVersion.objects.filter(name=name).exists():
        raise CommandError(f"a model version named {name!r} exists; choose another --name")
    store = Path(settings.MODEL_STORE_DIR).resolve()
    folder = (output or store / name).resolve()
    if register and not folder.is_relative_to(store):
        raise CommandError(f"--output must be inside MODEL_STORE_DIR ({store}) to register it, or add --no-register")
    return folder


def report_and_register(command: BaseCommand, result: TrainingResult, *, register: bool, activate: bool) -> None:
    validation = result.metadata["metrics"]["validation"]
    command.stdout.write(
        f"validation: accuracy {validation['accuracy']:.4f}, macro-F1 {validation['macro_f1']:.4f}, "
        f"ECE {validation['ece']:.4f}, flagged {validation['flagged_fraction']:.2%}"
    )
    if not register:
        command.stdout.write(command.style.SUCCESS(f"model written to {result.output_dir} (not registered)"))
        return
    version = register_from_metadata(
        metadata=result.metadata,
        source=ModelVersion.Source.TRAINED,
        artifact_dir=str(Path(result.output_dir).resolve().relative_to(Path(settings.MODEL_STORE_DIR).resolve())),
    )
    if activate:
        activate_version(version)
    command.stdout.write(command.style.SUCCESS(f"registered model version {version.name} ({result.output_dir})"))
