"""Helpers for fault tests: real services that can be broken on purpose, all on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from django.db import connection

from tests.conftest import skip_or_fail

LOOPBACK = "127.0.0.1"


def port_answers(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def require_postgresql() -> None:
    if connection.vendor != "postgresql":
        skip_or_fail("needs PostgreSQL: run with DATABASE_URL=postgres://postgres@127.0.0.1:5432/hematovision")


class TcpProxy:
    """A loopback TCP relay that can be cut (every connection dropped, new ones refused) and restored,
    to make a real server look briefly unreachable without stopping it for everyone else."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept_forever, daemon=True).start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept_forever(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            self._track(client)
            self._track(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


class ThrowAwayRedis:
    """A private redis-server on its own port: stopping it breaks no one else's tests."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://{LOOPBACK}:{self.port}/0"
        self._dir = Path(tempfile.mkdtemp(prefix="hematovision-redis-"))
        self._process: subprocess.Popen | None = None

    def start(self) -> ThrowAwayRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            skip_or_fail("redis-server is not installed")
        self._process = subprocess.Popen(
            [
                binary,
                "--bind",
                LOOPBACK,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: port_answers(self.port), timeout=10, what=f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def wait_until(condition, *, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def database_url_of(settings_dict: dict) -> str:
    """A DATABASE_URL for another process to reach the database this test process uses."""
    from urllib.parse import quote

    credentials = quote(settings_dict["USER"] or "", safe="")
    if settings_dict.get("PASSWORD"):
        credentials += ":" + quote(settings_dict["PASSWORD"], safe="")
    host = settings_dict["HOST"] or LOOPBACK
    port = settings_dict["PORT"] or 5432
    return f"postgres://{credentials}@{host}:{port}/{settings_dict['NAME']}"


class CeleryWorker:
    """A real `celery worker` subprocess (solo pool: killing it kills the task it runs)."""

    def __init__(self, *, project_dir: Path, environment: dict[str, str], log_path: Path, beat: bool = False):
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.ops.worker_app",
            "worker",
            "--pool=solo",
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
            f"--hostname=faulttest-{os.getpid()}-{time.monotonic_ns()}@%h",
        ]
        if beat:
            command += ["--beat", f"--schedule={log_path.with_suffix('.beat-schedule')}"]
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            command, cwd=project_dir, env=environment, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log_tail(self, characters: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:]

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no acknowledgement, exactly like a crashed machine."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


def upload_one(technician_api, technician, cell_upload) -> int:
    """One cell uploaded to a new case through the API; its image id."""
    from tests.factories import CaseFactory

    case = CaseFactory(created_by=technician)
    response = technician_api.post(f"/api/v1/cases/{case.pk}/images/", {"files": [cell_upload()]}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()["accepted"][0]["id"]


def classified(image_id: int):
    """The image once classified, else None (for wait_until)."""
    from cases.models import CellImage

    image = CellImage.objects.get(pk=image_id)
    return image if image.status == CellImage.Status.CLASSIFIED else None


def worker_killed_mid_task_is_delivered_again(
    *, start_worker, broker_url: str, environment: dict, upload, slow_once: Path, timeout: float
) -> None:
    """A worker SIGKILLed while predicting (`slow_once` appears when it starts): a second worker gets the task again
    and stores exactly one prediction, on the second attempt."""
    from cases.models import CellImage, Prediction

    environment = {**environment, "HEMATOVISION_TEST_SLOW_ONCE_FILE": str(slow_once)}
    first = start_worker(broker_url=broker_url, **environment)
    image_id = upload()
    wait_until(slow_once.exists, timeout=timeout, what=f"the first worker to start predicting\n{first.log_tail()}")
    assert CellImage.objects.get(pk=image_id).status == CellImage.Status.CLASSIFYING
    first.kill()

    second = start_worker(broker_url=broker_url, **environment)
    image = wait_until(
        lambda: classified(image_id),
        timeout=timeout,
        what=f"the task to be delivered again to the second worker\n{second.log_tail()}",
    )
    assert image.attempts == 2
    assert Prediction.objects.filter(image_id=image_id).count() == 1


def classified_by_the_requeue(*, start_worker, broker_url: str, image_id: int, timeout: float, **environment) -> None:
    """A worker with beat re-queueing every second classifies the image that stayed queued, once."""
    from cases.models import Prediction

    worker = start_worker(
        broker_url=broker_url,
        beat=True,
        HEMATOVISION_TEST_STALE_SECONDS="1",
        HEMATOVISION_TEST_REQUEUE_EVERY="1",
        **environment,
    )
    wait_until(
        lambda: classified(image_id),
        timeout=timeout,
        what=f"the periodic re-queue to classify the image\n{worker.log_tail()}",
    )
    assert Prediction.objects.filter(image_id=image_id).count() == 1
