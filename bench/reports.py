"""Reports at a laboratory's scale: the supervisors' dashboard and the researchers' export on N reviewed cells.

Seeds a fresh PostgreSQL database (dropped and created again; default `hv_bench_reports`) with N synthetic
classified and reviewed cells spread evenly over the last 90 days (50 cells a case, 8 classes, about 8% of
them reclassified, every other case signed and 2% of its cells amended after sign-off, 5% flagged), all
generated inside PostgreSQL (INSERT ... SELECT generate_series), so a million cells seed in minutes. Then,
through Django's test client with the project's settings:

- `dashboard_s`: median of 5 warm requests of the 30-day dashboard page (after a first request, reported as
  `dashboard_first_s`, which aggregates every day of the period while nothing is stored yet). Reviews are
  seeded 20 minutes (amendments 2 hours) after their prediction, so the newest cells' reviews lie a little
  ahead and today's aggregate counts as changed on every request, as in a lab where cells keep arriving;
- `dashboard_peak_mb`: peak Python allocations (tracemalloc) during one such request;
- `export_rows_per_s`: the researchers' CSV export of every cell (no filter), read to the end.

    .venv/bin/python bench/reports.py --cells 200000 --json
    .venv/bin/python bench/reports.py --cells 1000000 --json
    .venv/bin/python bench/reports.py --cells 1000000 --json --reuse   # measure again without re-seeding

PostgreSQL comes from --postgres (default postgres://postgres@127.0.0.1:5432, trust auth as in CI). The
script runs whatever code its folder holds, so the same file measures an older checkout (a git worktree).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
CELLS_PER_CASE = 50
DAYS = 90
CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
PASSWORD = "bench-password-not-secret"  # noqa: S105
BENCH_ROLES = ("technician", "pathologist", "supervisor", "researcher")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=200_000, help="reviewed cells to seed (default 200000)")
    parser.add_argument("--database", default="hv_bench_reports", help="PostgreSQL database (dropped and made)")
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432"))
    parser.add_argument("--reuse", action="store_true", help="keep an already seeded database of --cells cells")
    parser.add_argument("--requests", type=int, default=5, help="warm dashboard requests (median reported)")
    parser.add_argument("--json", action="store_true", help="print one JSON object only")
    args = parser.parse_args()
    if args.cells < CELLS_PER_CASE:
        parser.error(f"--cells must be at least {CELLS_PER_CASE}")
    if not args.database.replace("_", "").isalnum():
        parser.error("--database may hold letters, digits and underscores only")
    return args


def recreate_database(*, server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def columns_of(cursor, table: str) -> set[str]:
    cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s", [table])
    return {row[0] for row in cursor.fetchall()}


EMPTY_VALUES = {"character varying": "''", "text": "''", "boolean": "false", "jsonb": "'[]'::jsonb"}


def other_required(cursor, table: str, given: str) -> tuple[str, str]:
    """Columns of `table` not in `given` that need a value (Django sets no database defaults): their names and
    an empty value each, as SQL fragments to append, so the seeding runs on whatever schema the code has."""
    cursor.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = %s AND is_nullable = 'NO' AND column_default IS NULL",
        [table],
    )
    named = {name.strip() for name in given.replace("\n", " ").split(",")}
    missing = [(name, kind) for name, kind in cursor.fetchall() if name not in named and name != "id"]
    unknown = [f"{name} ({kind})" for name, kind in missing if kind not in EMPTY_VALUES]
    if unknown:
        raise SystemExit(f"bench/reports.py does not know how to fill {table}: {', '.join(unknown)}")
    return "".join(f", {name}" for name, _ in missing), "".join(f", {EMPTY_VALUES[kind]}" for _, kind in missing)


def seed(*, cells: int, log) -> dict:
    """Users, one model version and `cells` reviewed cells; returns the users and version to measure with."""
    from allauth.account.models import EmailAddress
    from allauth.mfa.totp.internal.auth import TOTP
    from django.contrib.auth.models import Group
    from django.db import connection, transaction

    from accounts.models import User
    from accounts.roles import Role
    from inference.models import ModelVersion

    users = {}
    for role in BENCH_ROLES:
        email = f"bench-{role}@bench.hematovision.local"
        user = User.objects.create_user(email=email, password=PASSWORD)
        user.groups.add(Group.objects.get(name=role))
        EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
        if role == Role.SUPERVISOR:
            TOTP.activate(user, "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
        users[role] = user
    version = ModelVersion.objects.create(
        name="bench-model",
        source=ModelVersion.Source.TRAINED,
        backbone="bench",
        classes=CLASSES,
        input_size=128,
        preprocessing={"input_size": 128},
        artifact_dir="bench-model",
        serving_artifact="model.tflite",
        is_active=True,
    )
    technician, pathologist = users[Role.TECHNICIAN].pk, users[Role.PATHOLOGIST].pk
    cases = -(-cells // CELLS_PER_CASE)
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        image_columns = columns_of(cursor, "cases_cellimage")
        cursor.execute("SELECT setseed(0.42)")
        cursor.execute(
            """
            CREATE TEMP TABLE synth ON COMMIT DROP AS
            SELECT i,
                   (i - 1) / %(per_case)s + 1 AS case_no,
                   now() - interval '90 days' + (i - 0.5) * (interval '90 days' / %(cells)s) AS at,
                   t.truth, t.predicted, t.confidence, t.flagged, t.latency, t.amend,
                   array[random(), random(), random(), random(), random(), random(), random(), random()] AS noise
            FROM generate_series(1, %(cells)s) AS i,
            LATERAL (
                SELECT truth,
                       CASE WHEN r1 < 0.92 THEN truth ELSE (truth + 1 + floor(r2 * 7)::int) %% 8 END AS predicted,
                       0.35 + 0.64 * sqrt(r3) AS confidence,
                       r4 < 0.05 AS flagged,
                       2.0 + 6.0 * r5 AS latency,
                       r6 < 0.02 AS amend
                FROM (SELECT floor(random() * 8)::int + 0 * i AS truth, random() AS r1, random() AS r2, random() AS r3,
                             random() AS r4, random() AS r5, random() AS r6 OFFSET 0) AS r
            ) AS t
            """,
            {"cells": cells, "per_case": CELLS_PER_CASE},
        )
        log(f"synthetic rows: {time.perf_counter() - started:.1f} s")
        case_names = "id, accession_id, patient_reference, status, created_by_id, created_at, updated_at"
        case_extra, case_values = other_required(cursor, "cases_case", case_names)
        cursor.execute(
            f"""
            INSERT INTO cases_case ({case_names}{case_extra})
            SELECT case_no, 'BENCH-' || case_no, 'MRN' || lpad(case_no::text, 8, '0'), 'awaiting_review',
                   %(technician)s, min(at), min(at){case_values}
            FROM synth GROUP BY case_no
            """,  # noqa: S608
            {"technician": technician},
        )
        image_names = (
            "id, case_id, storage_key, sha256, size_bytes, width, height, content_type, original_name, "
            "uploaded_by_id, uploaded_at, status, status_message, attempts, status_changed_at"
        )
        if "kind" in image_columns:  # a field image holds several cells; these are all single cells
            image_names += ", kind"
        image_extra, image_values = other_required(cursor, "cases_cellimage", image_names)
        cursor.execute(
            f"""
            INSERT INTO cases_cellimage ({image_names}{image_extra})
            SELECT i, case_no, 'bench/' || i, md5(i::text) || md5((-i)::text), 20000, 360, 363, 'image/jpeg',
                   'cell_' || i || '.jpg', %(technician)s, at, 'classified', '', 1, at
                   {", 'cell'" if "kind" in image_columns else ""}{image_values}
            FROM synth
            """,  # noqa: S608
            {"technician": technician},
        )
        log(f"cases and images: {time.perf_counter() - started:.1f} s")
        # The predicted class gets `confidence`; the other classes share the rest in random proportions.
        classes_sql = "ARRAY[" + ", ".join(f"'{name}'" for name in CLASSES) + "]"
        prediction_names = (
            "image_id, model_version_id, label, confidence, probabilities, flagged, ood_score, latency_ms, created_at"
        )
        prediction_extra, prediction_values = other_required(cursor, "cases_prediction", prediction_names)
        cursor.execute(
            f"""
            INSERT INTO cases_prediction ({prediction_names}{prediction_extra})
            SELECT i, %(version)s, ({classes_sql})[predicted + 1], confidence,
                   (SELECT jsonb_object_agg(({classes_sql})[k],
                        CASE WHEN k - 1 = predicted THEN confidence
                             ELSE (1 - confidence) * noise[k] /
                                  (SELECT sum(noise[j]) FROM generate_series(1, 8) j WHERE j - 1 <> predicted)
                        END)
                    FROM generate_series(1, 8) AS k),
                   flagged, NULL, latency, at{prediction_values}
            FROM synth
            """,  # noqa: S608
            {"version": version.pk},
        )
        log(f"predictions: {time.perf_counter() - started:.1f} s")
        cursor.execute(
            f"""
            INSERT INTO cases_review (image_id, reviewer_id, kind, from_label, to_label, reason, created_at)
            SELECT i, %(pathologist)s, CASE WHEN truth = predicted THEN 'confirm' ELSE 'override' END,
                   ({classes_sql})[predicted + 1], ({classes_sql})[truth + 1],
                   CASE WHEN truth = predicted THEN '' ELSE 'morphology' END, at + interval '20 minutes'
            FROM synth
            """,  # noqa: S608
            {"pathologist": pathologist},
        )
        cursor.execute(
            "UPDATE cases_case SET status = 'signed', signed_by_id = %(pathologist)s, "
            "signed_at = created_at + interval '1 hour' WHERE id %% 2 = 0",
            {"pathologist": pathologist},
        )
        cursor.execute(
            f"""
            INSERT INTO cases_review (image_id, reviewer_id, kind, from_label, to_label, reason, created_at)
            SELECT i, %(pathologist)s, 'amendment', ({classes_sql})[truth + 1], ({classes_sql})[(truth + 1) %% 8 + 1],
                   'second opinion', at + interval '2 hours'
            FROM synth WHERE amend AND case_no %% 2 = 0
            """,  # noqa: S608
            {"pathologist": pathologist},
        )
        log(f"reviews: {time.perf_counter() - started:.1f} s")
        if "final_label" in image_columns:
            # The stored final label is kept by the review services; rows made in SQL get it the way the
            # migration backfilled existing cells.
            from cases.final_labels import backfill_final_labels

            backfill_final_labels(connection)
            log(f"final labels: {time.perf_counter() - started:.1f} s")
        for table in ("cases_case", "cases_cellimage", "cases_prediction", "cases_review"):
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"  # noqa: S608
            )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    log(f"seeded {cells} cells in {cases} cases: {time.perf_counter() - started:.1f} s")
    return {"version": version, "users": users}


def backend_cpu_s() -> tuple[int, float] | None:
    """This connection's PostgreSQL backend and the CPU seconds it used so far (a local server; else None)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return pid, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(*, version, users, requests: int, log) -> dict:
    from django.test import Client

    from accounts.roles import Role

    supervisor = Client()
    supervisor.force_login(users[Role.SUPERVISOR])
    researcher = Client()
    researcher.force_login(users[Role.RESEARCHER])

    cpu_per_request: list[tuple[float, float | None]] = []

    def dashboard() -> float:
        started, python_cpu, database_cpu = time.perf_counter(), time.process_time(), backend_cpu_s()
        response = supervisor.get("/reports/dashboard/")
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"dashboard answered {response.status_code}")
        database_after = backend_cpu_s()
        same_backend = database_cpu and database_after and database_cpu[0] == database_after[0]
        cpu_per_request.append(
            (time.process_time() - python_cpu, database_after[1] - database_cpu[1] if same_backend else None)
        )
        return elapsed

    first = dashboard()
    log(f"dashboard, first request: {first:.2f} s")
    timings = [dashboard() for _ in range(requests)]
    warm_cpu = cpu_per_request[1:]
    database_cpus = [database for _, database in warm_cpu if database is not None]
    log(f"dashboard, warm: {', '.join(f'{t:.3f}' for t in timings)} s")
    tracemalloc.start()
    dashboard()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    log(f"dashboard peak Python allocations: {peak / 2**20:.1f} MB")

    started = time.perf_counter()
    python_cpu, database_cpu = time.process_time(), backend_cpu_s()
    response = researcher.post("/reports/exports/", {"model_version": "", "start": "", "end": ""})
    if response.status_code != 200 or not response.streaming:
        raise SystemExit(f"export answered {response.status_code}")
    lines = 0
    size = 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
        size += len(chunk)
    elapsed = time.perf_counter() - started
    python_cpu = time.process_time() - python_cpu
    database_after = backend_cpu_s()
    if database_cpu is None or database_after is None or database_after[0] != database_cpu[0]:
        database_cpu = None  # not a local server, or the export ran on another connection
    else:
        database_cpu = database_after[1] - database_cpu[1]
    rows = lines - 1
    log(f"export: {rows} rows, {size / 2**20:.0f} MB in {elapsed:.1f} s; CPU {python_cpu:.1f} s, db {database_cpu}")
    return {
        "dashboard_first_s": round(first, 3),
        "dashboard_s": round(statistics.median(timings), 3),
        "dashboard_runs_s": [round(t, 3) for t in timings],
        "dashboard_peak_mb": round(peak / 2**20, 1),
        # CPU of a warm request (median) in this process and in its PostgreSQL backend
        "dashboard_cpu_s": round(statistics.median(cpu for cpu, _ in warm_cpu), 3),
        "dashboard_database_cpu_s": round(statistics.median(database_cpus), 3) if database_cpus else None,
        "export_rows": rows,
        "export_s": round(elapsed, 2),
        "export_rows_per_s": round(rows / elapsed),
        # CPU the export used, in this process (web side, test client included) and in its PostgreSQL backend:
        # on a machine shared with other work, what the export itself costs.
        "export_python_cpu_s": round(python_cpu, 2),
        "export_database_cpu_s": None if database_cpu is None else round(database_cpu, 2),
    }


