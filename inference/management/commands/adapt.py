"""manage.py adapt --data DIR --name NAME [--holdout DIR] [--json]: adapt the active model to a lab's cells.

Fine-tunes the active version on labelled cells (one sub-folder per class, as `evaluate` reads them) with
a replay of base data, re-fits calibration and OOD statistics, measures candidate and active version on a
hold-out part (a fixed fraction chosen by file-name hash, or --holdout DIR), and registers the candidate as
an inactive version with its recorded evaluation. `--job ID` runs a job queued from the page (the embedded
default's background process).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from inference.adapt import AdaptationCancelled, AdaptationError, AdaptConfig
from inference.adaptation import DEFAULT_HOLDOUT_FRACTION, adapt_and_evaluate, run_adaptation_job


class Command(BaseCommand):
    help = "Adapt the active model version to a laboratory's labelled cells; registers an inactive candidate."

    def add_arguments(self, parser):
        parser.add_argument("--data", type=Path, help="the lab's labelled cells, one sub-folder per class")
        parser.add_argument("--name", help="name of the new (inactive) version")
        parser.add_argument(
            "--holdout", type=Path, help="hold-out cells (default: a fraction of --data by file-name hash)"
        )
        parser.add_argument(
            "--holdout-fraction", type=float, help=f"share of --data held out (default {DEFAULT_HOLDOUT_FRACTION})"
        )
        parser.add_argument(
            "--base-test", type=Path, action="append", default=[], help="also measure on this base test set"
        )
        parser.add_argument("--epochs", type=int, default=AdaptConfig.epochs)
        parser.add_argument("--learning-rate", type=float, default=AdaptConfig.learning_rate)
        parser.add_argument("--threads", type=int, default=AdaptConfig.num_threads)
        parser.add_argument("--no-register", action="store_true", help="keep the model folder, register nothing")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--job", type=int, help="run the adaptation job with this id (queued from the page)")

    def handle(self, *args, **options):
        config = AdaptConfig(
            epochs=options["epochs"], learning_rate=options["learning_rate"], num_threads=options["threads"]
        )
        if options["job"] is not None:
            # The queued job says what to adapt on and where the result goes.
            for flag in ("data", "name", "holdout", "holdout_fraction", "base_test", "no_register", "json"):
                if options[flag]:
                    raise CommandError(f"--{flag.replace('_', '-')} does nothing with --job: the job says what to do")
            job = run_adaptation_job(job_id=options["job"], config=config)
            self.stdout.write(f"adaptation job {job.pk}: {job.status}. {job.message}")
            return
        if not options["data"] or not options["name"]:
            raise CommandError("--data and --name are required (or --job ID)")
        if options["holdout"] and options["holdout_fraction"] is not None:
            raise CommandError("--holdout-fraction does nothing with --holdout: the hold-out cells are that folder")
        if options["holdout_fraction"] is None:
            options["holdout_fraction"] = DEFAULT_HOLDOUT_FRACTION
        if not 0 < options["holdout_fraction"] < 1:
            raise CommandError("--holdout-fraction must be between 0 and 1")
        if options["epochs"] < 1:
            raise CommandError("--epochs must be at least 1")

        def progress(fraction: float, message: str) -> None:
            if not options["json"]:
                sys.stderr.write(f"\r{fraction:6.1%} {message[:70]:<70}")
                sys.stderr.flush()

        try:
            summary = adapt_and_evaluate(
                adapt_dir=options["data"],
                holdout_dir=options["holdout"],
                holdout_fraction=options["holdout_fraction"],
                base_test_dirs=options["base_test"],
                name=options["name"],
                config=config,
                provenance={"source": str(options["data"])},
                register=not options["no_register"],
                progress=progress,
            )
        except (AdaptationError, AdaptationCancelled) as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(summary))
            return
        sys.stderr.write("\n")
        candidate, active = summary["candidate"], summary["active"]
        self.stdout.write(
            f"{summary['name']}: adapted on {summary['adapt_cells']} cells in {summary['seconds']:.0f} s; "
            f"hold-out {summary['holdout_cells']} cells: accuracy {candidate['accuracy']:.4f} "
            f"(active {summary['base']}: {active['accuracy']:.4f}), flagged {candidate['flagged_fraction']:.2%} "
            f"(active {active['flagged_fraction']:.2%})"
        )
        for test in summary["base_tests"]:
            self.stdout.write(
                f"  {test['data']}: accuracy {test['candidate']['accuracy']:.4f} "
                f"(active {test['active']['accuracy']:.4f})"
            )
        if summary["version_id"]:
            self.stdout.write("registered as an inactive version; activate it from the models page after comparing.")
        else:
            self.stdout.write(f"model folder: {summary['output_dir']} (not registered)")
