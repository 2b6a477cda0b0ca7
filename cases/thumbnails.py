"""Stored thumbnails for images uploaded before uploads stored one (`manage.py backfill_thumbnails`).

Since uploads store an encrypted thumbnail (`CellImage.thumbnail_key`), galleries never decode a full image;
older rows have none and are drawn from the full image on every request (cases.selectors.image_rendition).
This makes theirs once, the way an upload does (cases.classification.thumbnail_jpeg of the upright RGB picture).

- Idempotent and resumable: only rows still without a thumbnail are read, so a run stopped anywhere is simply
  run again; `after_id` skips rows already tried (such as unreadable ones) when resuming by hand.
- A row is written only while it still has no thumbnail (a conditional UPDATE); if something else stored one
  meanwhile, the file just written is removed again, so no file is left without a row.
- An image that cannot be read (missing or corrupt file, undecodable picture) is counted, logged and left as it
  is (its page still tries the full image); the run goes on. A database error stops the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.db import DatabaseError

from . import storage
from .classification import thumbnail_jpeg
from .models import CellImage
from .selectors import open_cell_image

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 100


@dataclass
class BackfillProgress:
    made: int = 0
    unreadable: int = 0
    already_made: int = 0  # another process stored one between our read and our write
    last_id: int = 0  # the highest id tried: resume with after_id=last_id to skip what this run tried

    @property
    def tried(self) -> int:
        return self.made + self.unreadable + self.already_made


def images_without_thumbnail(*, after_id: int = 0):
    return CellImage.objects.filter(thumbnail_key="", pk__gt=after_id).order_by("pk")


def count_missing() -> int:
    return images_without_thumbnail().count()


def store_thumbnail(*, image_id: int, storage_key: str) -> bool:
    """Make and store the thumbnail of one image; True if this call stored it, False if the row got one
    meanwhile. Raises what reading the image raises."""
    image = CellImage(pk=image_id, storage_key=storage_key)
    thumbnail_key = storage.save(thumbnail_jpeg(open_cell_image(image=image)))
    try:
        stored = CellImage.objects.filter(pk=image_id, thumbnail_key="").update(thumbnail_key=thumbnail_key)
    except BaseException:
        storage.delete(thumbnail_key)
        raise
    if not stored:
        storage.delete(thumbnail_key)
    return bool(stored)


def backfill_thumbnails(
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    after_id: int = 0,
    limit: int | None = None,
    on_batch: Callable[[BackfillProgress], None] | None = None,
) -> BackfillProgress:
    """Store a thumbnail for every image without one (ids above `after_id`, at most `limit`), `batch_size`
    rows read at a time; `on_batch` is told the running counts after each batch."""
    progress = BackfillProgress(last_id=after_id)
    while limit is None or progress.tried < limit:
        size = batch_size if limit is None else min(batch_size, limit - progress.tried)
        batch = list(images_without_thumbnail(after_id=progress.last_id).values_list("pk", "storage_key")[:size])
        if not batch:
            break
        for image_id, storage_key in batch:
            progress.last_id = image_id
            try:
                stored = store_thumbnail(image_id=image_id, storage_key=storage_key)
            except DatabaseError:
                raise
            except Exception as exc:  # noqa: BLE001 - one unreadable image must not stop the run
                progress.unreadable += 1
                logger.warning("image %s: no thumbnail made, the image cannot be read: %s", image_id, exc)
                continue
            if stored:
                progress.made += 1
            else:
                progress.already_made += 1
        if on_batch is not None:
            on_batch(progress)
    return progress