def main() -> None:
    args = parse_args()

    def log(message: str) -> None:
        print(message, file=sys.stderr if args.json else sys.stdout, flush=True)

    os.environ["DATABASE_URL"] = f"{args.postgres}/{args.database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.test")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost")
    sys.path.insert(0, str(PROJECT_DIR))
    os.chdir(PROJECT_DIR)
    if not args.reuse:
        recreate_database(server=args.postgres, name=args.database)
    import django

    django.setup()
    from django.core.management import call_command

    from accounts.models import User
    from inference.models import ModelVersion

    if args.reuse:
        from django.db import connection

        with connection.cursor() as cursor:  # the first request then aggregates every day again, as after seeding
            if "reports_dailymetrics" in connection.introspection.table_names(cursor):
                cursor.execute("DELETE FROM reports_dailymetrics")
        version = ModelVersion.objects.get(name="bench-model")
        users = {role: User.objects.get(email=f"bench-{role}@bench.hematovision.local") for role in BENCH_ROLES}
        seeded = {"version": version, "users": users}
    else:
        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        log(f"migrated: {time.perf_counter() - started:.1f} s")
        seeded = seed(cells=args.cells, log=log)
    from cases.models import CellImage

    cells = CellImage.objects.count()
    figures = measure(version=seeded["version"], users=seeded["users"], requests=args.requests, log=log)
    result = {"cells": cells, **figures}
    result["database"] = args.database
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
