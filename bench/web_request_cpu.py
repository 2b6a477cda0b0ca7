"""Web process CPU per API request on the production path (gunicorn + uvicorn workers, PostgreSQL, Redis).

Starts the web side of bench/e2e.py's ProductionStack (a fresh PostgreSQL database, a Redis database
number, `gunicorn -c gunicorn.conf.py` with --web-workers uvicorn processes; no Celery worker, so uploaded
images stay queued), signs in one technician with an API token, warms up, then issues --requests
sequential requests of each kind a technician makes in bench/e2e.py:

    upload      POST /api/v1/cases/{id}/images/   (one PBC test crop)
    image       GET  /api/v1/images/{id}/
    case_images GET  /api/v1/cases/{id}/images/

For each kind it reports the gunicorn process tree's CPU milliseconds per request (user + system, from
/proc, so other load on the machine does not count) and the client's median wall time. --rounds repeats
the kinds in turn (upload, image, case_images, upload, ...) and reports the median round.

    nice -n 19 .venv/bin/python bench/web_request_cpu.py                      # table
    nice -n 19 .venv/bin/python bench/web_request_cpu.py --requests 300 --json  # one JSON object:
        {"kinds": {"upload": {"cpu_ms_per_request": .., "wall_ms_median": .., "rounds_cpu_ms": [..]}, ..},
         "requests_per_kind": N, "rounds": R, "web_workers": W, "load_average": [..]}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import requests
from e2e import DEFAULT_DATASET, PROJECT_DIR, PROXY_HEADERS, ProductionStack, cell_image_files

KINDS = ("upload", "image", "case_images")


def _timed(call) -> float:
    started = time.perf_counter()
    response = call()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code not in (200, 201):
        raise SystemExit(
            f"{response.request.method} {response.request.url}: HTTP {response.status_code} {response.text[:300]}"
        )
    return elapsed


def run(arguments: argparse.Namespace) -> dict:
    files = cell_image_files(arguments.dataset)
    out_dir = PROJECT_DIR / "bench" / "out" / f"web-cpu-{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
    out_dir.mkdir(parents=True)
    stack = ProductionStack(
        out_dir=out_dir,
        web_workers=arguments.web_workers,
        web_threads=1,
        worker_processes=0,
        worker_concurrency=1,
        redis_url=arguments.redis_url,
        postgres_url=arguments.postgres_url,
        database_name=arguments.database_name,
        redis_db=arguments.redis_db,
    )
    try:
        token = stack.prepare(1)["tokens"][0]
        stack.start()
        base = stack.base_url
        session = requests.Session()
        session.headers.update({"Authorization": f"Token {token}", **PROXY_HEADERS})
        response = session.post(f"{base}/api/v1/cases/", json={"accession_id": f"WEBCPU-{os.getpid()}"}, timeout=30)
        if response.status_code != 201:
            raise SystemExit(f"creating the case: HTTP {response.status_code} {response.text[:300]}")
        case_id = response.json()["id"]
        # A case refuses the same image twice: every upload is a different crop.
        needed = arguments.warmup + arguments.rounds * arguments.requests
        if len(files) < needed:
            raise SystemExit(f"{needed} distinct images needed, {len(files)} under {arguments.dataset}")
        blobs = [(path.name, path.read_bytes()) for path in files[:needed]]
        uploaded: list[int] = []
        counter = {"upload": 0}

        def upload():
            name, data = blobs[counter["upload"]]
            counter["upload"] += 1
            response = session.post(
                f"{base}/api/v1/cases/{case_id}/images/", files=[("files", (name, data, "image/jpeg"))], timeout=60
            )
            if response.status_code == 201:
                uploaded.extend(image["id"] for image in response.json()["accepted"])
            return response

        def image():
            return session.get(f"{base}/api/v1/images/{uploaded[-1]}/", timeout=30)

        def case_images():
            return session.get(f"{base}/api/v1/cases/{case_id}/images/", timeout=30)

        calls = {"upload": upload, "image": image, "case_images": case_images}
        for kind in KINDS:  # warm-up: imports, connection pool, caches
            for _ in range(arguments.warmup):
                _timed(calls[kind])
        cpu: dict[str, list[float]] = {kind: [] for kind in KINDS}
        wall: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for _ in range(arguments.rounds):
            for kind in KINDS:
                before = stack.cpu_seconds()
                wall[kind] += [_timed(calls[kind]) for _ in range(arguments.requests)]
                cpu[kind].append((stack.cpu_seconds() - before) * 1000 / arguments.requests)
        return {
            "kinds": {
                kind: {
                    "cpu_ms_per_request": round(statistics.median(cpu[kind]), 2),
                    "wall_ms_median": round(statistics.median(wall[kind]), 2),
                    "rounds_cpu_ms": [round(value, 2) for value in cpu[kind]],
                }
                for kind in KINDS
            },
            "requests_per_kind": arguments.requests,
            "rounds": arguments.rounds,
            "web_workers": arguments.web_workers,
            "load_average": [round(value, 2) for value in os.getloadavg()],
        }
    finally:
        stack.stop()


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="sequential requests of each kind per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the kinds (median reported)")
    parser.add_argument("--warmup", type=int, default=20, help="requests of each kind before measuring")
    parser.add_argument("--web-workers", type=int, default=1, help="gunicorn (uvicorn) processes")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database-name", default="hv_web_cpu_bench", help="database to (re)create for the run")
    parser.add_argument("--redis-db", type=int, default=14, help="Redis database number (default 14)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    result = run(arguments)
    if arguments.json:
        print(json.dumps(result))
    else:
        print(f"{'kind':<12} {'CPU ms/request':>15} {'wall ms (median)':>17}  rounds")
        for kind, row in result["kinds"].items():
            print(
                f"{kind:<12} {row['cpu_ms_per_request']:>15.2f} {row['wall_ms_median']:>17.2f}  {row['rounds_cpu_ms']}"
            )
        print(f"load average {result['load_average']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
