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
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

from _processes import ProcessTree, free_port, run_checked, wait_for_http

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
  function count() {
    const b = window.__bench;
    if (b.start === null) return;
    const labels = document.querySelectorAll('[data-testid="cell-card"] [data-testid="prediction-label"]').length;
    b.labels = labels;
    const now = performance.now();
    if (labels > 0 && b.first === null) b.first = now;
    if (b.expected && labels >= b.expected && b.all === null) b.all = now;
  }
  new MutationObserver(count).observe(document, {childList: true, subtree: true, characterData: true});
})();
"""


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


def drop_cells(site, prepared: dict, files: list[Path], *, timeout: float) -> dict:
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
            cpu_before = sum(process.cpu_seconds() for process in site.processes)
            started = time.monotonic()
            input_box.set_input_files([str(path) for path in files])
            deadline = started + timeout
            timings = page.evaluate("() => window.__bench")
            while timings["all"] is None and time.monotonic() < deadline:
                time.sleep(0.05)
                timings = page.evaluate("() => window.__bench")
            cpu_after = sum(process.cpu_seconds() for process in site.processes)
            cards = page.locator('[data-testid="cell-card"]').count()
        finally:
            browser.close()
    if timings["start"] is None:
        raise SystemExit("the page never saw the files (no change event on the file input)")

    def since_start(value):
        return None if value is None else round((value - timings["start"]) / 1000, 2)

    return {
        "cells": len(files),
        "labels_shown": timings["labels"],
        "cards_shown": cards,
        "first_label_s": since_start(timings["first"]),
        "all_labels_s": since_start(timings["all"]),
        "push": push,
        "server_cpu_s": round(cpu_after - cpu_before, 2),
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
        result = drop_cells(site, prepared, files, timeout=arguments.timeout)
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
    parser.add_argument("--json", action="store_true", help="print one JSON object")
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
