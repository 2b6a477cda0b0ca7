"""CPU per cell of the classification task, by stage, with locate and the model reported apart.

Images are uploaded through cases.services.add_images (the service the API calls) on a PostgreSQL database
of your own (dropped and created again), with the bundled model. The uploads' tasks are collected instead of
sent and then run in this process, one by one, through the Celery task (`classify_images.apply`, what a pool
process runs, without the broker). Two scenarios:

- one: N one-image uploads to one case, each followed by its task (the e2e case: a technician uploading one
  crop at a time, the case flipping classifying -> awaiting review every time);
- batch: one upload of M images, cut into tasks as the service cuts it (4, 8, 16, ...).

The model runs on the threads a production pool process gets (cores // 2, `model_threads` in the JSON) unless
INFERENCE_NUM_THREADS is set. CPU is time.process_time around each task; stages are timed by wrapping the
functions the task calls (nested stages are subtracted from their parent, so the rows add up to the task).
`locate` and `predict` (preprocessing + LiteRT + OOD score) are the parts this measurement is not about.
--profile also prints a cProfile of the tasks (CPU clock). --as-pool-process calls each task as a pool process does
instead of through Task.apply, whose eager run the worker's connection handlers (hematovision/celery_connections.py)
leave alone: the connection is then checked at each task boundary as in a worker, and Django's health check (a
`SELECT 1` that is no logged query) counted apart (`health_checks_per_task`).

    nice -n 19 .venv/bin/python bench/task_cpu.py --database-url postgres://postgres@127.0.0.1:5432/hv_taskcpu
    nice -n 19 .venv/bin/python bench/task_cpu.py --database-url ... --one 60 --batch 100 --json
    nice -n 19 .venv/bin/python bench/task_cpu.py --database-url ... --profile --top 30
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import os
import pstats
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

from _in_process import setup_django

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = PROJECT_DIR.parent / "shared" / "datasets" / "pbc" / "test"
WARMUP_IMAGES = 3

# Stage name -> (module path, attribute): wrapped where the caller looks the name up. A stage the tree does not
# have (the look-ups were merged into get_serving_predictors) is reported as 0.
STAGES = [
    ("get_predictor (active model)", "cases.classification", "get_predictor"),
    ("shadow predictor look-up", "cases.classification", "_shadow_predictor"),
    ("active + shadow predictors (one look-up)", "cases.classification", "get_serving_predictors"),
    ("claim images", "cases.classification", "claim_for_classification"),
    ("analyse (decode, windows)", "cases.classification", "_analyse_batch"),
    ("locate [not ours]", "inference.analysis", "locate_cells"),
    ("case escalation (count, decide)", "cases.classification", "case_escalation"),
    ("store results", "cases.classification", "store_analyses"),
    ("announce (push event)", "cases.classification", "_announce"),
    ("case status refresh", "cases.classification", "refresh_case_statuses"),
]


class Timers:
    """Exclusive CPU per stage: a stage's time excludes the wrapped stages it calls."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []

    def wrap(self, name, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            frame = [name, time.process_time(), 0.0]
            self.stack.append(frame)
            try:
                return function(*args, **kwargs)
            finally:
                self.stack.pop()
                spent = time.process_time() - frame[1]
                self.seconds[name] += spent - frame[2]
                if self.stack:
                    self.stack[-1][2] += spent

        return timed

    def reset(self):
        self.seconds.clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", type=int, default=60, help="one-image uploads (each its own task)")
    parser.add_argument("--batch", type=int, default=100, help="images of the one large upload (0: skip)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--database-url", required=True, help="a PostgreSQL database of your own (recreated)")
    parser.add_argument("--reviewers", type=int, default=3)
    parser.add_argument(
        "--case-cells",
        type=int,
        default=0,
        help="classified cells the 'one' case already holds (rows written directly, one in 10 flagged"
        " out_of_distribution: under the case-escalation share)",
    )
    parser.add_argument(
        "--as-pool-process",
        action="store_true",
        help="run each task as a pool process does (the task boundary's connection handlers act, Django's health"
        " check of the kept connection is counted) instead of Task.apply (eager: the handlers leave it alone)",
    )
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the tasks")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args()

    setup_django(prefix="hv-taskcpu-", database_url=arguments.database_url)
    if "INFERENCE_NUM_THREADS" not in os.environ:
        # Run the model as a production pool process does (read when the predictor is made, below): the cores
        # shared out between a worker's 2 pool processes (hematovision/celery.py).
        from hematovision.celery import _available_cores, pool_inference_threads

        os.environ["INFERENCE_NUM_THREADS"] = str(pool_inference_threads(concurrency=2, cores=_available_cores()))
    import importlib

    from celery.signals import task_postrun, task_prerun
    from django.conf import settings
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from django.db import connection, connections
    from django.db.models.signals import post_save

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"  # keep stdout for the report
    call_command("migrate", verbosity=0)
    from accounts.models import User
    from accounts.roles import Role, set_role
    from cases import services, tasks
    from cases.models import Case
    from inference import predictor as predictor_module
    from inference.services import ensure_bundled_model
    from notifications import receivers

    ensure_bundled_model()
    predictor_module.get_predictor()  # loading the model is a once-per-process cost

    timers = Timers()
    for stage, module_name, attribute in STAGES:
        module = importlib.import_module(module_name)
        if hasattr(module, attribute):
            setattr(module, attribute, timers.wrap(stage, getattr(module, attribute)))
    predictor_module.Predictor.predict = timers.wrap("predict [not ours]", predictor_module.Predictor.predict)
    # The notifications receiver runs inside the status refresh (post_save of Case).
    post_save.disconnect(receivers.case_status_changed, sender=Case)
    timed_receiver = timers.wrap("  of which: notifications receiver", receivers.case_status_changed)
    post_save.connect(timed_receiver, sender=Case, weak=False)

    queries = [0]
    health_checks = [0]
    counting = [False]

    def count(execute, sql, params, many, context):
        queries[0] += 1
        return execute(sql, params, many, context)

    # Django's health check (a SELECT 1 of its own before a kept connection's first query) is no logged query.
    database = connections["default"]
    is_usable = database.is_usable

    def counted_is_usable():
        health_checks[0] += counting[0]
        return is_usable()

    database.is_usable = counted_is_usable

    def run_as_pool_process(chunk: list[int]) -> dict:
        """The task called as a pool process's worker calls it, between task_prerun and task_postrun (the
        connection handlers of CELERY_IMPORTS act on a task that is not eager)."""
        import hematovision.celery_connections  # noqa: F401 - loaded by every worker (CELERY_IMPORTS)

        task = tasks.classify_images
        task_prerun.send(sender=task, task_id="bench", task=task, args=(chunk,), kwargs={})
        try:
            return task(chunk)
        finally:
            task_postrun.send(sender=task, task_id="bench", task=task, args=(chunk,), kwargs={}, state="SUCCESS")

    collected: list[list[int]] = []
    services.enqueue_classification = lambda *, image_ids: collected.append(list(image_ids)) or 0

    technician = User.objects.create_user("tech@bench.hematovision.local", "bench-password-1")
    set_role(technician, Role.TECHNICIAN)
    for number in range(arguments.reviewers):
        reviewer = User.objects.create_user(f"reviewer{number}@bench.hematovision.local", "bench-password-1")
        set_role(reviewer, Role.PATHOLOGIST)
    files = sorted(arguments.dataset.rglob("*.jpg"))
    chosen = random.Random(7).sample(files, WARMUP_IMAGES + arguments.one + arguments.batch)
    blobs = [(path.name, path.read_bytes()) for path in chosen]
    profile = cProfile.Profile(time.process_time) if arguments.profile else None

    def run_tasks() -> tuple[float, int, int]:
        cpu, tasks_run, cells = 0.0, 0, 0
        for image_ids in collected:
            for chunk in tasks.task_chunks(image_ids):
                started = time.process_time()
                if profile:
                    profile.enable()
                counting[0] = True
                with connection.execute_wrapper(count):
                    if arguments.as_pool_process:
                        result = run_as_pool_process(chunk)
                    else:
                        result = tasks.classify_images.apply(args=[chunk]).get()
                counting[0] = False
                if profile:
                    profile.disable()
                cpu += time.process_time() - started
                tasks_run += 1
                cells += result.get("cells", 0)
        collected.clear()
        return cpu, tasks_run, cells

    def upload(case, batch):
        uploads = [SimpleUploadedFile(name, data, content_type="image/jpeg") for name, data in batch]
        accepted, rejected = services.add_images(case=case, files=uploads, uploaded_by=technician)
        assert accepted and not rejected, rejected

    report: dict[str, dict] = {}
    case = services.create_case(accession_id=f"TASKCPU-ONE-{int(time.time())}", created_by=technician)
    for item in blobs[:WARMUP_IMAGES]:  # first notifications, first queries compiled
        upload(case, [item])
        run_tasks()
    if arguments.case_cells:
        _fill_case(case, technician, arguments.case_cells)
    scenarios = [("one", [[item] for item in blobs[WARMUP_IMAGES : WARMUP_IMAGES + arguments.one]])]
    if arguments.batch:
        scenarios.append(("batch", [blobs[WARMUP_IMAGES + arguments.one :]]))
    for scenario, uploads in scenarios:
        if scenario == "batch":
            case = services.create_case(accession_id=f"TASKCPU-BATCH-{int(time.time())}", created_by=technician)
        timers.reset()
        queries[0] = health_checks[0] = 0
        cpu = 0.0
        tasks_run = cells = 0
        for batch in uploads:
            upload(case, batch)
            spent, ran, found = run_tasks()
            cpu, tasks_run, cells = cpu + spent, tasks_run + ran, cells + found
        cells = max(cells, 1)
        stages = {stage: 0.0 for stage, _, _ in STAGES}
        stages.update({stage: seconds * 1000 / cells for stage, seconds in timers.seconds.items()})
        # The receiver is inside the refresh: show the refresh with it, and the receiver as its part.
        receiver_ms = stages.get("  of which: notifications receiver", 0.0)
        stages["case status refresh"] = stages.get("case status refresh", 0.0) + receiver_ms
        outside = cpu * 1000 / cells - sum(ms for stage, ms in stages.items() if not stage.startswith("  "))
        stages["task machinery, rest"] = outside
        not_ours = stages.get("locate [not ours]", 0.0) + stages.get("predict [not ours]", 0.0)
        report[scenario] = {
            "images": sum(len(batch) for batch in uploads),
            "tasks": tasks_run,
            "cells": cells,
            "cpu_ms_per_cell": cpu * 1000 / cells,
            "ours_ms_per_cell": cpu * 1000 / cells - not_ours,
            "queries_per_task": queries[0] / max(tasks_run, 1),
            "health_checks_per_task": health_checks[0] / max(tasks_run, 1),
            "stages_ms_per_cell": stages,
        }
    report["case_cells"] = arguments.case_cells
    report["as_pool_process"] = arguments.as_pool_process
    report["load_average"] = os.getloadavg()
    report["model_threads"] = int(os.environ["INFERENCE_NUM_THREADS"])

    if arguments.json:
        print(json.dumps(report, indent=2))
    else:
        for scenario in ("one", "batch"):
            if scenario not in report:
                continue
            row = report[scenario]
            print(
                f"\n{scenario}: {row['images']} images, {row['tasks']} tasks, {row['cells']} cells: "
                f"{row['cpu_ms_per_cell']:.2f} ms CPU per cell, {row['ours_ms_per_cell']:.2f} ms outside locate "
                f"and predict; {row['queries_per_task']:.1f} queries and {row['health_checks_per_task']:.1f} health"
                " checks per task"
            )
            for stage, ms in row["stages_ms_per_cell"].items():
                print(f"  {stage:<40} {ms:7.2f} ms per cell")
        print(f"\nload average {report['load_average']}")
    if profile:
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order).print_stats(arguments.top)
            print(f"\n--- by {order} ---", file=sys.stderr if arguments.json else sys.stdout)
            print(out.getvalue().split("\n", 6)[-1], file=sys.stderr if arguments.json else sys.stdout)
    return 0


def _fill_case(case, technician, count: int) -> None:
    """`count` classified cells in `case`, each with a prediction of the active model, written in bulk (the
    bench measures the tasks that come after them, not these)."""
    from cases.models import CellImage, Prediction
    from inference.models import ModelVersion

    version = ModelVersion.objects.get(is_active=True)
    cells = CellImage.objects.bulk_create(
        CellImage(
            case=case,
            storage_key=f"bench/filled-{case.pk}-{number}",
            sha256=f"{case.pk:032x}{number:032x}",
            size_bytes=1000,
            width=64,
            height=64,
            content_type="image/png",
            original_name=f"filled-{number}.png",
            uploaded_by=technician,
            status=CellImage.Status.CLASSIFIED,
        )
        for number in range(count)
    )
    Prediction.objects.bulk_create(
        Prediction(
            image=cell,
            model_version=version,
            label="neutrophil",
            confidence=0.97,
            probabilities={"neutrophil": 0.97},
            flagged=number % 10 == 0,
            flag_reasons=["out_of_distribution"] if number % 10 == 0 else [],
            ood_score=0.1,
            latency_ms=5.0,
        )
        for number, cell in enumerate(cells)
    )


if __name__ == "__main__":
    sys.exit(main())
