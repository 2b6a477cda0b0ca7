from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from inference.importing import (
    BLOOD_CELL_CLASSES,
    DEFAULT_SCALE,
    SCALE_MODES,
    ImportFailed,
    import_keras_model,
    parse_classes,
)


class Command(BaseCommand):
    help = (
        "Import a Keras classifier (.keras, or legacy .h5 such as Blood_Cell.h5) as a model version: copies it "
        "into MODEL_STORE_DIR/<name>/, exports the serving model, records checksums, registers and audits it."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path, help="the .keras or .h5 model file")
        parser.add_argument("--name", help="model version name (default: file name and checksum prefix)")
        parser.add_argument(
            "--classes",
            help=f"class names in output order, comma-separated (4 outputs default to {','.join(BLOOD_CELL_CLASSES)})",
        )
        parser.add_argument("--input-size", type=int, help="input size in pixels (default: the model's own)")
        parser.add_argument(
            "--scale",
            choices=tuple(SCALE_MODES),
            default=DEFAULT_SCALE,
            help=f"pixel scaling the model was trained with (default {DEFAULT_SCALE}; write --scale=-1..1 for -1..1)",
        )
        parser.add_argument("--activate", action="store_true", help="make the imported version the active one")

    def handle(self, *args, **options):
        try:
            version = import_keras_model(
                path=options["file"],
                name=options["name"],
                classes=parse_classes(options["classes"]),
                input_size=options["input_size"],
                scale=options["scale"],
                activate=options["activate"],
            )
        except ImportFailed as exc:
            raise CommandError(str(exc)) from exc
        imported = version.training["imported"]
        for note in imported["notes"]:
            self.stdout.write(self.style.WARNING(f"Note: {note}"))
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {imported['original_file']} as model version {version.name} "
                f"({', '.join(version.classes)}; input {version.input_size} px; "
                f"export differs from Keras by {imported['export_difference']:.1e})"
                + ("; now active." if version.is_active else "; not active (use --activate).")
            )
        )
