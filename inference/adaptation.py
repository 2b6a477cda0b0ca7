"""Adapting the active model to a laboratory, with the platform around it: data in, evaluation of the
candidate beside the active version on a hold-out part, an inactive registered version, and the jobs that
run it from a page (a Celery ``training`` worker, or a background process in the embedded default).

`inference` knows nothing of cases: the laboratory's reviewed cells arrive through
``settings.LABORATORY_CELLS_EXPORTER`` (default ``cases.lab_cells.write_laboratory_cells``), a function that writes
them as class folders split by case into an adapt and a hold-out part.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from django.utils.translation import gettext

from audit.services import record

from .adapt import AdaptationCancelled, AdaptationError, AdaptConfig, adapt_model, differential_agreement, split_by_hash
from .data import DatasetError, load_image_folder
from .evaluation import evaluate_images
from .models import AdaptationJob, ModelVersion
from .registry import artifact_path, get_active_version
from .services import MODEL_ADAPTATION

logger = logging.getLogger(__name__)

DEFAULT_HOLDOUT_FRACTION = 0.2
DEFAULT_EXPORTER = "cases.lab_cells.write_laboratory_cells"
TRAINING_QUEUE = "training"
CASE_MAP_FILE = "cases.json"
# A running job whose heartbeat is older than this ended with its worker (settings.ADAPTATION_STALE_SECONDS);
# while a job runs, JobHeartbeat writes the heartbeat every heartbeat_interval() seconds.
DEFAULT_STALE_SECONDS = 15 * 60
DEAD_WORKER_MESSAGE = "Not adapted: the worker stopped before the job ended."


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:60] or "adapted"


def evaluate_version_on(version: ModelVersion, dataset, *, data: str, case_of: Sequence[str] | None = None) -> dict:
    """The metrics `evaluate --json` prints (plus the case differential agreement when cells have cases)."""
    from .predictor import Predictor

    predictor = Predictor(version)
    result = evaluate_images(predictor=predictor, paths=dataset.paths, labels=dataset.labels)
    metrics = {"model": version.name, "data": data, **result["metrics"]}
    if case_of is not None:
        metrics["case_differential"] = differential_agreement(
            case_of=case_of,
            labels=dataset.labels,
            predicted=result["probabilities"].argmax(axis=1),
            classes=predictor.classes,
        )
    return metrics


def adapt_and_evaluate(
    *,
    adapt_dir: Path,
    name: str,
    holdout_dir: Path | None = None,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    case_of: dict[str, str] | None = None,
    base_test_dirs: Sequence[Path] = (),
    config: AdaptConfig | None = None,
    provenance: dict | None = None,
    actor=None,
    register: bool = True,
    progress: Callable[[float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Adapt the active version on `adapt_dir`, measure candidate and active version on the hold-out part
    (and on `base_test_dirs`), register the candidate inactive with its provenance and evaluation.
    Returns the summary `manage.py adapt --json` prints. Files of a failed or cancelled run are removed."""
    from .selectors import version_from_directory

    report = progress or (lambda fraction, message: None)
    base = get_active_version()
    if base is None:
        raise AdaptationError("there is no active model version to adapt")
    if ModelVersion.objects.filter(name=name).exists():
        raise AdaptationError(f"a model version named {name!r} already exists")
    if not base.keras_artifact:
        raise AdaptationError(f"the active version {base.name} has no Keras model file: it cannot be adapted")
    base_dir = artifact_path(base, base.keras_artifact).parent
    try:
        data = load_image_folder([Path(adapt_dir)], classes=base.classes)
        if holdout_dir is not None:
            holdout = load_image_folder([Path(holdout_dir)], classes=base.classes)
        else:
            data, holdout = split_by_hash(data, fraction=holdout_fraction, salt="holdout:")
    except DatasetError as exc:
        raise AdaptationError(str(exc)) from exc
    if len(holdout) == 0:
        raise AdaptationError("the hold-out part is empty: give more cells or a --holdout folder")
    if len(data) == 0:
        raise AdaptationError("no cells are left to adapt on after the hold-out part")
    holdout_cases = None
    if case_of:
        holdout_cases = [case_of.get(f"{path.parent.name}/{path.name}") for path in holdout.paths]

    output_dir = Path(settings.MODEL_STORE_DIR) / f"{_slug(name)}-{uuid.uuid4().hex[:8]}"
    try:
        result = adapt_model(
            base_dir=base_dir,
            data=data,
            output_dir=output_dir,
            name=name,
            config=config,
            progress=report,
            should_stop=should_stop,
        )
        report(0.95, "evaluating on the hold-out part")
        candidate = version_from_directory(output_dir)
        holdout_label = f"hold-out part ({len(holdout)} cells)"
        candidate_metrics = evaluate_version_on(candidate, holdout, data=holdout_label, case_of=holdout_cases)
        active_metrics = evaluate_version_on(base, holdout, data=holdout_label, case_of=holdout_cases)
        base_tests = []
        for directory in base_test_dirs:
            try:
                test_set = load_image_folder([Path(directory)], classes=base.classes)
            except DatasetError as exc:
                raise AdaptationError(f"base test set {directory}: {exc}") from exc
            base_tests.append(
                {
                    "data": str(directory),
                    "candidate": evaluate_version_on(candidate, test_set, data=str(directory)),
                    "active": evaluate_version_on(base, test_set, data=str(directory)),
                }
            )
        if should_stop is not None and should_stop():
            raise AdaptationCancelled("adaptation cancelled")
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)
        raise

    summary = {
        "name": name,
        "base": base.name,
        "adapt_cells": len(data),
        "holdout_cells": len(holdout),
        "adapt_counts": data.counts(),
        "holdout_counts": holdout.counts(),
        "seconds": round(result.seconds, 1),
        "timings_s": result.metadata["training"]["timings_s"],
        # Whether the candidate's imaging profile gained this lab (its cells are then not unfamiliar_imaging).
        "imaging_profile": result.metadata["training"].get("adaptation", {}).get("imaging_profile"),
        "candidate": candidate_metrics,
        "active": active_metrics,
        "base_tests": base_tests,
        "version_id": None,
    }
    if register:
        version = register_adapted(
            output_dir=output_dir,
            metadata=result.metadata,
            base=base,
            summary=summary,
            provenance=provenance or {},
            actor=actor,
        )
        summary["version_id"] = version.pk
    else:
        summary["output_dir"] = str(output_dir)
    report(1.0, "done")
    return summary


