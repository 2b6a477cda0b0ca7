"""Where the server's CPU goes for 100 cells: cProfile of the upload path and the classification task.

Runs the embedded default's code path in this process (upload service, then the classification task run
in-process as the upload's commit hook, the push event, and the card fragment the page fetches), on a
fresh database, with the bundled model, and prints the functions that took the most CPU.

    .venv/bin/python bench/profile_upload.py                         # SQLite in a temporary folder
    .venv/bin/python bench/profile_upload.py --database-url postgres://postgres@127.0.0.1:5432/hv_profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import sys
import time
from pathlib import Path

from _in_process import setup_django

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = PROJECT_DIR.parent / "shared" / "datasets" / "pbc" / "test"


# (file name ending, function): the steps a cell goes through, before and after the push work.
STAGES = {
    "upload request (view)": ("cases/views.py", "upload_images"),
    "  validation (decode, checks)": ("cases/validation.py", "validate_image"),
    "  encrypt + write to the image store": ("cases/storage.py", "save"),
    "  audit records": ("audit/services.py", "record"),
    "  classification task (in-process)": ("cases/tasks.py", "classify_images"),
    "    claim (status classifying)": ("cases/classification.py", "claim_for_classification"),
    "    read + decrypt + decode the stored upload": ("cases/selectors.py", "open_cell_image"),
    "    predictor.predict (LiteRT + OOD)": ("inference/predictor.py", "predict"),
    "      preprocessing": ("inference/preprocessing.py", "preprocess_batch"),
    "      out-of-distribution score": ("inference/ood.py", "score"),
    "    cell finding (inference.locate)": ("inference/locate.py", "locate_cells"),
    "    storing predictions (before)": ("cases/services.py", "record_prediction"),
    "    storing results (after)": ("cases/classification.py", "store_analyses"),
    "      field crops, previews, thumbnails": ("cases/classification.py", "_write_field_files"),
    "    case status refresh": ("cases/classification.py", "refresh_case_statuses"),
    "grid refresh: whole grid (before)": ("cases/views.py", "case_cells"),
    "grid refresh: changed cards (after)": ("cases/views_live.py", "case_cards"),
    "thumbnail requests": ("cases/views.py", "image_file"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--per-request", type=int, default=10)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--save-stats", type=Path, help="also write the raw cProfile stats here (for pstats/snakeviz)")
    arguments = parser.parse_args()

    setup_django(prefix="hv-profile-", database_url=arguments.database_url)
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.management import call_command
    from django.test import Client
    from django.urls import NoReverseMatch, reverse

    call_command("migrate", verbosity=0)
    from accounts.models import User
    from accounts.roles import Role, set_role
    from cases import services
    from inference.predictor import get_predictor
    from inference.services import ensure_bundled_model

    ensure_bundled_model()
    get_predictor()  # loading the model is a once-per-process cost, not a per-cell one
    user = User.objects.create_user("profile@bench.hematovision.local", "profile-password-1")
    set_role(user, Role.TECHNICIAN)
    case = services.create_case(accession_id=f"PROFILE-{int(time.time())}", created_by=user)
    files = sorted(path for path in arguments.dataset.rglob("*.jpg"))
    chosen = random.Random(7).sample(files, arguments.cells)
    blobs = [(path.name, path.read_bytes()) for path in chosen]
    client = Client()
    client.force_login(user)
    try:
        cards_url = reverse("cases:cards", args=[case.pk])
    except NoReverseMatch:
        cards_url = None

    profile = cProfile.Profile(time.process_time)  # CPU time, not time spent waiting on the database
    started_cpu, started = time.process_time(), time.perf_counter()
    profile.enable()
    for start in range(0, len(blobs), arguments.per_request):
        batch = blobs[start : start + arguments.per_request]
        uploads = [SimpleUploadedFile(name, data, content_type="image/jpeg") for name, data in batch]
        response = client.post(
            reverse("cases:upload", args=[case.pk]), {"files": uploads}, headers={"accept": "application/json"}
        )
        assert response.status_code == 201, response.content[:300]
        ids = ",".join(str(item["id"]) for item in response.json()["accepted"])
        # What the page asks for then: the changed cards (push), or the whole grid (before push).
        if cards_url:
            assert client.get(cards_url, {"ids": ids}).status_code == 200
        else:
            assert client.get(reverse("cases:cells", args=[case.pk])).status_code == 200
        for image_id in ids.split(","):
            assert client.get(reverse("cases:image", args=[int(image_id)]), {"variant": "thumb"}).status_code == 200
    profile.disable()
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started

    classified = case.images.filter(status="classified").count()
    print(
        f"cells {arguments.cells}, classified {classified}, CPU {cpu:.2f} s "
        f"({cpu * 1000 / arguments.cells:.1f} ms per cell), wall {wall:.2f} s, "
        f"database {'PostgreSQL' if arguments.database_url else 'SQLite'}"
    )
    stats = pstats.Stats(profile)
    if arguments.save_stats:
        stats.dump_stats(arguments.save_stats)
    print("\nCPU by stage (cumulative seconds; stages overlap where one calls another):")
    for label, (file_end, function) in STAGES.items():
        seconds = sum(
            row[3] for (path, _, name), row in stats.stats.items() if name == function and path.endswith(file_end)
        )
        if seconds:
            print(f"  {label:<48} {seconds:6.2f} s  {seconds * 1000 / arguments.cells:6.1f} ms per cell")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order).print_stats(arguments.top)
        print(f"\n--- by {order} ---")
        print(out.getvalue().split("\n", 6)[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
