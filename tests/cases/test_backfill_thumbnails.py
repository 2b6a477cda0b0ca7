"""`manage.py backfill_thumbnails`: older images get the stored thumbnail uploads now make, once, batch by batch,
and an unreadable image does not stop the run."""

import io
from io import StringIO

import pytest
from django.core.management import call_command
from PIL import Image

from cases import storage, thumbnails
from cases.classification import THUMBNAIL_SIZE
from tests.cases import images
from tests.factories import CellImageFactory


@pytest.fixture(autouse=True)
def private_store(settings, tmp_path):
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"


def old_image(size=(600, 400)):
    """A row as uploads stored it before thumbnails were: the encrypted image, no thumbnail."""
    return CellImageFactory(storage_key=storage.save(images.rgb_png(size=size)), thumbnail_key="")


def unreadable_image():
    return CellImageFactory(storage_key=storage.save(b"not an image at all"), thumbnail_key="")


def test_an_old_image_gets_a_stored_thumbnail_the_size_of_an_uploads(db):
    image = old_image()

    progress = thumbnails.backfill_thumbnails()

    image.refresh_from_db()
    assert progress.made == 1
    with Image.open(io.BytesIO(storage.load(image.thumbnail_key))) as thumbnail:
        assert thumbnail.format == "JPEG"
        assert max(thumbnail.size) == THUMBNAIL_SIZE


def test_an_unreadable_image_is_counted_and_the_run_goes_on(db):
    broken, missing_file, good = unreadable_image(), CellImageFactory(thumbnail_key=""), old_image()

    progress = thumbnails.backfill_thumbnails(batch_size=1)

    assert (progress.made, progress.unreadable) == (1, 2)
    for row in (broken, missing_file, good):
        row.refresh_from_db()
    assert (broken.thumbnail_key, missing_file.thumbnail_key) == ("", "")
    assert good.thumbnail_key


def test_a_second_run_changes_nothing(db):
    image = old_image()
    thumbnails.backfill_thumbnails()
    image.refresh_from_db()
    first_key, files = image.thumbnail_key, set(storage.stored_keys())

    progress = thumbnails.backfill_thumbnails()

    image.refresh_from_db()
    assert progress.tried == 0
    assert image.thumbnail_key == first_key
    assert set(storage.stored_keys()) == files


def test_a_limited_run_stops_and_the_next_one_resumes_where_it_stopped(db):
    first, _, third = old_image(), old_image(), old_image()

    stopped = thumbnails.backfill_thumbnails(batch_size=2, limit=1)
    resumed = thumbnails.backfill_thumbnails(batch_size=2, after_id=stopped.last_id)

    assert (stopped.made, stopped.last_id) == (1, first.pk)
    assert (resumed.made, resumed.last_id) == (2, third.pk)
    assert thumbnails.count_missing() == 0


def test_a_row_that_got_a_thumbnail_meanwhile_keeps_it_and_no_file_is_left_over(db):
    image = old_image()
    kept = storage.save(images.rgb_jpeg())
    type(image).objects.filter(pk=image.pk).update(thumbnail_key=kept)
    files = set(storage.stored_keys())

    stored = thumbnails.store_thumbnail(image_id=image.pk, storage_key=image.storage_key)

    image.refresh_from_db()
    assert stored is False
    assert image.thumbnail_key == kept
    assert set(storage.stored_keys()) == files


def test_the_command_prints_its_counts(db):
    old_image(), unreadable_image()
    out = StringIO()

    call_command("backfill_thumbnails", "--batch-size", "1", stdout=out)

    printed = out.getvalue()
    assert "2 image(s) without a stored thumbnail" in printed
    assert "1 thumbnail(s) made, 1 image(s) unreadable" in printed
    assert "1 image(s) still without a stored thumbnail" in printed


def test_a_dry_run_only_counts(db):
    image = old_image()
    out = StringIO()

    call_command("backfill_thumbnails", "--dry-run", stdout=out)

    image.refresh_from_db()
    assert image.thumbnail_key == ""
    assert "1 image(s) without a stored thumbnail" in out.getvalue()


def test_recover_points_to_the_backfill_while_images_lack_a_thumbnail(db):
    old_image()
    out = StringIO()

    call_command("recover", stdout=out)

    assert "1 older image(s) have no stored thumbnail: run `manage.py backfill_thumbnails`" in out.getvalue()
