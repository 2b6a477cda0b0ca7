"""`manage.py reencrypt_images` rewrites every stored file under the newest key, so an old key can be retired."""

import base64
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from cases import storage
from cases.storage import StoredImageCorrupt

OLD = base64.b64encode(b"o" * 32).decode()
NEW = base64.b64encode(b"n" * 32).decode()


@pytest.fixture
def store(settings, tmp_path):
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"
    settings.IMAGE_ENCRYPTION_KEYS = [OLD]
    return settings


def run(*args) -> str:
    out = StringIO()
    call_command("reencrypt_images", *args, stdout=out)
    return out.getvalue()


def test_old_files_are_readable_with_the_new_key_alone_after_reencryption(store):
    keys = [storage.save(f"cell {n}".encode()) for n in range(3)]
    store.IMAGE_ENCRYPTION_KEYS = [NEW, OLD]
    newer = storage.save(b"uploaded after the rotation")

    output = run()

    assert "3 file(s) re-encrypted" in output and "1 already under the newest key" in output
    store.IMAGE_ENCRYPTION_KEYS = [NEW]
    assert [storage.load(key) for key in keys] == [b"cell 0", b"cell 1", b"cell 2"]
    assert storage.load(newer) == b"uploaded after the rotation"


def test_without_reencryption_the_old_key_cannot_be_retired(store):
    key = storage.save(b"cell")
    store.IMAGE_ENCRYPTION_KEYS = [NEW]

    with pytest.raises(StoredImageCorrupt, match="not among IMAGE_ENCRYPTION_KEYS"):
        storage.load(key)


def test_dry_run_counts_files_per_key_and_changes_nothing(store):
    key = storage.save(b"cell")
    store.IMAGE_ENCRYPTION_KEYS = [NEW, OLD]
    before = (Path(store.PRIVATE_MEDIA_ROOT) / key).read_bytes()

    output = run("--dry-run")

    assert "1 file(s) to re-encrypt" in output
    assert (Path(store.PRIVATE_MEDIA_ROOT) / key).read_bytes() == before


def test_a_damaged_file_is_reported_and_the_others_are_still_reencrypted(store):
    good = storage.save(b"good")
    bad = storage.save(b"bad")
    path = Path(store.PRIVATE_MEDIA_ROOT) / bad
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    store.IMAGE_ENCRYPTION_KEYS = [NEW, OLD]

    with pytest.raises(CommandError, match=rf"(?s)1 file\(s\) could not be re-encrypted.*{bad}"):
        run()

    store.IMAGE_ENCRYPTION_KEYS = [NEW]
    assert storage.load(good) == b"good"
