"""Browser benchmark: 100 PBC test cells dropped on a new case page in Chromium, until every label shows.

It starts the site itself, either the embedded default (`manage.py runserver`, SQLite in a fresh folder,
tasks in-process) or, with --production, the production path of bench/e2e.py (gunicorn, a Celery worker,
Redis, PostgreSQL). A technician signs in, opens a new case, and the chosen files are handed to the
page's file input. The page records when that happened (the input's change event) and when the first
and the last prediction label appeared in the cell grid (a MutationObserver), so the figures include
the uploads, classification, and however the page learns of the results.

    .venv/bin/python bench/browser.py --json
    .venv/bin/python bench/browser.py --json --production

Prints `cells`, `first_label_s`, `all_labels_s`, `mode`, and the CPU seconds the site's processes used
during the run (`server_cpu_s`; the browser and the database are not counted).

With --timeline it adds `browser_cpu_s` (Chromium and Playwright's driver) and `timeline`: every upload
request, cards request and thumbnail request (start/end, from the page's resource timing), every pushed
event's arrival, when each cell's label appeared, and when the server stored each cell and its prediction
(all in seconds from the moment the files reached the input), with a `summary` of the same.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

from _processes import ProcessTree, _children, cpu_seconds_of, free_port, run_checked, wait_for_http

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = PROJECT_DIR.parent / "shared" / "datasets" / "pbc" / "test"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PROXY_HEADERS = {"X-Forwarded-Proto": "https"}

# Installed before any page script: the moment files reach the input, and when labels appear.
TIMING_SCRIPT = """
(() => {
  window.__bench = {start: null, first: null, all: null, expected: 0, labels: 0};
  document.addEventListener("change", (event) => {
    if (event.target && event.target.type === "file" && window.__bench.start === null) {
      window.__bench.start = performance.now();
      window.__bench.expected = event.target.files.length;
    }
  }, true);
  let count = function () {
    const b = window.__bench;
    if (b.start === null) return;
    const labels = document.querySelectorAll('[data-testid="cell-card"] [data-testid="prediction-label"]').length;
    b.labels = labels;
    const now = performance.now();
    if (labels > 0 && b.first === null) b.first = now;
    if (b.expected && labels >= b.expected && b.all === null) b.all = now;
  };
  if (window.__benchTimeline) {
    const t = window.__benchTimeline;
    // When each cell's label first appeared (by image id).
    const seen = {};
    const before = count;
    count = function () {
      before();
      if (window.__bench.start === null) return;
      const now = performance.now();
      document.querySelectorAll('[data-testid="cell-card"]').forEach((card) => {
        const id = card.dataset.imageId;
        if (!(id in seen) && card.querySelector('[data-testid="prediction-label"]')) {
          seen[id] = now;
          t.labels.push([Number(id), now]);
        }
      });
    };
  }
  new MutationObserver(() => count()).observe(document, {childList: true, subtree: true, characterData: true});
})();
"""


# With --timeline, before TIMING_SCRIPT: pushed events' arrival times, and room for every resource timing.
TIMELINE_SCRIPT = """
(() => {
  window.__benchTimeline = {labels: [], events: [], epochAtZero: Date.now() - performance.now()};
  if (performance.setResourceTimingBufferSize) performance.setResourceTimingBufferSize(5000);
  const Original = window.EventSource;
  if (!Original) return;
  window.EventSource = function (url, options) {
    const source = new Original(url, options);
    source.addEventListener("images", (event) => {
      let ids = [];
      try { ids = JSON.parse(event.data).images.map((image) => image.id); } catch (error) { ids = []; }
      window.__benchTimeline.events.push([performance.now(), ids]);
    });
    return source;
  };
  Object.assign(window.EventSource, {CONNECTING: 0, OPEN: 1, CLOSED: 2});
  window.EventSource.prototype = Original.prototype;
})();
"""


def _descendants_cpu_seconds(root: int, skip: set[int]) -> dict[str, float]:
    """CPU seconds of root's live descendants (and what they reaped), leaving out the subtrees in skip, by
    kind: Chromium's --type (renderer, gpu-process, utility...), "browser" for its main process, else
    "driver" (Playwright's)."""
    totals: dict[str, float] = {}
    pending = list(_children(root))
    while pending:
        pid = pending.pop()
        if pid in skip:
            continue
        try:
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            arguments = []
        kind = "driver"
        # Chromium rewrites its children's command lines into one space-separated string.
        arguments = b" ".join(arguments).split()
        if arguments and b"chrom" in arguments[0]:
            kind = next((argument[7:].decode() for argument in arguments if argument.startswith(b"--type=")), "browser")
        totals[kind] = totals.get(kind, 0.0) + (cpu_seconds_of(pid) or 0.0)
        pending += _children(pid)
    return totals


def chosen_files(dataset: Path, cells: int) -> list[Path]:
    files = sorted(path for path in dataset.rglob("*") if path.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if len(files) < cells:
        raise SystemExit(f"{dataset} has {len(files)} images, fewer than {cells}; pass --dataset")
    return random.Random(7).sample(files, cells)


class EmbeddedSite:
    """`manage.py runserver` with the embedded default's settings and a fresh var folder (SQLite, eager tasks)."""

    mode = "embedded"

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        environment = {
            name: value
            for name, value in os.environ.items()
            if name not in {"DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "EVENTS_REDIS_URL", "DEBUG"}
        }
        self.environment = {
            **environment,
            "DJANGO_SETTINGS_MODULE": "hematovision.settings.local",
            "HEMATOVISION_VAR_DIR": str(out_dir / "var"),
            "LOG_LEVEL": "WARNING",
        }
        self.processes: list[ProcessTree] = []
        self.extra_headers: dict[str, str] = {}

    def prepare(self, run_id: str) -> dict:
        run_checked([sys.executable, "manage.py", "migrate", "--no-input"], env=self.environment, cwd=PROJECT_DIR)
        return _setup(self.environment, run_id)

    def start(self) -> None:
        log = (self.out_dir / "runserver.log").open("ab")
        self.processes.append(
            ProcessTree.start(
                [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}", "--noreload", "--insecure"],
                env=self.environment,
                cwd=PROJECT_DIR,
                log=log,
            )
        )
        wait_for_http(f"{self.base_url}/readyz", headers={}, timeout=120)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


class ProductionSite:
    """bench/e2e.py's production stack (gunicorn -c gunicorn.conf.py, a Celery worker, Redis, PostgreSQL)."""

    mode = "production"

    def __init__(self, out_dir: Path, arguments: argparse.Namespace):
        from e2e import ProductionStack

        self.stack = ProductionStack(
            out_dir=out_dir,
            web_workers=arguments.web_workers,
            web_threads=arguments.web_threads,
            worker_processes=1,
            worker_concurrency=arguments.worker_concurrency,
            redis_url=arguments.redis_url,
            postgres_url=arguments.postgres_url,
            **({"database_name": arguments.database_name} if arguments.database_name else {}),
            **({"redis_db": arguments.redis_db} if arguments.redis_db is not None else {}),
        )
        self.base_url = self.stack.base_url
        # The browser talks plain HTTP on the loopback as if through the TLS proxy: the proxy's header, and
        # the page's own origin trusted for CSRF.
        self.stack.environment["CSRF_TRUSTED_ORIGINS"] = self.base_url
        # Pages need the collected, hashed static files (whitenoise's manifest), as after a release.
        self.stack.environment["STATIC_ROOT"] = str(out_dir / "static")
        self.extra_headers = dict(PROXY_HEADERS)

    @property
    def processes(self) -> list[ProcessTree]:
        return self.stack.processes

    @property
    def environment(self) -> dict:
        return self.stack.environment

    def prepare(self, run_id: str) -> dict:
        self.stack.prepare(1)
        run_checked(
            [sys.executable, "manage.py", "collectstatic", "--no-input"], env=self.stack.environment, cwd=PROJECT_DIR
        )
        return _setup({**self.stack.environment}, run_id)

    def start(self) -> None:
        self.stack.start()

    def stop(self) -> None:
        self.stack.stop()


def _setup(environment: dict, run_id: str) -> dict:
    output = run_checked(
        [sys.executable, str(PROJECT_DIR / "bench" / "_browser_setup.py"), run_id],
        env={**environment, "PYTHONPATH": str(PROJECT_DIR)},
        cwd=PROJECT_DIR,
    )
    return json.loads(output.strip().splitlines()[-1])


def drop_cells(site, prepared: dict, files: list[Path], *, timeout: float, timeline: bool = False) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            if site.extra_headers:
                context.set_extra_http_headers(site.extra_headers)
            if timeline:
                context.add_init_script(TIMELINE_SCRIPT)
            context.add_init_script(TIMING_SCRIPT)
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{site.base_url}/accounts/login/")
            page.fill("input[name=login]", prepared["email"])
            page.fill("input[name=password]", prepared["password"])
            # Enter submits the sign-in form itself (the page has other submit buttons: the language switcher).
            page.press("input[name=password]", "Enter")
            page.wait_for_load_state("networkidle")
            page.goto(f"{site.base_url}/cases/{prepared['case_id']}/")
            input_box = page.locator('[data-testid="upload-input"]')
            input_box.wait_for(state="attached")
            push = page.evaluate(
                "() => { const g = document.querySelector('[data-testid=cell-grid]');"
                " return !!(g && g.dataset.eventsUrl); }"
            )
            site_pids = {process.process.pid for process in site.processes}
            cpu_before = sum(process.cpu_seconds() for process in site.processes)
            browser_cpu_before = _descendants_cpu_seconds(os.getpid(), site_pids)
            started = time.monotonic()
            input_box.set_input_files([str(path) for path in files])
            deadline = started + timeout
            timings = page.evaluate("() => window.__bench")
            while timings["all"] is None and time.monotonic() < deadline:
                time.sleep(0.05)
                timings = page.evaluate("() => window.__bench")
            cpu_after = sum(process.cpu_seconds() for process in site.processes)
            browser_cpu_after = _descendants_cpu_seconds(os.getpid(), site_pids)
            cards = page.locator('[data-testid="cell-card"]').count()
            recorded = None
            if timeline:
                time.sleep(0.3)  # the last thumbnails
                recorded = page.evaluate(
                    "() => ({...window.__benchTimeline, resources: performance.getEntriesByType('resource')"
                    ".map((r) => [r.name, r.initiatorType, r.startTime, r.responseEnd, r.transferSize])})"
                )
        finally:
            browser.close()
    if timings["start"] is None:
        raise SystemExit("the page never saw the files (no change event on the file input)")

    def since_start(value):
        return None if value is None else round((value - timings["start"]) / 1000, 2)

    result = {
        "cells": len(files),
        "labels_shown": timings["labels"],
        "cards_shown": cards,
        "first_label_s": since_start(timings["first"]),
        "all_labels_s": since_start(timings["all"]),
        "push": push,
        "server_cpu_s": round(cpu_after - cpu_before, 2),
    }
    if timeline:
        result["browser_cpu_s"] = round(sum(browser_cpu_after.values()) - sum(browser_cpu_before.values()), 2)
        result["browser_cpu_s_by_process"] = {
            kind: round(used - browser_cpu_before.get(kind, 0.0), 2) for kind, used in browser_cpu_after.items()
        }
        result["timeline"] = _page_timeline(recorded, timings["start"], since_start)
    return result


def _page_timeline(recorded: dict, start_ms: float, since_start) -> dict:
    requests = {"upload": [], "cards": [], "thumbnail": [], "other": []}
    for name, _initiator, begin, end, size in recorded["resources"]:
        if begin < start_ms:
            continue
        path = name.split("://", 1)[-1].split("/", 1)[-1]
        kind = (
            "upload"
            if re.fullmatch(r"cases/\d+/images/", path)
            else "cards"
            if re.match(r"cases/\d+/cards/", path)
            else "thumbnail"
            if "variant=thumb" in path
            else "other"
        )
        requests[kind].append({"start": since_start(begin), "end": since_start(end), "bytes": size})
    return {
        "epoch_at_start": (recorded["epochAtZero"] + start_ms) / 1000,
        "requests": requests,
        "events": [{"at": since_start(at), "ids": ids} for at, ids in recorded["events"]],
        "labels": {str(image_id): since_start(at) for image_id, at in recorded["labels"]},
    }


def _server_timeline(site, prepared: dict, timeline: dict) -> None:
    output = run_checked(
        [sys.executable, str(PROJECT_DIR / "bench" / "_browser_timeline.py"), str(prepared["case_id"])],
        env={**site.environment, "PYTHONPATH": str(PROJECT_DIR)},
        cwd=PROJECT_DIR,
    )
    zero = timeline["epoch_at_start"]
    cells = json.loads(output.strip().splitlines()[-1])
    timeline["cells"] = [
        {
            "id": cell["id"],
            "stored": round(cell["stored"] - zero, 2),
            "predicted": None if cell["predicted"] is None else round(cell["predicted"] - zero, 2),
            "label": timeline["labels"].get(str(cell["id"])),
        }
        for cell in cells
    ]
    del timeline["labels"]

    def spread(values):
        values = sorted(value for value in values if value is not None)
        return [values[0], values[len(values) // 2], values[-1]] if values else None

    requests = timeline["requests"]
    timeline["summary"] = {
        "upload_requests": len(requests["upload"]),
        "upload_first_end_last_end": spread(item["end"] for item in requests["upload"])[::2]
        if requests["upload"]
        else None,
        "cards_requests": len(requests["cards"]),
        "thumbnail_requests": len(requests["thumbnail"]),
        "events": len(timeline["events"]),
        "stored_min_median_max": spread(cell["stored"] for cell in timeline["cells"]),
        "predicted_min_median_max": spread(cell["predicted"] for cell in timeline["cells"]),
        "label_min_median_max": spread(cell["label"] for cell in timeline["cells"]),
        "predicted_to_label_median": (
            spread(
                cell["label"] - cell["predicted"]
                for cell in timeline["cells"]
                if cell["label"] is not None and cell["predicted"] is not None
            )
            or [None] * 3
        )[1],
    }


def run(arguments: argparse.Namespace) -> dict:
    files = chosen_files(arguments.dataset, arguments.cells)
    run_id = time.strftime("%Y%m%d%H%M%S")
    out_dir = PROJECT_DIR / "bench" / "out" / f"browser-{run_id}"
    out_dir.mkdir(parents=True)
    site = ProductionSite(out_dir, arguments) if arguments.production else EmbeddedSite(out_dir)
    try:
        prepared = site.prepare(run_id)
        site.start()
        result = drop_cells(site, prepared, files, timeout=arguments.timeout, timeline=arguments.timeline)
        if arguments.timeline:
            _server_timeline(site, prepared, result["timeline"])
    finally:
        site.stop()
    return {
        **result,
        "mode": site.mode,
        "model": prepared["model"],
        "cpu_count": os.cpu_count(),
        "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
    }


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--production", action="store_true", help="gunicorn + Celery + Redis + PostgreSQL")
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--timeout", type=float, default=120, help="give up waiting for the labels after this")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn processes (--production)")
    parser.add_argument("--web-threads", type=int, default=8, help="threads per gunicorn process (--production)")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="Celery pool processes (--production)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--database-name", help="PostgreSQL database, dropped and created (--production; default bench/e2e.py's)"
    )
    parser.add_argument("--redis-db", type=int, help="Redis database number, flushed (--production; default e2e's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--timeline", action="store_true", help="add browser_cpu_s and a per-request, per-cell timeline"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    result = run(arguments)
    if arguments.json:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name}: {value}")
    return 0 if result["all_labels_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
