"""End-to-end benchmark of the production path: gunicorn, Celery workers, Redis, PostgreSQL, on loopback.

By default it starts the production configuration itself (a fresh PostgreSQL database, a Redis database
number of its own, `gunicorn -c gunicorn.conf.py`, `celery worker`) with the bundled model, then simulates
N technicians: each creates a case and, until the time is up, uploads one cell image from the PBC test
set, waits until its prediction shows (by default: the case's event stream carries it, docs/events.md;
--get-after-event also GETs the image once the event came, as clients did before the event carried the
times; --no-push polls the API), pauses, and uploads the next. At the end one
technician uploads a 100-cell case in one request and waits for all of it. With --target it measures an
already running deployment instead (give --token for each technician, or one token shared).

    .venv/bin/python bench/e2e.py                       # 20 users, 60 s
    .venv/bin/python bench/e2e.py --duration 300 --json # the 5-minute run of docs/operations.md
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import secrets
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
from _processes import ProcessTree, cpu_seconds_of, free_port, run_checked, wait_for_http

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = PROJECT_DIR.parent / "shared" / "datasets" / "pbc" / "test"
BENCH_DATABASE = "hematovision_bench"
BENCH_REDIS_DB = 12
TERMINAL_STATUSES = {"classified", "failed"}
# What a pool process logs once its warm-up is over, skipped or failed (inference/warmup.py).
WARM_UP_LINES = (": warmed up with model version", ": warm-up turned off", ": not warmed up (")
# Behind the TLS-terminating proxy every request arrives with this header (production settings trust it).
PROXY_HEADERS = {"X-Forwarded-Proto": "https"}


@dataclass
class Results:
    latencies_ms: list[float] = field(default_factory=list)
    upload_request_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    cells: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, *, latency_ms: float, upload_ms: float, server_ms: float | None) -> None:
        with self.lock:
            self.latencies_ms.append(latency_ms)
            self.upload_request_ms.append(upload_ms)
            if server_ms is not None:
                self.server_ms.append(server_ms)
            self.cells += 1

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * (len(ordered) - 1))))
    return ordered[rank]


def cell_image_files(dataset: Path) -> list[Path]:
    files = sorted(path for path in dataset.rglob("*") if path.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not files:
        raise SystemExit(f"no cell images under {dataset}; pass --dataset")
    return files


class CaseEvents(threading.Thread):
    """A case's server-sent event stream (docs/events.md), read in the background: which images reached a
    final state, and their state as the event said it (label, times). The stream ends now and then; it is
    opened again, and callers check the API every SAFETY_CHECK_S in case an event was missed meanwhile."""

    SAFETY_CHECK_S = 2.0

    def __init__(self, *, base_url: str, headers: dict, case_id: int):
        super().__init__(daemon=True)
        self.url = f"{base_url}/cases/{case_id}/events/"
        self.session = requests.Session()
        self.session.headers.update(headers)
        # Image id -> its entry in the last event that found it classified or failed.
        self.finished: dict[int, dict] = {}
        self.condition = threading.Condition()
        self.ready = threading.Event()
        self.refused: str | None = None
        self.closing = False

    def run(self) -> None:
        while not self.closing:
            try:
                with self.session.get(self.url, stream=True, timeout=(5, 60)) as response:
                    if response.status_code != 200:
                        self.refused = f"HTTP {response.status_code}"
                        self.ready.set()
                        return
                    buffer = ""
                    for chunk in response.iter_content(chunk_size=None, decode_unicode=True):
                        if self.closing:
                            return
                        buffer += chunk
                        while "\n\n" in buffer:
                            block, buffer = buffer.split("\n\n", 1)
                            self._handle(block)
            except requests.RequestException:
                time.sleep(0.5)

    def _handle(self, block: str) -> None:
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if fields.get("event") == "ready":
            self.ready.set()
        elif fields.get("event") == "images":
            images = json.loads(fields["data"])["images"]
            with self.condition:
                self.finished.update((image["id"], image) for image in images if image["status"] in TERMINAL_STATUSES)
                self.condition.notify_all()

    def wait(self, image_ids: set[int], timeout: float) -> bool:
        """True once all of image_ids have finished by the events, False after timeout."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while not image_ids <= self.finished.keys():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.condition.wait(remaining)
        return True

    def finished_state(self, image_id: int) -> dict | None:
        with self.condition:
            return self.finished.get(image_id)

    def close(self) -> None:
        self.closing = True
        self.session.close()


