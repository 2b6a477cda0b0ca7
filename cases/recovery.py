"""Recovery after a crash (`manage.py recover`, run by `make run` before the server starts).

- Images a dead process left queued or classifying are sent again. In the embedded default nothing else is
  running at start-up, so every pending image is interrupted; with a broker, workers may be busy with recent
  ones, so only those past CLASSIFICATION_STALE_SECONDS are (as the periodic task does).
- Other apps' interrupted work (adaptation jobs whose worker died) through their AppConfig's
  `recover_after_crash()`.
- Encrypted files an interrupted upload or classification left in the private store without a row are
  removed: only names the store itself generates (`xx/<32 hex>` and their `.part` temporaries), only when
  no row of any `cases` model holds the key (image, thumbnail, preview, ...) and only when older than a grace
  period, so an upload still being registered is never touched.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import models

from . import selectors
from .models import CellImage

logger = logging.getLogger(__name__)

ORPHAN_FILE = re.compile(r"(?P<key>[0-9a-f]{2}/[0-9a-f]{32})(\.part)?")
DEFAULT_GRACE_SECONDS = 3600


def interrupted_image_ids(*, all_pending: bool) -> list[int]:
    if not all_pending:
        return selectors.stale_image_ids()
    return list(
        CellImage.objects.filter(status__in=selectors.PENDING_STATUSES).order_by("pk").values_list("pk", flat=True)
    )


def requeue_interrupted(*, all_pending: bool) -> int:
    """Send interrupted images again; returns how many. Eager (embedded): they are classified right here."""
    from . import classification, tasks

    image_ids = interrupted_image_ids(all_pending=all_pending)
    if image_ids:
        classification.requeue_stale(image_ids=image_ids)
        tasks.enqueue_classification(image_ids=image_ids)
        logger.info("recovery: %d interrupted image(s) sent for classification", len(image_ids))
    return len(image_ids)


def _storage_key_fields() -> list[tuple[type[models.Model], str]]:
    """Every text column of the cases app that holds a private-store key (its name ends in `_key`)."""
    return [
        (model, field.name)
        for model in apps.get_app_config("cases").get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, models.CharField) and field.name.endswith("_key")
    ]


def referenced_storage_keys() -> set[str]:
    keys: set[str] = set()
    for model, name in _storage_key_fields():
        keys.update(key for key in model.objects.exclude(**{name: ""}).values_list(name, flat=True) if key)
    return keys


def remove_orphan_files(*, grace_seconds: float = DEFAULT_GRACE_SECONDS) -> list[str]:
    """Delete store files older than `grace_seconds` that no row refers to; returns their relative paths."""
    root = Path(settings.PRIVATE_MEDIA_ROOT)
    if not root.is_dir():
        return []
    cutoff = time.time() - grace_seconds
    candidates: list[tuple[str, str, Path]] = []
    for path in root.glob("*/*"):
        relative = path.relative_to(root).as_posix()
        match = ORPHAN_FILE.fullmatch(relative)
        if match and path.is_file() and path.stat().st_mtime < cutoff:
            candidates.append((relative, match["key"], path))
    if not candidates:
        return []
    referenced = referenced_storage_keys()  # read after listing: a file registered meanwhile is kept
    removed = []
    for relative, key, path in candidates:
        if key in referenced and not relative.endswith(".part"):
            continue
        path.unlink(missing_ok=True)
        removed.append(relative)
        logger.warning("recovery: removed orphan file %s from the private store", relative)
    return removed


def recover(*, all_pending: bool | None = None, grace_seconds: float | None = None) -> dict[str, int]:
    if all_pending is None:
        all_pending = bool(settings.CELERY_TASK_ALWAYS_EAGER)
    if grace_seconds is None:
        grace_seconds = getattr(settings, "ORPHAN_FILE_GRACE_SECONDS", DEFAULT_GRACE_SECONDS)
    removed = remove_orphan_files(grace_seconds=grace_seconds)
    requeued = requeue_interrupted(all_pending=all_pending)
    return {"requeued": requeued, "orphans_removed": len(removed), "others": recover_other_apps()}


def recover_other_apps() -> dict[str, int]:
    """Each other app recovers its own work through a `recover_after_crash()` method on its AppConfig
    (e.g. inference ends adaptation jobs whose worker died), so this command needs no import of them.
    Returns what each reported: description -> count."""
    reported: dict[str, int] = {}
    for config in apps.get_app_configs():
        hook = getattr(config, "recover_after_crash", None)
        if callable(hook):
            reported.update(hook() or {})
    return reported
