"""Celery tasks: classify uploaded cell images, and send again the ones that waited too long.

Tasks are acknowledged late (settings), so a task of a killed worker is delivered again; the unique
(image, model version) constraint and the status checks make running a task twice harmless.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from functools import partial

from celery import shared_task
from django.db import InterfaceError, OperationalError, transaction

from inference.predictor import ModelUnavailable, get_predictor

from . import events, selectors, services
from .models import CellImage
from .storage import StoredImageError

logger = logging.getLogger(__name__)

MAX_RETRIES = 8
BACKOFF_BASE_SECONDS = 5
BACKOFF_MAX_SECONDS = 600
TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError)


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with jitter, so workers recovering together do not retry in lockstep."""
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**retries)
    return delay * random.uniform(0.5, 1.0)


@shared_task(bind=True, max_retries=MAX_RETRIES, acks_late=True, name="cases.tasks.classify_images")
def classify_images(self, image_ids: list[int]) -> dict[str, int]:
    # In-process (eager) runs cannot wait between attempts: they leave the images queued for a later retry.
    can_retry = not self.request.is_eager and self.request.retries < self.max_retries
    try:
        return classify(image_ids=image_ids)
    except ModelUnavailable as exc:
        if can_retry:
            logger.warning(
                "classification of %s waits for a model (attempt %d): %s", image_ids, self.request.retries, exc
            )
            raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
        services.mark_waiting(image_ids=image_ids, message=f"Waiting for a usable classification model: {exc}")
        services.refresh_case_statuses(case_ids=_case_ids(image_ids))
        logger.error("classification of %s left queued: %s", image_ids, exc)
        return {"classified": 0, "failed": 0, "waiting": len(image_ids)}
    except TRANSIENT_DATABASE_ERRORS as exc:
        if can_retry:
            logger.warning("database error while classifying %s, retrying: %s", image_ids, exc)
            raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
        # The images stay queued/classifying; requeue_stale_images sends them again.
        logger.exception("database error while classifying %s; left for requeue_stale_images", image_ids)
        return {"classified": 0, "failed": 0, "waiting": len(image_ids)}


def classify(*, image_ids: Sequence[int]) -> dict[str, int]:
    """Classify the pending images among `image_ids` with the active model and store their predictions.

    Raises ModelUnavailable (before touching any image) and database errors for the task to retry;
    anything wrong with one image is recorded on that image as a failure.
    """
    predictor = get_predictor()
    images = services.claim_for_classification(image_ids=image_ids)
    counts = {"classified": 0, "failed": 0, "waiting": 0}
    if not images:
        return counts
    for start in range(0, len(images), predictor.max_batch):
        batch = images[start : start + predictor.max_batch]
        classified, failed = _classify_batch(predictor, batch)
        counts["classified"] += classified
        counts["failed"] += failed
        _announce(batch)
    services.refresh_case_statuses(case_ids={image.case_id for image in images})
    logger.info("classified images %s with %s: %s", [i.pk for i in images], predictor.version.name, counts)
    return counts


def _announce(images: Sequence[CellImage]) -> None:
    """Push the batch's new states to the pages watching their cases, once committed."""
    by_case: dict[int, list[int]] = {}
    for image in images:
        by_case.setdefault(image.case_id, []).append(image.pk)
    for case_id, ids in by_case.items():
        transaction.on_commit(partial(events.publish_image_updates, case_id=case_id, image_ids=ids), robust=True)


def _classify_batch(predictor, images: Sequence[CellImage]) -> tuple[int, int]:
    decoded: list[tuple[CellImage, object]] = []
    failed = 0
    for image in images:
        try:
            decoded.append((image, selectors.open_cell_image(image=image)))
        except (StoredImageError, OSError, ValueError) as exc:
            logger.error("image %s cannot be read for classification: %s", image.pk, exc)
            services.mark_failed(image_ids=[image.pk], message=f"The stored image cannot be read: {exc}")
            failed += 1
    if not decoded:
        return 0, failed
    try:
        results = predictor.predict([picture for _, picture in decoded])
    except (ModelUnavailable, *TRANSIENT_DATABASE_ERRORS):
        raise
    except Exception:
        logger.exception("batch prediction failed for images %s; trying them one by one", [i.pk for i, _ in decoded])
        classified, failed_one_by_one = _classify_one_by_one(predictor, decoded)
        return classified, failed + failed_one_by_one
    for (image, _), result in zip(decoded, results, strict=True):
        services.record_prediction(image=image, model_version=predictor.version, result=result)
    return len(decoded), failed


def _classify_one_by_one(predictor, decoded) -> tuple[int, int]:
    classified = failed = 0
    for image, picture in decoded:
        try:
            (result,) = predictor.predict([picture])
        except (ModelUnavailable, *TRANSIENT_DATABASE_ERRORS):
            raise
        except Exception as exc:
            logger.exception("prediction failed for image %s", image.pk)
            services.mark_failed(image_ids=[image.pk], message=f"Classification failed: {exc}")
            failed += 1
            continue
        services.record_prediction(image=image, model_version=predictor.version, result=result)
        classified += 1
    return classified, failed


def _case_ids(image_ids: Sequence[int]) -> set[int]:
    return set(CellImage.objects.filter(pk__in=list(image_ids)).values_list("case_id", flat=True))


@shared_task(acks_late=True, name="cases.tasks.requeue_stale_images")
def requeue_stale_images() -> int:
    """Periodic (beat): send again images queued or classifying for longer than CLASSIFICATION_STALE_SECONDS,
    e.g. because the broker was down at upload or a worker died. Returns how many were found."""
    image_ids = selectors.stale_image_ids()
    if image_ids:
        sent = services.requeue_stale(image_ids=image_ids)
        logger.info("requeued %d stale image(s) in %d task(s)", len(image_ids), sent)
    return len(image_ids)