def register_adapted(*, output_dir: Path, metadata: dict, base: ModelVersion, summary: dict, provenance: dict, actor):
    """An inactive ADAPTED version with its provenance and its recorded hold-out evaluation."""
    from .services import record_evaluation, register_from_metadata

    training = dict(metadata.get("training", {}))
    training["provenance"] = {
        "base_version": base.name,
        "base_version_id": base.pk,
        "adapt_counts": summary["adapt_counts"],
        "holdout_counts": summary["holdout_counts"],
        "seconds": summary["seconds"],
        "adapted_at": timezone.now().isoformat(),
        **provenance,
    }
    metadata = {
        **metadata,
        "training": training,
        "metrics": {**metadata.get("metrics", {}), "holdout": summary["candidate"]},
    }
    with transaction.atomic():
        version = register_from_metadata(
            metadata=metadata,
            source=ModelVersion.Source.ADAPTED,
            artifact_dir=str(Path(output_dir).relative_to(Path(settings.MODEL_STORE_DIR))),
            actor=actor,
        )
        record_evaluation(
            version=version,
            data=summary["candidate"]["data"] + (f" of {provenance['source']}" if provenance.get("source") else ""),
            metrics=summary["candidate"],
            baseline=base,
            baseline_metrics=summary["active"],
            actor=actor,
        )
        for test in summary["base_tests"]:
            record_evaluation(
                version=version,
                data=test["data"],
                metrics=test["candidate"],
                baseline=base,
                baseline_metrics=test["active"],
                actor=actor,
            )
    return version


# --- Jobs started from the page -------------------------------------------------------------------------


class AdaptationRefused(Exception):
    """A job cannot be started (name taken, nothing to adapt); the message says why."""