CLIENT_MODES = ("event", "get-after-event", "poll")


def client_mode(*, push: bool, get_after_event: bool) -> str:
    """How a technician learns of its prediction: from the event itself, from a GET once the event came
    (the client before the event carried the times), or by polling the API."""
    if not push:
        return "poll"
    return "get-after-event" if get_after_event else "event"


class Technician:
    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        poll_interval: float,
        timeout: float,
        push: bool = False,
        get_after_event: bool = False,
    ):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Token {token}", **PROXY_HEADERS})
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.push = push
        # With push: GET the image (the case's images) once its event came, instead of reading the event.
        self.get_after_event = get_after_event
        self.events: CaseEvents | None = None

    def watch(self, case_id: int) -> None:
        """Listen to the case's events (when push is on); without them, waiting polls."""
        if self.events is not None:
            self.events.close()
            self.events = None
        if not self.push:
            return
        events = CaseEvents(base_url=self.base_url, headers=dict(self.session.headers), case_id=case_id)
        events.start()
        if not events.ready.wait(30) or events.refused:
            raise RuntimeError(f"event stream of case {case_id} not available: {events.refused or 'no ready event'}")
        self.events = events

    def create_case(self, accession_id: str) -> int:
        response = self.session.post(f"{self.base_url}/api/v1/cases/", json={"accession_id": accession_id}, timeout=30)
        if response.status_code != 201:
            raise RuntimeError(f"creating case {accession_id}: HTTP {response.status_code} {response.text[:200]}")
        return response.json()["id"]

    def upload(self, case_id: int, paths: list[Path]) -> list[dict]:
        files = [("files", (path.name, path.read_bytes(), "image/jpeg")) for path in paths]
        response = self.session.post(f"{self.base_url}/api/v1/cases/{case_id}/images/", files=files, timeout=120)
        if response.status_code != 201:
            raise RuntimeError(f"upload: HTTP {response.status_code} {response.text[:200]}")
        body = response.json()
        if body.get("rejected"):
            raise RuntimeError(f"upload rejected: {body['rejected']}")
        return body["accepted"]

    def wait_for_image(self, image_id: int) -> dict:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.events is not None:
                self.events.wait({image_id}, min(CaseEvents.SAFETY_CHECK_S, max(0.0, deadline - time.monotonic())))
                state = None if self.get_after_event else self.events.finished_state(image_id)
                if state is not None:
                    return state  # the event's entry: status, status_message, prediction, uploaded_at
            # Polling, the safety check of a missed event, or --get-after-event.
            response = self.session.get(f"{self.base_url}/api/v1/images/{image_id}/", timeout=30)
            if response.status_code != 200:
                raise RuntimeError(f"image {image_id}: HTTP {response.status_code} {response.text[:200]}")
            image = response.json()
            if image["status"] in TERMINAL_STATUSES:
                return image
            if self.events is None:
                time.sleep(self.poll_interval)
        raise RuntimeError(f"image {image_id} not classified after {self.timeout:.0f} s")

    def _local(self, url: str | None) -> str | None:
        """DRF builds `next` links for the https proxy the bench imitates; follow them on the loopback."""
        if not url:
            return None
        parts = urlsplit(url)
        return f"{self.base_url}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def wait_for_case(self, case_id: int, expected: int, image_ids: set[int] | None = None) -> list[dict]:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.events is not None and image_ids:
                done = self.events.wait(
                    image_ids, min(CaseEvents.SAFETY_CHECK_S, max(0.0, deadline - time.monotonic()))
                )
                if done and not self.get_after_event and len(image_ids) == expected:
                    return [self.events.finished_state(image_id) for image_id in sorted(image_ids)]
            images, url = [], f"{self.base_url}/api/v1/cases/{case_id}/images/"
            while url:
                response = self.session.get(url, timeout=30)
                response.raise_for_status()
                page = response.json()
                images += page["results"]
                url = self._local(page["next"])
            if len(images) == expected and all(image["status"] in TERMINAL_STATUSES for image in images):
                return images
            if self.events is None or not image_ids:
                time.sleep(self.poll_interval)
        raise RuntimeError(f"case {case_id} not classified after {self.timeout:.0f} s")


