"""Web-side CPU and queries of the requests a technician makes per cell (bench/e2e.py's Technician), in-process.

On a fresh PostgreSQL database of its own, as a technician with an API token (django.test.Client, the full
middleware stack), it times N of each:

- upload: POST /api/v1/cases/<id>/images/ with one PBC crop (the classification task is not sent: this
  measures the web side; the images are then given a prediction as a worker would);
- image: GET /api/v1/images/<id>/ of a classified crop;
- event: one wake of the case's event stream (cases.views_live._updates, what the stream runs per event,
  including closing the database connection it holds between events);
- case_images: GET /api/v1/cases/<id>/images/ (the case's first page);

and reports CPU milliseconds (time.process_time) and database queries per request, and the top cProfile
entries of each kind (a second, profiled pass).

    nice -n 19 .venv/bin/python bench/api_request_cpu.py --database-url postgres://postgres@127.0.0.1:5432/hv_bench_api
    nice -n 19 .venv/bin/python bench/api_request_cpu.py --database-url ... --json   # one JSON object
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path
from unittest import mock

from _in_process import setup_django

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = PROJECT_DIR.parent / "shared" / "datasets" / "pbc" / "test"
KINDS = ("upload", "image", "event", "case_images")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="postgres://.../<name>: dropped and created afresh")
    parser.add_argument("-n", "--requests", type=int, default=100, help="requests of each kind (default 100)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--top", type=int, default=12, help="cProfile entries per kind")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--show-queries", action="store_true", help="print the SQL of one request of each kind (stderr)"
    )
    arguments = parser.parse_args()

    setup_django(prefix="hv-api-cpu-", database_url=arguments.database_url)
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from django.db import connection as db
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    call_command("migrate", verbosity=0)
    from accounts.models import User
    from accounts.roles import Role, set_role
    from accounts.services import create_api_token
    from cases import services, tasks, views_live
    from cases.models import CellImage, Prediction
    from inference.models import ModelVersion

    user = User.objects.create_user("api-cpu@bench.hematovision.local", "api-cpu-password-1")
    set_role(user, Role.TECHNICIAN)
    _, key = create_api_token(user=user, second_factor=False)
    client = Client(headers={"authorization": f"Token {key}", "accept": "application/json"})
    version = ModelVersion.objects.create(
        name="bench-api-cpu",
        source=ModelVersion.Source.TRAINED,
        backbone="bench",
        classes=["NEUTROPHIL", "LYMPHOCYTE"],
        input_size=128,
        preprocessing={"input_size": 128},
        artifact_dir="bench-api-cpu",
        serving_artifact="model.tflite",
    )
    files = sorted(arguments.dataset.rglob("*.jpg"))[: 2 * arguments.requests]
    if len(files) < 2 * arguments.requests:
        parser.error(f"{arguments.dataset} has fewer than {2 * arguments.requests} crops")
    blobs = [(path.name, path.read_bytes()) for path in files]

    def classify(image_ids):
        """What the worker leaves behind: a prediction per image and the image classified."""
        Prediction.objects.bulk_create(
            Prediction(
                image_id=pk,
                model_version=version,
                label="NEUTROPHIL",
                confidence=0.98765,
                probabilities={"NEUTROPHIL": 0.98765, "LYMPHOCYTE": 0.01235},
                ood_score=0.4,
                latency_ms=10.0,
            )
            for pk in image_ids
        )
        CellImage.objects.filter(pk__in=image_ids).update(status=CellImage.Status.CLASSIFIED)

    results, profiles, shown = {}, {}, set()

    # Two passes: timed (process_time, queries), then profiled (cProfile), each on its own case and crops.
    def one_pass(profiled: bool, chunk: list) -> tuple:
        case = services.create_case(accession_id=f"API-CPU-{int(time.time())}-{int(profiled)}", created_by=user)
        # Warm up (first-request imports, URL resolver, serializers built once) on a case of its own.
        warm = services.create_case(accession_id=f"API-CPU-WARM-{int(time.time())}-{int(profiled)}", created_by=user)
        with mock.patch.object(tasks.classify_images, "apply_async"):
            response = client.post(
                f"/api/v1/cases/{warm.pk}/images/", {"files": [SimpleUploadedFile(*blobs[0], "image/jpeg")]}
            )
        assert response.status_code == 201, response.content[:300]
        classify([response.json()["accepted"][0]["id"]])
        warm_id = response.json()["accepted"][0]["id"]
        client.get(f"/api/v1/images/{warm_id}/")
        client.get(f"/api/v1/cases/{warm.pk}/images/")
        views_live._updates(warm, {warm_id})

        cpu = {kind: 0.0 for kind in KINDS}
        queries = {kind: 0 for kind in KINDS}
        profile = {kind: cProfile.Profile(time.process_time) for kind in KINDS}

        def run(kind, call):
            with CaptureQueriesContext(db) as captured:
                if profiled:
                    profile[kind].enable()
                started = time.process_time()
                result = call()
                cpu[kind] += time.process_time() - started
                if profiled:
                    profile[kind].disable()
            queries[kind] += len(captured.captured_queries)
            if arguments.show_queries and not profiled and kind not in shown:
                shown.add(kind)
                print(f"--- {kind}: queries of one request ---", file=sys.stderr)
                for query in captured.captured_queries:
                    print("  " + query["sql"][:160], file=sys.stderr)
            return result

        image_ids = []
        with mock.patch.object(tasks.classify_images, "apply_async"):
            for file_name, data in chunk:
                upload = SimpleUploadedFile(file_name, data, content_type="image/jpeg")
                response = run(
                    "upload", lambda upload=upload: client.post(f"/api/v1/cases/{case.pk}/images/", {"files": [upload]})
                )
                assert response.status_code == 201, response.content[:300]
                image_ids.append(response.json()["accepted"][0]["id"])
        classify(image_ids)
        db.close()  # the stream's wake starts without a connection (it closes it after each event)
        case.refresh_from_db()
        for image_id in image_ids:
            event = run("event", lambda image_id=image_id: views_live._updates(case, {image_id}))
            assert b'"status":"classified"' in event, event[:300]
        for image_id in image_ids:
            response = run("image", lambda image_id=image_id: client.get(f"/api/v1/images/{image_id}/"))
            assert response.status_code == 200 and response.json()["predictions"], response.content[:300]
        for _ in image_ids:
            response = run("case_images", lambda: client.get(f"/api/v1/cases/{case.pk}/images/"))
            assert response.status_code == 200 and response.json()["results"], response.content[:300]
        return case, cpu, queries, profile

    for profiled, chunk in ((False, blobs[: arguments.requests]), (True, blobs[arguments.requests :])):
        case, cpu, queries, profile = one_pass(profiled, chunk)
        target = profiles if profiled else results
        for kind in KINDS:
            if profiled:
                # The project's own functions by cumulative CPU (the middleware chain wraps every request),
                # then everything by own CPU.
                out = io.StringIO()
                stats = pstats.Stats(profile[kind], stream=out).sort_stats("cumulative")
                stats.print_stats(r"/(cases|audit|accounts|inference)/(?!.*middleware)", arguments.top)
                stats.sort_stats("tottime").print_stats(arguments.top)
                target[kind] = "\n".join(
                    line.replace(str(PROJECT_DIR) + "/", "") for line in out.getvalue().splitlines() if line.strip()
                )
            else:
                target[kind] = {
                    "cpu_ms": round(cpu[kind] * 1000 / len(chunk), 2),
                    "queries": round(queries[kind] / len(chunk), 2),
                }
    page = client.get(f"/api/v1/cases/{case.pk}/images/").json()
    load = os.getloadavg()
    summary = {
        "requests": arguments.requests,
        "case_images_page_size": len(page["results"]),
        "loadavg": [round(value, 2) for value in load],
        "per_request": results,
        "per_cell_cpu_ms": round(sum(results[kind]["cpu_ms"] for kind in KINDS if kind != "case_images"), 2),
    }
    if arguments.json:
        print(json.dumps(summary))
        return 0
    loads = " ".join(f"{value:.2f}" for value in load)
    print(f"{arguments.requests} requests of each kind, PostgreSQL, load average {loads}")
    print(f"{'kind':<12} {'CPU ms':>8} {'queries':>8}")
    for kind in KINDS:
        print(f"{kind:<12} {results[kind]['cpu_ms']:8.2f} {results[kind]['queries']:8.2f}")
    print(f"per cell (upload + event + image): {summary['per_cell_cpu_ms']:.2f} ms CPU")
    print(f"(case_images: a page of {summary['case_images_page_size']} images)")
    for kind in KINDS:
        print(f"\n--- {kind}: cProfile by cumulative CPU ---\n{profiles[kind]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
