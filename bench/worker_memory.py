"""Memory of the production Celery worker (issue 12: "worker ≤ 600 MB"), and its CPU per classified cell.

Starts the worker exactly as bench/e2e.py does (`celery -A hematovision worker --concurrency=2`, the
production settings, the bundled model active) on a PostgreSQL database and a Redis database number of its
own, waits until both pool processes have warmed up, uploads --cells PBC test cells through
cases.services (one upload of one cell each, as the technicians of bench/e2e.py do; their worker CPU is
timed), then one upload of --case-cells cells (bench/e2e.py's 100-cell case), waits until all are
classified, and reports for each process of the worker (main process and pool processes) RSS, PSS and USS
(private pages) from /proc/<pid>/smaps_rollup, their sums, the peak summed RSS while classifying, the
mappings that hold the most resident memory (from /proc/<pid>/smaps, grouped: anonymous memory and the heap
— the Python objects, malloc arenas — and each big shared library: LiteRT, NumPy, SciPy, OpenBLAS, ...),
which heavy modules each process has imported, and the CPU of the worker per classified cell.

    nice -n 19 .venv/bin/python bench/worker_memory.py --json
    nice -n 19 .venv/bin/python bench/worker_memory.py --cells 100 --database-name hv_he2 --redis-db 11

--env NAME=VALUE (repeatable) adds to the worker's environment (to measure e.g. MALLOC_ARENA_MAX=4).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _processes import ProcessTree, cpu_seconds_of  # noqa: E402
from e2e import DEFAULT_DATASET, PROJECT_DIR, ProductionStack, cell_image_files  # noqa: E402

# Modules whose presence in a process says what it loaded (read from /proc/<pid>/maps: the shared objects).
LIBRARY_GROUPS = (
    ("litert", ("ai_edge_litert", "tflite", "tensorflow")),
    ("scipy", ("/scipy/", "scipy.libs/")),
    ("numpy+openblas", ("/numpy/", "numpy.libs", "openblas")),
    ("pillow", ("/PIL/", "pillow.libs")),
    ("psycopg/libpq", ("psycopg", "libpq")),
    ("python", ("libpython", "/bin/python")),
    ("libc/libstdc++/other system", ("/lib/", "/usr/lib")),
)


def mapping_group(name: str) -> str:
    if not name or name.startswith("[anon") or name == "[heap]":
        return "anonymous+heap (Python objects, malloc arenas, library buffers)"
    if name.startswith("["):
        return name
    for group, needles in LIBRARY_GROUPS:
        if any(needle in name for needle in needles):
            return group
    if name.endswith(".so") or ".so." in name or "cpython" in name:
        return "other extension modules"
    return "other files (" + Path(name).suffix.lstrip(".") + ")"


def smaps_rollup_kb(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[-1] == "kB":
            values[key] = int(parts[0])
    return values


def rss_by_mapping_group_kb(pid: int) -> dict[str, dict[str, int]]:
    """Resident (Rss) and private (Private_Clean + Private_Dirty) kB of each group of mappings."""
    groups: dict[str, dict[str, int]] = {}
    header = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")
    current = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if header.match(line):
            fields = line.split(None, 5)
            current = groups.setdefault(mapping_group(fields[5] if len(fields) > 5 else ""), {"rss": 0, "uss": 0})
        elif current is not None and line.startswith(("Rss:", "Private_Clean:", "Private_Dirty:")):
            key = "rss" if line.startswith("Rss:") else "uss"
            current[key] += int(line.split()[1])
    return groups


def loaded_libraries(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/maps").read_text()
    return [group for group, needles in LIBRARY_GROUPS[:5] if any(needle in text for needle in needles)]


def worker_processes(tree: ProcessTree) -> dict[int, str]:
    root = tree.process.pid
    return {pid: ("main" if pid == root else "pool") for pid in sorted(tree.rss_mb_by_process())}


def memory_report(tree: ProcessTree) -> dict:
    processes = []
    for pid, role in worker_processes(tree).items():
        try:
            rollup = smaps_rollup_kb(pid)
            groups = rss_by_mapping_group_kb(pid)
            libraries = loaded_libraries(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue
        processes.append(
            {
                "pid": pid,
                "role": role,
                "rss_mb": round(rollup["Rss"] / 1024, 1),
                "pss_mb": round(rollup["Pss"] / 1024, 1),
                "uss_mb": round((rollup["Private_Clean"] + rollup["Private_Dirty"]) / 1024, 1),
                "anonymous_mb": round(rollup.get("Anonymous", 0) / 1024, 1),
                "libraries_loaded": libraries,
                "rss_mb_by_mapping": {
                    group: round(sizes["rss"] / 1024, 1)
                    for group, sizes in sorted(groups.items(), key=lambda item: -item[1]["rss"])
                    if sizes["rss"] >= 1024
                },
                "uss_mb_by_mapping": {
                    group: round(sizes["uss"] / 1024, 1)
                    for group, sizes in sorted(groups.items(), key=lambda item: -item[1]["uss"])
                    if sizes["uss"] >= 1024
                },
            }
        )
    return {
        "processes": processes,
        "rss_mb": round(sum(process["rss_mb"] for process in processes), 1),
        "pss_mb": round(sum(process["pss_mb"] for process in processes), 1),
        "uss_mb": round(sum(process["uss_mb"] for process in processes), 1),
    }


class PeakSampler(threading.Thread):
    def __init__(self, tree: ProcessTree, interval: float = 0.2):
        super().__init__(daemon=True)
        self.tree, self.interval = tree, interval
        self.peak_rss_mb = 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, sum(self.tree.rss_mb_by_process().values()))
            self.stopping.wait(self.interval)


def worker_cpu_seconds(tree: ProcessTree) -> dict[str, float]:
    used = {"main": 0.0, "pool": 0.0}
    for pid, role in worker_processes(tree).items():
        used[role] += cpu_seconds_of(pid) or 0.0
    return used


def wait_for_warm_pool(tree: ProcessTree, log_path: Path, processes: int, timeout: float) -> float:
    """Seconds until the worker said it is ready and its pool processes stopped using CPU (warm-up done)."""
    started = time.monotonic()
    deadline = started + timeout
    while "ready." not in log_path.read_text(errors="replace"):
        if tree.process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    quiet, previous = 0, None
    while quiet < 3:
        if time.monotonic() > deadline:
            raise SystemExit("the pool processes did not settle")
        pool = [pid for pid, role in worker_processes(tree).items() if role == "pool"]
        used = sum(cpu_seconds_of(pid) or 0.0 for pid in pool)
        quiet = quiet + 1 if len(pool) == processes and previous is not None and used - previous < 0.02 else 0
        previous = used
        time.sleep(0.5)
    return time.monotonic() - started


_case_numbers = itertools.count(1)


def upload_cells(files: list[Path], cells: int, *, per_upload: int = 1) -> list[int]:
    """Uploads of per_upload cells each (1: as bench/e2e.py's technicians), through cases.services, to a new
    case; no case and no upload for no cells."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from accounts.models import User
    from cases import services

    if cells <= 0:
        return []
    user = User.objects.get(email="bench-technician-1@bench.hematovision.local")
    # Two cases in the same second (a few single cells, then the case) need two accession ids.
    accession_id = f"MEM-{time.strftime('%H%M%S')}-{os.getpid()}-{next(_case_numbers)}"
    case = services.create_case(accession_id=accession_id, created_by=user)
    image_ids = []
    for start in range(0, min(cells, len(files)), per_upload):
        uploads = [
            SimpleUploadedFile(path.name, path.read_bytes(), content_type="image/jpeg")
            for path in files[start : min(cells, start + per_upload)]
        ]
        accepted, rejected = services.add_images(case=case, files=uploads, uploaded_by=user)
        if rejected:
            raise SystemExit(f"rejected: {rejected[0].message}")
        image_ids += [image.pk for image in accepted]
    return image_ids


def wait_classified(image_ids: list[int], timeout: float) -> dict[str, int]:
    from cases.models import CellImage

    deadline = time.monotonic() + timeout
    while True:
        statuses = dict.fromkeys(("classified", "failed"), 0)
        for status in CellImage.objects.filter(pk__in=image_ids).values_list("status", flat=True):
            statuses[status] = statuses.get(status, 0) + 1
        if statuses["classified"] + statuses["failed"] == len(image_ids) or time.monotonic() > deadline:
            return statuses
        time.sleep(0.1)


def run(arguments: argparse.Namespace) -> dict:
    files = cell_image_files(arguments.dataset)
    wanted = arguments.cells + arguments.case_cells
    files = [files[index] for index in range(0, len(files), max(1, len(files) // max(1, wanted)))][:wanted]
    out_dir = PROJECT_DIR / "bench" / "out" / f"worker-memory-{time.strftime('%Y%m%d%H%M%S')}"
    out_dir.mkdir(parents=True)
    stack = ProductionStack(
        out_dir=out_dir,
        web_workers=1,
        web_threads=1,
        worker_processes=1,
        worker_concurrency=arguments.concurrency,
        redis_url=arguments.redis_url,
        postgres_url=arguments.postgres_url,
        database_name=arguments.database_name,
        redis_db=arguments.redis_db,
    )
    extra = dict(item.split("=", 1) for item in arguments.env or [])
    stack.environment.update(extra)
    stack.prepare(1)
    os.environ.update(stack.environment)
    sys.path.insert(0, str(PROJECT_DIR))
    import django

    django.setup()

    log_path = out_dir / "worker-1.log"
    worker = ProcessTree.start(stack.worker_command(1), env=stack.environment, cwd=PROJECT_DIR, log=log_path.open("ab"))
    sampler = None
    try:
        start_s = wait_for_warm_pool(worker, log_path, arguments.concurrency, timeout=180)
        warm = memory_report(worker)
        sampler = PeakSampler(worker)
        sampler.start()
        cpu_before = worker_cpu_seconds(worker)
        started = time.monotonic()
        image_ids = upload_cells(files, arguments.cells)
        statuses = wait_classified(image_ids, timeout=300)
        elapsed = time.monotonic() - started
        cpu_after = worker_cpu_seconds(worker)
        # Then one upload of --case-cells cells (bench/e2e.py's 100-cell case: tasks of up to 16 images).
        case_ids = upload_cells(files[arguments.cells :], arguments.case_cells, per_upload=arguments.case_cells)
        case_statuses = wait_classified(case_ids, timeout=300)
        statuses = {key: statuses[key] + case_statuses[key] for key in ("classified", "failed")}
        sampler.stopping.set()
        sampler.join()
        loaded = memory_report(worker)
        cpu = {role: cpu_after[role] - cpu_before[role] for role in cpu_after}
        return {
            "cells": len(image_ids) + len(case_ids),
            "single_cell_uploads": len(image_ids),
            "case_cells": len(case_ids),
            "classified": statuses["classified"],
            "failed": statuses["failed"],
            "concurrency": arguments.concurrency,
            "extra_env": extra,
            "start_to_warm_s": round(start_s, 1),
            "warm": warm,
            "after_cells": loaded,
            "rss_mb": loaded["rss_mb"],
            "pss_mb": loaded["pss_mb"],
            "uss_mb": loaded["uss_mb"],
            "peak_rss_mb": round(max(sampler.peak_rss_mb, loaded["rss_mb"]), 1),
            "batch_s": round(elapsed, 2),  # the single-cell uploads, which the CPU figures below are of
            "worker_cpu_ms_per_cell": round((cpu["main"] + cpu["pool"]) * 1000 / max(1, len(image_ids)), 1),
            "pool_cpu_ms_per_cell": round(cpu["pool"] * 1000 / max(1, len(image_ids)), 1),
            "main_cpu_ms_per_cell": round(cpu["main"] * 1000 / max(1, len(image_ids)), 1),
            "load_average": [round(value, 2) for value in os.getloadavg()],
            "log": str(log_path),
        }
    finally:
        if sampler is not None:
            sampler.stopping.set()
        worker.stop()


def print_table(result: dict) -> None:
    print(f"cells {result['cells']} (classified {result['classified']}, failed {result['failed']})", end=" ")
    print(f"in {result['batch_s']} s")
    print(f"worker CPU per cell {result['worker_cpu_ms_per_cell']} ms (pool {result['pool_cpu_ms_per_cell']} ms)")
    print(f"load average {result['load_average']}")
    for moment in ("warm", "after_cells"):
        report = result[moment]
        print(f"\n{moment}: RSS {report['rss_mb']} MB, PSS {report['pss_mb']} MB, USS {report['uss_mb']} MB")
        for process in report["processes"]:
            print(
                f"  {process['role']:4} pid {process['pid']}: RSS {process['rss_mb']} PSS {process['pss_mb']} "
                f"USS {process['uss_mb']} MB; loaded {', '.join(process['libraries_loaded']) or '-'}"
            )
            for group, size in list(process["rss_mb_by_mapping"].items())[:6]:
                print(f"      {size:7.1f} MB RSS  {group}")
    print(f"\npeak summed RSS while classifying {result['peak_rss_mb']} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=50, help="single-cell uploads, timed (default 50)")
    parser.add_argument("--case-cells", type=int, default=100, help="then one upload of this many cells (default 100)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes (production: 2)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--database-name", default="hv_worker_memory")
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--env", action="append", metavar="NAME=VALUE", help="added to the worker's environment")
    parser.add_argument("--json", action="store_true")
    arguments = parser.parse_args(argv)
    result = run(arguments)
    if arguments.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0 if result["failed"] == 0 and result["classified"] == result["cells"] else 1


if __name__ == "__main__":
    sys.exit(main())