def server_latency_ms(image: dict) -> float | None:
    """Upload stored -> prediction stored, by the server's clocks: from the image's GET (`predictions`,
    newest first) or from its entry in an event (`prediction`, the latest)."""
    from datetime import datetime

    if "predictions" in image:
        prediction = image["predictions"][0] if image["predictions"] else None
    else:
        prediction = image.get("prediction")
    if not prediction or not prediction.get("created_at") or not image.get("uploaded_at"):
        return None
    uploaded = datetime.fromisoformat(image["uploaded_at"])
    predicted = datetime.fromisoformat(prediction["created_at"])
    return (predicted - uploaded).total_seconds() * 1000


def technician_loop(
    technician: Technician,
    *,
    number: int,
    files: list[Path],
    deadline: float,
    think: float,
    results: Results,
    run_id: str,
) -> None:
    rng = random.Random(number)
    # A case refuses an image identical to one it already has, so each case gets distinct images and a
    # technician who has used them all starts a new case, as a lab would for the next smear.
    order: list[Path] = []
    case_id, cases_opened = None, 0
    while time.monotonic() < deadline:
        if not order:
            order = rng.sample(files, len(files))
            try:
                cases_opened += 1
                case_id = technician.create_case(f"BENCH-{run_id}-{number:03d}-{cases_opened}")
                technician.watch(case_id)
            except Exception as error:  # noqa: BLE001 - counted and reported, the run goes on
                results.error(str(error))
                return
        path = order.pop()
        started = time.monotonic()
        try:
            (accepted,) = technician.upload(case_id, [path])
            uploaded = time.monotonic()
            image = technician.wait_for_image(accepted["id"])
            finished = time.monotonic()
            if image["status"] != "classified":
                results.error(f"image {image['id']} {image['status']}: {image['status_message']}")
            else:
                results.add(
                    latency_ms=(finished - started) * 1000,
                    upload_ms=(uploaded - started) * 1000,
                    server_ms=server_latency_ms(image),
                )
        except Exception as error:  # noqa: BLE001
            results.error(str(error))
        time.sleep(rng.uniform(0.5, 1.5) * think)


