"""Processes the end-to-end benchmark starts, watches and stops: only its own, by process id."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_checked(command: list[str], *, env: dict, cwd: Path) -> str:
    completed = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")
    return completed.stdout


def wait_for_http(url: str, *, headers: dict, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, headers=headers, timeout=5)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}: {response.text[:500]}"
        except requests.RequestException as error:
            last = str(error)
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout:.0f} s: {last}")


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            found += [int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def _pss_mb(pid: int) -> float | None:
    """Proportional set size: private pages, plus shared ones divided among the processes sharing them
    (a forked pool shares its parent's pages; summing RSS counts them once per process)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def _uss_mb(pid: int) -> float | None:
    """Unique set size: the pages only this process maps (what ending it would free)."""
    try:
        values = {}
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("Private_Clean", "Private_Dirty"):
                values[key] = int(rest.split()[0])
        return sum(values.values()) / 1024 if values else None
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process, plus that of its children it has waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # After the ")": state is field 3 of proc(5), so utime (14), stime (15), cutime (16), cstime (17) are 11..14.
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def cpu_seconds_of(pid: int) -> float | None:
    """User + system CPU seconds of one process and the children it reaped (None: it is gone)."""
    return _cpu_seconds(pid)


class ProcessTree:
    """A process started here in its own session, so that it and its children stop together."""

    def __init__(self, process: subprocess.Popen, log):
        self.process = process
        self._log = log

    @classmethod
    def start(cls, command: list[str], *, env: dict, cwd: Path, log) -> ProcessTree:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return cls(process, log)

    def rss_mb_by_process(self) -> dict[int, float]:
        sizes: dict[int, float] = {}
        pending = [self.process.pid]
        while pending:
            pid = pending.pop()
            size = _rss_mb(pid)
            if size is not None:
                sizes[pid] = size
                pending += _children(pid)
        return sizes

    def pss_mb(self) -> float:
        """Proportional set size of the process and all its live descendants together."""
        return sum(_pss_mb(pid) or 0.0 for pid in self.rss_mb_by_process())

    def uss_mb(self) -> float:
        """Unique set size of the process and all its live descendants together."""
        return sum(_uss_mb(pid) or 0.0 for pid in self.rss_mb_by_process())

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the process and all its live descendants (and those they reaped)."""
        total = 0.0
        pending = [self.process.pid]
        while pending:
            pid = pending.pop()
            used = _cpu_seconds(pid)
            if used is not None:
                total += used
                pending += _children(pid)
        return total

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            # Its own session: the group id is the pid of the process started here.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