def queue_adaptation(*, name: str, laboratory_id: int | None, source_label: str, actor, request=None) -> AdaptationJob:
    """Create the job and hand it to a training worker (or a background process) once committed."""
    name = name.strip()
    if not name:
        raise AdaptationRefused(gettext("give the new version a name"))
    if (
        ModelVersion.objects.filter(name=name).exists()
        or AdaptationJob.objects.filter(
            name=name, status__in=[AdaptationJob.Status.QUEUED, AdaptationJob.Status.RUNNING]
        ).exists()
    ):
        raise AdaptationRefused(
            gettext("the name “%(name)s” is already taken by a version or a running adaptation") % {"name": name}
        )
    base = get_active_version()
    if base is None:
        raise AdaptationRefused(gettext("there is no active model version to adapt"))
    if not base.keras_artifact:
        raise AdaptationRefused(
            gettext("the active version %(name)s has no Keras model file: it cannot be adapted") % {"name": base.name}
        )
    job = AdaptationJob.objects.create(
        name=name,
        source_label=source_label[:200],
        options={"laboratory_id": laboratory_id, "holdout_fraction": DEFAULT_HOLDOUT_FRACTION},
        base_version=base,
        requested_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    record(
        action=MODEL_ADAPTATION,
        actor=actor,
        obj=job,
        details={"step": "queued", "name": name, "source": job.source_label, "base": base.name},
        request=request,
    )
    transaction.on_commit(lambda: dispatch_adaptation(job.pk))
    return job


def adaptation_runner() -> str:
    """ "celery" (a worker consuming the `training` queue) when a broker is configured, else "process"."""
    configured = getattr(settings, "ADAPTATION_RUNNER", "")
    if configured:
        return configured
    return "process" if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False) else "celery"


def dispatch_adaptation(job_id: int) -> None:
    runner = adaptation_runner()
    try:
        if runner == "celery":
            from .tasks import adapt_to_laboratory

            adapt_to_laboratory.apply_async(args=[job_id], queue=TRAINING_QUEUE)
        elif runner == "process":
            start_background_process(job_id)
        else:
            raise ValueError(f"unknown ADAPTATION_RUNNER {runner!r} (celery or process)")
    except Exception as error:  # noqa: BLE001 - a broker that is down must not lose the request
        logger.error("adaptation %s could not be started (%s)", job_id, error)
        AdaptationJob.objects.filter(pk=job_id, status=AdaptationJob.Status.QUEUED).update(
            message=f"Waiting for a training worker: {error}"
        )


