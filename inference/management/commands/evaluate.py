"""manage.py evaluate [--model VERSION] --data DIR [--data DIR ...]: metrics of a model version on labelled
images of one or several laboratories (class folders of crops, or manifest-layout fields with boxes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from inference.data import DatasetError
from inference.evaluation import (
    case_escalation_metrics,
    evaluate_images,
    format_report,
    simulate_case_escalation,
    write_report,
)
from inference.field_data import detection_metrics, laboratory_name, load_labelled
from inference.predictor import ModelUnavailable, Predictor, get_predictor
from inference.selectors import find_version, version_from_directory
from inference.training_common import tqdm_progress


class Command(BaseCommand):
    help = (
        "Evaluate a model version (default: the active one; the bundled model is installed when none is) on "
        "labelled images: class folders (DIR/<CLASS>/<image>) or manifest-layout fields (MANIFEST.csv, BOXES.csv)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", help="model version name or id (default: the active version)")
        parser.add_argument("--model-dir", type=Path, help="evaluate an unregistered model folder (metadata.json)")
        parser.add_argument(
            "--data",
            required=True,
            type=Path,
            action="append",
            help="labelled images: one sub-folder per class, or a folder with MANIFEST.csv (repeat for several labs)",
        )
        parser.add_argument("--split", default="test", help="split of manifest-layout folders (default: test)")
        parser.add_argument("--json", action="store_true", help="print one JSON object of metrics")
        parser.add_argument("--report-dir", type=Path, help="write report.md, metrics.json and plots here")
        parser.add_argument("--threads", type=int, help="runtime threads (default: INFERENCE_NUM_THREADS or 2)")
        parser.add_argument(
            "--case-size",
            type=int,
            help="also simulate cases of this many images (each laboratory's images in a seeded random order) and "
            "apply the product's case rule (a case imaged unlike the training data has every cell flagged): adds "
            "the *_case_escalated figures (default: off, no cases)",
        )
        parser.add_argument("--case-seed", type=int, default=0, help="seed of the cases' random order (default: 0)")
        parser.add_argument(
            "--record",
            action="store_true",
            help="record the result on the (registered) version, beside the active version measured on the same "
            "cells: this is what lets a version be activated from the page or the API",
        )

    def handle(self, *args, **options):
        if options["model"] and options["model_dir"]:
            raise CommandError("give --model or --model-dir, not both")
        if options["record"] and options["model_dir"]:
            raise CommandError("--record needs a registered version (--model), not --model-dir")
        try:
            if options["model_dir"]:
                predictor = Predictor(version_from_directory(options["model_dir"]), num_threads=options["threads"])
            elif options["model"]:
                version = find_version(name_or_id=options["model"])
                if version is None:
                    raise CommandError(f"no model version named {options['model']!r}")
                predictor = Predictor(version, num_threads=options["threads"])
            else:
                predictor = get_predictor()  # the active version; installs the bundled model when none is
                if options["threads"]:
                    predictor = Predictor(predictor.version, num_threads=options["threads"])
        except ModelUnavailable as exc:
            raise CommandError(str(exc)) from exc
        version = predictor.version
        try:
            dataset = load_labelled(options["data"], classes=predictor.classes, split=options["split"])
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc
        result = evaluate_images(
            predictor=predictor,
            **dataset.evaluation_arguments(),
            progress=None if options["json"] else tqdm_progress,
        )
        data = ", ".join(str(path) for path in options["data"])
        metrics = {"model": version.name, "data": data, **result["metrics"]}
        if options["case_size"] is not None:
            self._add_case_escalation(metrics, result, dataset, options)
        for root in options["data"]:
            detection = detection_metrics(root, split=options["split"])
            if detection is not None:
                per_laboratory = metrics.get("laboratories", {}).get(laboratory_name(root))
                (metrics if per_laboratory is None else per_laboratory).update(detection)
        if options["report_dir"]:
            write_report(
                metrics=metrics,
                probabilities=result["probabilities"],
                labels=dataset.labels,
                output_dir=options["report_dir"],
                title=f"{version.name} on {data}",
            )
        if options["record"]:
            self._record(version, metrics, dataset, options)
        if options["json"]:
            self.stdout.write(json.dumps(metrics))
        else:
            self.stdout.write(format_report(metrics, title=f"{version.name} on {data}"))

    def _add_case_escalation(self, metrics, result, dataset, options):
        if options["case_size"] < 1:
            raise CommandError("--case-size must be at least 1")
        labels = np.asarray(dataset.labels)
        laboratories = list(dataset.laboratories or [laboratory_name(options["data"][0])] * len(labels))
        escalated, case_numbers = simulate_case_escalation(
            found=result["found"],
            flag_reasons=result["flag_reasons"],
            laboratories=laboratories,
            case_size=options["case_size"],
            seed=options["case_seed"],
        )
        names = np.asarray(laboratories)

        def figures(rows) -> dict:
            return case_escalation_metrics(
                labels=labels[rows],
                probabilities=result["probabilities"][rows],
                flagged=result["flagged"][rows],
                found=result["found"][rows],
                escalated=escalated[rows],
                case_numbers=case_numbers[rows],
            )

        everything = np.ones(len(labels), dtype=bool)
        metrics.update({"case_size": options["case_size"], "case_seed": options["case_seed"], **figures(everything)})
        for name, per_laboratory in metrics.get("laboratories", {}).items():
            rows = names == name
            per_laboratory.update(figures(rows))

    def _record(self, version, metrics, dataset, options):
        from inference.registry import get_active_version
        from inference.services import record_evaluation

        if version.pk is None:
            raise CommandError("--record needs a registered version (--model), not --model-dir")
        active = get_active_version()
        baseline_metrics = None
        if active is not None and active.pk != version.pk:
            result = evaluate_images(
                predictor=Predictor(active, num_threads=options["threads"]), **dataset.evaluation_arguments()
            )
            baseline_metrics = {"model": active.name, "data": metrics["data"], **result["metrics"]}
        record_evaluation(
            version=version,
            data=f"{metrics['data']} ({metrics['n']} cells)",
            metrics=metrics,
            baseline=active if baseline_metrics is not None else None,
            baseline_metrics=baseline_metrics,
        )
        if not options["json"]:
            self.stdout.write(f"recorded as an evaluation of {version.name}")
