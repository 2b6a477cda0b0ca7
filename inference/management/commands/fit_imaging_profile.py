"""manage.py fit_imaging_profile --model-dir DIR --data-root ROOT [--without LAB] [--per-lab N] [--output DIR]

Fit the imaging profile of a datasets root's training laboratories (``inference.imaging``): cells imaged
unlike all of them are flagged ``unfamiliar_imaging``. Written into the model folder (recorded in its
metadata with a checksum), or with ``--output`` into a plain folder, which ``--attach DIR`` later copies into
a model folder. The multilab training recipes fit it themselves at the end of training.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference.data import DatasetError
from inference.imaging import DEFAULT_PER_LAB, DEFAULT_QUANTILE, attach_imaging_profile
from inference.model_folder import METADATA_FILE
from inference.recipes import LABORATORIES, RecipeError, fit_imaging_profile_from_root


class Command(BaseCommand):
    help = "Fit the imaging profile of the training laboratories (the unfamiliar_imaging flag) into a model folder."

    def add_arguments(self, parser):
        parser.add_argument("--model-dir", type=Path, help="model folder to write the profile into")
        parser.add_argument("--data-root", type=Path, help="datasets root holding " + ", ".join(LABORATORIES))
        parser.add_argument("--without", action="append", default=[], choices=LABORATORIES, help="leave a lab out")
        parser.add_argument("--per-lab", type=int, default=DEFAULT_PER_LAB, help="windows sampled per laboratory")
        parser.add_argument("--quantile", type=float, default=DEFAULT_QUANTILE, help="of validation windows' scores")
        parser.add_argument("--cache-dir", type=Path, help="cut-cell cache (default: VAR_DIR/cache, as train)")
        parser.add_argument("--output", type=Path, help="write to this plain folder instead of a model folder")
        parser.add_argument("--attach", type=Path, help="copy a profile fitted with --output into --model-dir")

    def handle(self, *args, **options):
        model_dir, output, attach = options["model_dir"], options["output"], options["attach"]
        if attach is not None:
            if model_dir is None or options["data_root"] is not None or output is not None:
                raise CommandError("--attach copies a fitted profile into --model-dir; it fits nothing")
            try:
                path = attach_imaging_profile(model_dir, attach)
            except (FileNotFoundError, ValueError, KeyError) as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"imaging profile attached: {path}")
            return
        if options["data_root"] is None:
            raise CommandError("--data-root is required")
        if (model_dir is None) == (output is None):
            raise CommandError("give either --model-dir (a model folder) or --output (a plain folder)")
        if model_dir is not None and not (model_dir / METADATA_FILE).is_file():
            raise CommandError(f"{model_dir} is not a model folder (no {METADATA_FILE}); use --output for a plain one")
        if not 0.5 <= options["quantile"] < 1.0:
            raise CommandError("--quantile must be in [0.5, 1)")
        try:
            fitted = fit_imaging_profile_from_root(
                data_root=options["data_root"],
                output_dir=model_dir or output,
                without=tuple(options["without"]),
                cache_dir=options["cache_dir"] or Path(settings.VAR_DIR) / "cache",
                per_lab=options["per_lab"],
                quantile=options["quantile"],
                log=self.stdout.write,
            )
        except (DatasetError, RecipeError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"imaging profile of {', '.join(fitted.profile.laboratories)} written to {model_dir or output} "
            f"(threshold {fitted.profile.threshold:.3f}, {fitted.seconds:.1f} s)"
        )