def start_background_process(job_id: int) -> subprocess.Popen:
    """The embedded default: `manage.py adapt --job ID` in its own process, outside any web request."""
    log_dir = Path(settings.MODEL_STORE_DIR) / "adaptation-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = open(log_dir / f"job-{job_id}.log", "ab")  # noqa: SIM115 - handed to the child process
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", settings.SETTINGS_MODULE)}
    try:
        process = subprocess.Popen(
            [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "adapt", "--job", str(job_id)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    finally:
        log.close()
    # Reap it when it ends, so the web process keeps no zombie.
    threading.Thread(target=process.wait, name=f"adaptation-{job_id}", daemon=True).start()
    return process


def cancel_adaptation(*, job: AdaptationJob, actor, request=None) -> AdaptationJob:
    """A queued job ends now; a running one stops at its next step (it removes its files)."""
    with transaction.atomic():
        job = AdaptationJob.objects.select_for_update().get(pk=job.pk)
        if job.finished:
            return job
        job.cancel_requested = True
        fields = ["cancel_requested"]
        if job.status == AdaptationJob.Status.QUEUED:
            job.status, job.message, job.finished_at = AdaptationJob.Status.CANCELLED, "Cancelled.", timezone.now()
            fields += ["status", "message", "finished_at"]
        job.save(update_fields=fields)
        record(
            action=MODEL_ADAPTATION,
            actor=actor,
            obj=job,
            details={"step": "cancel", "name": job.name, "status": job.status},
            request=request,
        )
    return job


def heartbeat_interval() -> float:
    """A fifth of ADAPTATION_STALE_SECONDS (so four beats can be missed before a job is taken for dead), at
    least a second and at most a minute."""
    stale_after = float(getattr(settings, "ADAPTATION_STALE_SECONDS", DEFAULT_STALE_SECONDS))
    return max(1.0, min(60.0, stale_after / 5))


class JobHeartbeat:
    """While a job runs, a daemon thread writes its `heartbeat_at` every `interval` seconds, so a step that
    reports no progress for a long time (exporting many cells, one long epoch, an evaluation) is not taken
    for a dead worker. The thread stops with the job (or its process); a failed write is logged and retried
    at the next beat. Only a RUNNING job is touched: one already ended (or failed as dead) stays as it is."""

    def __init__(self, job_id: int, *, interval: float | None = None):
        self.job_id = job_id
        self.interval = heartbeat_interval() if interval is None else interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"adaptation-{job_id}-heartbeat", daemon=True)

    def start(self) -> JobHeartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)

    def beat(self) -> bool:
        try:
            return bool(
                AdaptationJob.objects.filter(pk=self.job_id, status=AdaptationJob.Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
            )
        except DatabaseError as error:
            logger.warning("adaptation %s: heartbeat not written: %s", self.job_id, error)
            return False

    def _run(self) -> None:
        try:
            while not self._stopped.wait(self.interval):
                self.beat()
        finally:
            connections.close_all()  # this thread's own connections


def run_adaptation_job(*, job_id: int, config: AdaptConfig | None = None) -> AdaptationJob:
    """Run one job to its end (called by the training worker or the background process). Failures and
    cancellation are recorded on the job, not raised."""
    with transaction.atomic():
        job = AdaptationJob.objects.select_for_update().get(pk=job_id)
        if job.status != AdaptationJob.Status.QUEUED:
            return job  # finished, cancelled, or already taken by another worker
        job.status, job.started_at, job.message = AdaptationJob.Status.RUNNING, timezone.now(), "Exporting cells."
        job.worker, job.heartbeat_at = this_worker(), job.started_at
        job.save(update_fields=["status", "started_at", "message", "worker", "heartbeat_at"])

    last = {"saved": 0.0, "checked": 0.0, "stop": False}

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last["saved"] >= 1.0 or fraction >= 1.0:
            last["saved"] = now
            AdaptationJob.objects.filter(pk=job_id).update(
                progress=round(0.05 + 0.95 * fraction, 4), message=message, heartbeat_at=timezone.now()
            )

    def should_stop() -> bool:
        now = time.monotonic()
        if not last["stop"] and now - last["checked"] >= 1.0:
            last["checked"] = now
            last["stop"] = AdaptationJob.objects.filter(pk=job_id, cancel_requested=True).exists()
        return last["stop"]

    status, message, version, result = AdaptationJob.Status.FAILED, "", None, {}
    heartbeat = JobHeartbeat(job_id).start()
    try:
        with tempfile.TemporaryDirectory(prefix="adapt-") as scratch:
            exporter = import_string(getattr(settings, "LABORATORY_CELLS_EXPORTER", DEFAULT_EXPORTER))
            exported = exporter(
                output_dir=Path(scratch),
                laboratory_id=job.options.get("laboratory_id"),
                holdout_fraction=job.options.get("holdout_fraction", DEFAULT_HOLDOUT_FRACTION),
            )
            if should_stop():
                raise AdaptationCancelled("adaptation cancelled")
            if not sum(exported.get("counts", {}).get("adapt", {}).values()):
                raise AdaptationError(f"there are no reviewed cells of signed cases of {job.source_label} to adapt on")
            if not exported.get("cases", {}).get("holdout"):
                raise AdaptationError(
                    f"{job.source_label} has a single signed case with reviewed cells: at least two are needed, "
                    "one of them held out to measure the candidate on"
                )
            progress(0.0, "adapting")
            summary = adapt_and_evaluate(
                adapt_dir=exported["adapt_dir"],
                holdout_dir=exported["holdout_dir"],
                case_of=exported.get("case_of"),
                name=job.name,
                config=config,
                provenance={
                    "source": job.source_label,
                    "laboratory_id": job.options.get("laboratory_id"),
                    "cases": exported.get("cases", {}),
                    "job_id": job.pk,
                    "warnings": exported.get("warnings", []),
                },
                actor=job.requested_by,
                progress=progress,
                should_stop=should_stop,
            )
        version = ModelVersion.objects.get(pk=summary["version_id"])
        status, result = AdaptationJob.Status.DONE, summary
        message = (
            f"Registered {version.name} (not active): hold-out accuracy {summary['candidate']['accuracy']:.2%} "
            f"vs {summary['active']['accuracy']:.2%} for {summary['base']}."
        )
        warnings = exported.get("warnings", [])
        if warnings:
            message += " " + " ".join(warnings)
    except AdaptationCancelled:
        status, message = AdaptationJob.Status.CANCELLED, "Cancelled; nothing was registered."
    except (AdaptationError, DatasetError) as error:
        message = f"Not adapted: {error}"
    except Exception as error:  # noqa: BLE001 - anything else is still this job's failure, said plainly
        logger.exception("adaptation %s failed", job_id)
        message = f"Not adapted: {error}"
    finally:
        heartbeat.stop()
    AdaptationJob.objects.filter(pk=job_id).update(
        status=status,
        message=message,
        version=version,
        result=result,
        progress=1.0 if status == AdaptationJob.Status.DONE else AdaptationJob.objects.get(pk=job_id).progress,
        finished_at=timezone.now(),
    )
    job.refresh_from_db()
    record(
        action=MODEL_ADAPTATION,
        actor=None,
        obj=job,
        details={"step": "finished", "name": job.name, "status": status, "message": message[:500]},
    )
    return job


# --- Jobs whose worker died -----------------------------------------------------------------------------


def this_worker() -> str:
    """ "host:pid" of the process running a job: what tells, on the same host, whether it is still alive."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_gone(worker: str) -> bool:
    """True when `worker` ran on this host and its process no longer exists (a worker elsewhere is judged
    by its heartbeat alone)."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, run by another user
        return False
    return False


def dead_jobs(*, now=None) -> list[AdaptationJob]:
    """Running jobs whose worker stopped: its process is gone (same host), or it has not reported (progress,
    heartbeat) for ADAPTATION_STALE_SECONDS."""
    now = now or timezone.now()
    stale_after = float(getattr(settings, "ADAPTATION_STALE_SECONDS", DEFAULT_STALE_SECONDS))
    dead = []
    for job in AdaptationJob.objects.filter(status=AdaptationJob.Status.RUNNING):
        last = job.heartbeat_at or job.started_at or job.created_at
        if (job.worker and _process_gone(job.worker)) or (now - last).total_seconds() > stale_after:
            dead.append(job)
    return dead


def fail_dead_jobs(*, now=None) -> list[AdaptationJob]:
    """End the jobs whose worker died as failed, with a message that says so (called when the adaptation
    pages are viewed and by `manage.py recover`); a job that moved meanwhile is left alone. Audited."""
    ended = []
    for job in dead_jobs(now=now):
        updated = AdaptationJob.objects.filter(
            pk=job.pk, status=AdaptationJob.Status.RUNNING, heartbeat_at=job.heartbeat_at
        ).update(status=AdaptationJob.Status.FAILED, message=DEAD_WORKER_MESSAGE, finished_at=timezone.now())
        if not updated:
            continue
        logger.warning("adaptation %s: its worker %s stopped before the job ended", job.pk, job.worker or "?")
        record(
            action=MODEL_ADAPTATION,
            actor=None,
            obj=job,
            details={"step": "finished", "name": job.name, "status": "failed", "message": DEAD_WORKER_MESSAGE},
        )
        job.refresh_from_db()
        ended.append(job)
    return ended


def recover_after_crash() -> dict[str, int]:
    """The inference app's part of `manage.py recover` (cases.recovery calls every app's hook)."""
    return {"adaptation job(s) whose worker stopped marked failed": len(fail_dead_jobs())}