def hundred_cell_case(technician: Technician, files: list[Path], run_id: str, cells: int) -> float:
    case_id = technician.create_case(f"BENCH-{run_id}-CASE{cells}")
    technician.watch(case_id)
    chosen = random.Random(7).sample(files, cells)
    started = time.monotonic()
    accepted = technician.upload(case_id, chosen)
    images = technician.wait_for_case(case_id, cells, {image["id"] for image in accepted})
    elapsed = time.monotonic() - started
    failed = [image for image in images if image["status"] != "classified"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {cells} cells failed: {failed[0]['status_message']}")
    return elapsed


class ProductionStack:
    """PostgreSQL database, Redis database number, gunicorn and Celery workers, all started here."""

    def __init__(
        self,
        *,
        out_dir: Path,
        web_workers: int,
        web_threads: int,
        worker_processes: int,
        worker_concurrency: int,
        redis_url: str,
        postgres_url: str,
        database_name: str = BENCH_DATABASE,
        redis_db: int = BENCH_REDIS_DB,
        broker_url: str | None = None,
    ):
        self.out_dir = out_dir
        self.database_name = database_name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.database_url = f"{postgres_url.rstrip('/')}/{database_name}"
        self.postgres_url = postgres_url
        # Redis carries the push events (and is the broker unless --broker-url names another, e.g. amqp://).
        self.redis_db_url = f"{redis_url.rstrip('/')}/{redis_db}"
        self.broker_url = broker_url or self.redis_db_url
        self.web_workers, self.web_threads = web_workers, web_threads
        self.worker_processes, self.worker_concurrency = worker_processes, worker_concurrency
        self.processes: list[ProcessTree] = []
        self.workers: list[ProcessTree] = []
        self.environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "hematovision.settings.production",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": self.database_url,
            "IMAGE_ENCRYPTION_KEYS": base64.b64encode(secrets.token_bytes(32)).decode(),
            "EXPORT_PSEUDONYM_KEY": secrets.token_urlsafe(32),
            "CELERY_BROKER_URL": self.broker_url,
            # What the settings derive from a redis:// broker URL anyway; named so an amqp:// broker keeps push.
            "EVENTS_REDIS_URL": self.redis_db_url,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PRIVATE_MEDIA_ROOT": str(out_dir / "private"),
            "MODEL_STORE_DIR": str(out_dir / "models"),
            "HEMATOVISION_VAR_DIR": str(out_dir / "var"),
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(web_workers),
            "GUNICORN_THREADS": str(web_threads),
            "GUNICORN_ACCESSLOG": str(out_dir / "gunicorn-access.log"),
            "LOG_LEVEL": "WARNING",
        }

    def prepare(self, users: int) -> dict:
        import psycopg
        import redis

        with psycopg.connect(f"{self.postgres_url.rstrip('/')}/postgres", autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {self.database_name} WITH (FORCE)")
            connection.execute(f"CREATE DATABASE {self.database_name}")
        redis.Redis.from_url(self.redis_db_url).flushdb()
        if broker_kind(self.broker_url) == "amqp":
            purge_amqp_queue(self.broker_url)
        python = sys.executable
        run_checked([python, "manage.py", "migrate", "--no-input"], env=self.environment, cwd=PROJECT_DIR)
        output = run_checked(
            [python, str(PROJECT_DIR / "bench" / "_bench_setup.py"), str(users)],
            env={**self.environment, "PYTHONPATH": str(PROJECT_DIR)},
            cwd=PROJECT_DIR,
        )
        return json.loads(output.strip().splitlines()[-1])

    def start(self) -> None:
        bin_dir = Path(sys.executable).parent
        log = (self.out_dir / "gunicorn.log").open("ab")
        self.processes.append(
            ProcessTree.start(
                [str(bin_dir / "gunicorn"), "-c", "gunicorn.conf.py"], env=self.environment, cwd=PROJECT_DIR, log=log
            )
        )
        for number in range(1, self.worker_processes + 1):
            log = (self.out_dir / f"worker-{number}.log").open("ab")
            worker = ProcessTree.start(
                self.worker_command(number),
                env=self.environment,
                cwd=PROJECT_DIR,
                log=log,
            )
            self.processes.append(worker)
            self.workers.append(worker)
        wait_for_http(f"{self.base_url}/readyz", headers=PROXY_HEADERS, timeout=120)
        self.wait_for_warm_pools(timeout=120)

    def wait_for_warm_pools(self, *, timeout: float) -> None:
        """Until every pool process has logged the end of its warm-up (inference/warmup.py): the CPU baseline
        is taken after this, so loading the model is not counted as classification work."""
        logs = [self.out_dir / f"worker-{number}.log" for number in range(1, self.worker_processes + 1)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            warm = [sum(log.read_text(errors="replace").count(line) for line in WARM_UP_LINES) for log in logs]
            if all(count >= self.worker_concurrency for count in warm):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the workers' pool processes did not finish warming up within {timeout:.0f} s")

    def worker_command(self, number: int) -> list[str]:
        """The production worker: `celery worker` with a prefork pool (bench/worker_memory.py starts the same)."""
        return [
            str(Path(sys.executable).parent / "celery"),
            "-A",
            "hematovision",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={self.worker_concurrency}",
            f"--hostname=bench-{number}@%h",
        ]

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by gunicorn and the Celery workers, with all their child processes."""
        return sum(process.cpu_seconds() for process in self.processes)

    def cpu_seconds_by_role(self) -> dict[str, float]:
        """CPU seconds so far of each kind of process: gunicorn-master, gunicorn-child, celery-master, ..."""
        used: dict[str, float] = {}
        for tree in self.processes:
            root = tree.process.pid
            for pid in tree.rss_mb_by_process():
                role = f"{process_role(pid)}-{'master' if pid == root else 'child'}"
                used[role] = used.get(role, 0.0) + (cpu_seconds_of(pid) or 0.0)
        return used

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def broker_kind(broker_url: str) -> str:
    """ "redis" or "amqp" (RabbitMQ), from the URL's scheme."""
    scheme = urlsplit(broker_url).scheme
    if scheme in {"amqp", "amqps", "pyamqp"}:
        return "amqp"
    return "redis" if scheme in {"redis", "rediss", "unix"} else scheme


def purge_amqp_queue(broker_url: str, queue: str = "celery") -> None:
    """Empties the tasks' queue of an earlier (interrupted) run so none of its messages leak into this one."""
    from amqp.exceptions import NotFound
    from kombu import Connection

    with Connection(broker_url, connect_timeout=5) as connection:
        try:
            connection.default_channel.queue_purge(queue)
        except NotFound:  # no run has declared it yet on this virtual host
            pass


def process_role(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return "gone"
    if "gunicorn" in command:
        return "gunicorn"
    if "celery" in command:
        return "celery"
    return "other"


class Profiler:
    """py-spy recording every gunicorn and Celery process of the stack (masters, web workers, pool processes)
    while the technicians work, one raw collapsed-stack file per process, named by its role. py-spy runs
    outside the stack's process trees, so its own CPU is not counted in server_cpu_s."""

    def __init__(self, *, out_dir: Path, rate: int):
        self.out_dir, self.rate = out_dir, rate
        self.recorders: list = []
        self.files: list[Path] = []

    def start(self, trees: list[ProcessTree]) -> None:
        import subprocess

        py_spy = Path(sys.executable).parent / "py-spy"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for tree in trees:
            root = tree.process.pid
            for pid in tree.rss_mb_by_process():
                kind = "master" if pid == root else "child"
                path = self.out_dir / f"{process_role(pid)}-{kind}-{pid}.txt"
                command = [str(py_spy), "record", "--pid", str(pid), "--nonblocking", "--format", "raw"]
                command += ["--rate", str(self.rate), "--output", str(path)]
                log = (self.out_dir / f"py-spy-{pid}.log").open("ab")
                self.recorders.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
                self.files.append(path)

    def stop(self) -> None:
        import signal

        # SIGINT makes py-spy write what it recorded and exit.
        for recorder in self.recorders:
            if recorder.poll() is None:
                recorder.send_signal(signal.SIGINT)
        for recorder in self.recorders:
            try:
                recorder.wait(timeout=30)
            except Exception:  # noqa: BLE001 - a stuck recorder must not keep the stack running
                recorder.kill()


class MemorySampler(threading.Thread):
    """Peak resident memory of each Celery worker process (main process and pool children)."""

    def __init__(self, workers: list[ProcessTree], interval: float = 1.0):
        super().__init__(daemon=True)
        self.workers, self.interval = workers, interval
        self.peak_per_process_mb: float = 0.0
        self.peak_per_worker_mb: float = 0.0
        self.peak_pss_per_worker_mb: float = 0.0
        self.peak_uss_per_worker_mb: float = 0.0
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            for worker in self.workers:
                sizes = worker.rss_mb_by_process()
                if sizes:
                    self.peak_per_process_mb = max(self.peak_per_process_mb, max(sizes.values()))
                    self.peak_per_worker_mb = max(self.peak_per_worker_mb, sum(sizes.values()))
                    self.peak_pss_per_worker_mb = max(self.peak_pss_per_worker_mb, worker.pss_mb())
                    self.peak_uss_per_worker_mb = max(self.peak_uss_per_worker_mb, worker.uss_mb())
            self._stopping.wait(self.interval)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)


def run(arguments: argparse.Namespace) -> dict:
    files = cell_image_files(arguments.dataset)
    run_id = time.strftime("%Y%m%d%H%M%S")
    stack = None
    sampler = None
    profiler = None
    try:
        if arguments.target:
            base_url = arguments.target
            tokens = arguments.token or []
            if not tokens:
                raise SystemExit("--target needs --token (one per technician, or one shared)")
            model = "(the target's active model)"
        else:
            out_dir = PROJECT_DIR / "bench" / "out" / f"e2e-{run_id}"
            out_dir.mkdir(parents=True)
            stack = ProductionStack(
                out_dir=out_dir,
                web_workers=arguments.web_workers,
                web_threads=arguments.web_threads,
                worker_processes=arguments.worker_processes,
                worker_concurrency=arguments.worker_concurrency,
                redis_url=arguments.redis_url,
                postgres_url=arguments.postgres_url,
                database_name=arguments.database_name,
                redis_db=arguments.redis_db,
                broker_url=arguments.broker_url,
            )
            if arguments.model_dir:
                stack.environment["BUNDLED_MODEL_DIR"] = str(arguments.model_dir.resolve())
            prepared = stack.prepare(arguments.users + 1)
            tokens, model = prepared["tokens"], prepared["model"]
            stack.start()
            base_url = stack.base_url
            sampler = MemorySampler(stack.workers)
            sampler.start()
            if arguments.py_spy:
                # Only once the workers are warm and the pool processes exist: the start-up is not the load.
                profiler = Profiler(out_dir=arguments.py_spy, rate=arguments.py_spy_rate)
                profiler.start(stack.processes)

        def technician(number: int) -> Technician:
            return Technician(
                base_url=base_url,
                token=tokens[number % len(tokens)],
                poll_interval=arguments.poll_interval,
                push=arguments.push,
                get_after_event=arguments.get_after_event,
                timeout=arguments.image_timeout,
            )

        results = Results()
        cpu_before = stack.cpu_seconds() if stack else None
        cpu_by_role_before = stack.cpu_seconds_by_role() if stack else {}
        started = time.monotonic()
        client_cpu_before = time.process_time()
        deadline = started + arguments.duration
        threads = [
            threading.Thread(
                target=technician_loop,
                kwargs={
                    "technician": technician(number),
                    "number": number,
                    "files": files,
                    "deadline": deadline,
                    "think": arguments.think_time,
                    "results": results,
                    "run_id": run_id,
                },
            )
            for number in range(arguments.users)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        # This process: the technicians' requests, event streams and JSON (on the same cores as the server).
        client_cpu_s = time.process_time() - client_cpu_before

        case_seconds = None
        if arguments.case_cells:
            try:
                case_seconds = hundred_cell_case(technician(arguments.users), files, run_id, arguments.case_cells)
            except Exception as error:  # noqa: BLE001
                results.error(f"{arguments.case_cells}-cell case: {error}")
        # Web and worker processes only (not PostgreSQL, Redis or these clients), over every cell classified.
        server_cpu_s = None if cpu_before is None else stack.cpu_seconds() - cpu_before
        # Of live processes only (a recycled gunicorn worker's CPU is in server_cpu_s, not here).
        cpu_by_role = (
            {
                role: round(seconds - cpu_by_role_before.get(role, 0.0), 2)
                for role, seconds in stack.cpu_seconds_by_role().items()
            }
            if stack
            else None
        )
        if profiler is not None:
            profiler.stop()
        cells_classified = results.cells + (arguments.case_cells if case_seconds is not None else 0)
        return {
            "users": arguments.users,
            "duration_s": round(elapsed, 1),
            "think_time_s": arguments.think_time,
            "poll_interval_s": arguments.poll_interval,
            "push": arguments.push,
            # How a technician learned of its prediction: "event" (from the event itself), "get-after-event"
            # (a GET of the image once its event came) or "poll" (--no-push).
            "client_mode": client_mode(push=arguments.push, get_after_event=arguments.get_after_event),
            "model": model,
            "uploads": results.cells + len(results.errors),
            "cells_classified": results.cells,
            "latency_p50_ms": _rounded(percentile(results.latencies_ms, 0.50)),
            "latency_p95_ms": _rounded(percentile(results.latencies_ms, 0.95)),
            "latency_p99_ms": _rounded(percentile(results.latencies_ms, 0.99)),
            "latency_mean_ms": _rounded(statistics.fmean(results.latencies_ms) if results.latencies_ms else None),
            "upload_request_p95_ms": _rounded(percentile(results.upload_request_ms, 0.95)),
            "server_upload_to_prediction_p95_ms": _rounded(percentile(results.server_ms, 0.95)),
            "cells_per_s": round(results.cells / elapsed, 2) if elapsed else 0.0,
            "case_cells": arguments.case_cells,
            "case_seconds": None if case_seconds is None else round(case_seconds, 2),
            "server_cpu_s": None if server_cpu_s is None else round(server_cpu_s, 2),
            "server_cpu_s_by_process_kind": cpu_by_role,
            "server_cpu_ms_per_cell": (
                round(server_cpu_s * 1000 / cells_classified, 1)
                if server_cpu_s is not None and cells_classified
                else None
            ),
            "client_cpu_s": round(client_cpu_s, 2),
            "client_cpu_ms_per_cell": round(client_cpu_s * 1000 / results.cells, 1) if results.cells else None,
            "errors": len(results.errors),
            "error_examples": sorted(set(results.errors))[:5],
            "worker_rss_mb": None if sampler is None else round(sampler.peak_per_worker_mb, 1),
            "worker_process_rss_mb": None if sampler is None else round(sampler.peak_per_process_mb, 1),
            # The memory a worker really holds: pages its pool processes share with their parent counted once.
            "worker_pss_mb": None if sampler is None else round(sampler.peak_pss_per_worker_mb, 1),
            # Pages no other process maps (bench/worker_memory.py breaks all three down by process and mapping).
            "worker_uss_mb": None if sampler is None else round(sampler.peak_uss_per_worker_mb, 1),
            "web_workers": arguments.web_workers if stack else None,
            "worker_processes": arguments.worker_processes if stack else None,
            "worker_concurrency": arguments.worker_concurrency if stack else None,
            # The Celery broker the started stack used ("redis" or "amqp"); None with --target.
            "broker": broker_kind(stack.broker_url) if stack else None,
            "cpu_count": os.cpu_count(),
            "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
            "profiles": None if profiler is None else [str(path) for path in profiler.files],
        }
    finally:
        try:
            if profiler is not None:
                profiler.stop()
            if sampler is not None:
                sampler.stop()
        finally:
            if stack is not None:
                stack.stop()


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


TARGETS = (
    (
        "latency_p95_ms",
        "upload→prediction p95 (ms)",
        lambda r: r["latency_p95_ms"] is not None and r["latency_p95_ms"] <= 300,
        "≤ 300",
    ),
    (
        "case_seconds",
        "100-cell case end to end (s)",
        lambda r: r["case_seconds"] is not None and r["case_seconds"] <= 2,
        "≤ 2",
    ),
    ("errors", "errors", lambda r: r["errors"] == 0, "0"),
    (
        "server_cpu_ms_per_cell",
        "server CPU per cell (ms)",
        lambda r: r["server_cpu_ms_per_cell"] is not None and r["server_cpu_ms_per_cell"] <= 25,
        "≤ 25",
    ),
    (
        "worker_rss_mb",
        "peak RSS per worker (MB)",
        lambda r: r["worker_rss_mb"] is not None and r["worker_rss_mb"] <= 600,
        "≤ 600",
    ),
)


def print_table(result: dict) -> None:
    rows = [
        ("users", result["users"]),
        ("duration (s)", result["duration_s"]),
        ("think time between uploads (s)", result["think_time_s"]),
        (
            "waiting by",
            {
                "event": "events (push), the label from the event",
                "get-after-event": "events (push), then a GET of the image",
            }.get(result.get("client_mode"), f"polling every {result['poll_interval_s']} s"),
        ),
        ("model", result["model"]),
        ("cells classified", result["cells_classified"]),
        (
            "upload→prediction p50 / p95 / p99 (ms)",
            f"{result['latency_p50_ms']} / {result['latency_p95_ms']} / {result['latency_p99_ms']}",
        ),
        ("upload request alone p95 (ms)", result["upload_request_p95_ms"]),
        ("server: stored→predicted p95 (ms)", result["server_upload_to_prediction_p95_ms"]),
        ("cells per second", result["cells_per_s"]),
        (f"{result['case_cells']}-cell case end to end (s)", result["case_seconds"]),
        ("server CPU per cell classified (ms)", result["server_cpu_ms_per_cell"]),
        ("bench client CPU per technician cell (ms)", result["client_cpu_ms_per_cell"]),
        ("errors", result["errors"]),
        ("peak RSS per worker, all its processes (MB)", result["worker_rss_mb"]),
        ("peak RSS of one worker process (MB)", result["worker_process_rss_mb"]),
        ("peak PSS per worker, shared pages counted once (MB)", result["worker_pss_mb"]),
        ("peak USS per worker, private pages only (MB)", result["worker_uss_mb"]),
        ("server CPU by process kind (s)", result["server_cpu_s_by_process_kind"]),
        ("Celery broker", result["broker"]),
        ("machine: CPUs / load average at end", f"{result['cpu_count']} / {result['load_average_at_end']}"),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for label, value in rows:
        print(f"| {label.ljust(width)} | {value} |")
    print()
    for _, label, met, target in TARGETS:
        label = label.replace("100-cell", f"{result['case_cells']}-cell")
        print(f"target {label} {target}: {'met' if met(result) else 'NOT met'}")
    for example in result["error_examples"]:
        print(f"error: {example}")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20, help="simultaneous technicians (default 20)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of uploading (default 60)")
    parser.add_argument(
        "--think-time",
        type=float,
        default=1.0,
        help="mean pause of a technician between two uploads, in seconds (default 1)",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=0.2, help="seconds between two status checks (the page polls every 1 s)"
    )
    parser.add_argument(
        "--push",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for each prediction on the case's event stream (docs/events.md), checking the API every 2 s "
        "in case an event was missed; --no-push polls every --poll-interval instead (default: push)",
    )
    parser.add_argument(
        "--get-after-event",
        action="store_true",
        help="with push: GET the image once its event came and read the label and times there (the client "
        "before the event carried them) instead of reading them from the event",
    )
    parser.add_argument("--image-timeout", type=float, default=60, help="give up on one image after this")
    parser.add_argument("--case-cells", type=int, default=100, help="size of the one-request case at the end (0: skip)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn processes")
    parser.add_argument("--web-threads", type=int, default=8, help="threads per gunicorn process")
    parser.add_argument("--worker-processes", type=int, default=1, help="Celery worker instances")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="pool processes per Celery worker")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--database-name",
        default=BENCH_DATABASE,
        help=f"database to (re)create for the run (default {BENCH_DATABASE}; give another to run beside a colleague)",
    )
    parser.add_argument(
        "--redis-db", type=int, default=BENCH_REDIS_DB, help=f"Redis database number (default {BENCH_REDIS_DB})"
    )
    parser.add_argument(
        "--broker-url",
        help="Celery broker of the started stack, e.g. amqp://guest:guest@127.0.0.1:5672/hbroker (its 'celery' queue "
        "is purged first); default: the --redis-db database, which carries the push events either way",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="DIR",
        help="record every gunicorn and Celery process with py-spy during the run (raw collapsed stacks, one file "
        "per process, in DIR; summarise with bench/py_spy_summary.py)",
    )
    parser.add_argument("--py-spy-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="serve the model in this directory (metadata.json + files) instead of inference/bundled",
    )
    parser.add_argument("--target", help="base URL of a running deployment to measure instead of starting one")
    parser.add_argument("--token", action="append", help="API token of a technician (with --target; repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    result = run(arguments)
    if arguments.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
