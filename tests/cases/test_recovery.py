"""Start-up recovery of the embedded default after a crash: interrupted classifications are sent again, and
encrypted files an interrupted upload left without a row are removed (only old ones, never a referenced one)."""

import os
import time
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from cases import storage
from cases.models import Case, CellImage
from cases.recovery import remove_orphan_files
from tests.cases.images import cell_png
from tests.factories import CaseFactory, CellImageFactory

HOUR = 3600


def age(storage_key_or_path, seconds: float) -> Path:
    path = Path(storage_key_or_path)
    if not path.is_absolute():
        path = Path(settings.PRIVATE_MEDIA_ROOT) / storage_key_or_path
    old = time.time() - seconds
    os.utime(path, (old, old))
    return path


def test_recover_sends_again_images_a_crash_left_classifying(tiny_model, technician):
    case = CaseFactory(created_by=technician, status=Case.Status.CLASSIFYING)
    image = CellImageFactory(
        case=case, storage_key=storage.save(cell_png(0)), status=CellImage.Status.CLASSIFYING, attempts=1
    )

    out = StringIO()
    call_command("recover", stdout=out)

    image.refresh_from_db()
    assert image.status == CellImage.Status.CLASSIFIED
    assert "1 interrupted image(s) sent for classification" in out.getvalue()


def test_recover_leaves_recent_work_to_the_workers_when_a_broker_is_configured(db, technician, settings, monkeypatch):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    sent = []
    monkeypatch.setattr("cases.tasks.enqueue_classification", lambda *, image_ids: sent.append(list(image_ids)))
    image = CellImageFactory(status=CellImage.Status.CLASSIFYING)

    call_command("recover", stdout=StringIO())

    assert sent == []
    image.refresh_from_db()
    assert image.status == CellImage.Status.CLASSIFYING


def test_old_files_without_a_row_are_removed_and_the_rest_kept(db):
    referenced = storage.save(b"kept: a cell's image")
    CellImageFactory(storage_key=referenced)
    thumbnail = storage.save(b"kept: a cell's thumbnail")
    CellImageFactory(thumbnail_key=thumbnail)
    orphan = storage.save(b"an interrupted upload's file")
    recent_orphan = storage.save(b"an upload still being registered")
    for key in (referenced, thumbnail, orphan):
        age(key, 2 * HOUR)
    partial = Path(settings.PRIVATE_MEDIA_ROOT) / "ab" / ("c" * 32 + ".part")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"half-written")
    age(partial, 2 * HOUR)
    stranger = Path(settings.PRIVATE_MEDIA_ROOT) / "README.txt"
    stranger.write_text("not ours")
    age(stranger, 2 * HOUR)

    removed = remove_orphan_files(grace_seconds=HOUR)

    assert sorted(removed) == sorted([orphan, "ab/" + "c" * 32 + ".part"])
    root = Path(settings.PRIVATE_MEDIA_ROOT)
    assert (root / referenced).exists() and (root / thumbnail).exists() and (root / recent_orphan).exists()
    assert not (root / orphan).exists() and not partial.exists()
    assert stranger.exists()


def test_recover_reports_the_orphans_it_removed(db):
    orphan = storage.save(b"an interrupted upload's file")
    age(orphan, 2 * HOUR)

    out = StringIO()
    call_command("recover", stdout=out)

    assert "1 orphan file(s) removed" in out.getvalue()
    assert not (Path(settings.PRIVATE_MEDIA_ROOT) / orphan).exists()


@pytest.fixture(autouse=True)
def empty_store(settings, tmp_path):
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"
