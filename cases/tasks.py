"""Celery tasks: classify uploaded images, and send again the ones that waited too long.

The tasks only deliver and retry: the workflow is cases.classification. Tasks are acknowledged late
(settings), so a task of a killed worker is delivered again; the unique (image, model version) constraint
and the status checks make running a task twice harmless.

Imports point one way: services -> tasks -> classification (no module here imports cases.services).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from celery import shared_task
from django.utils.translation import gettext_noop
from kombu.exceptions import KombuError

from inference.predictor import ModelUnavailable

from . import classification, selectors

logger = logging.getLogger(__name__)

MAX_RETRIES = 8
BACKOFF_BASE_SECONDS = 5
BACKOFF_MAX_SECONDS = 600
TRANSIENT_DATABASE_ERRORS = classification.TRANSIENT_DATABASE_ERRORS
# How an upload's images are cut into classification tasks. Up to IMAGES_PER_TASK images are one task
# (the case page's script already sends its first files in small requests: 2, 4, 6, 8, then 10 a request).
# A larger upload (the API, a script) starts with FIRST_TASK_IMAGES, then twice as many each time up to
# IMAGES_PER_TASK: 100 images are 4, 8, 16, 16, 16, 16, 16, 8. Measured on the 2-core machine (PBC crops,
# PostgreSQL, warm process), a task cost about 25 ms of CPU of its own (claiming the images, the model and
# case look-ups, one batched runtime call, the status refresh and the push event; about a third of that
# since the hand-built statements of cases/rows.py) plus about 21 ms per image:
# the small first task shows the first labels after ~0.1 s of CPU instead of the ~0.36 s of a full
# one, for ~6 ms more on each of its 4 images. Beyond 16 a task would save under 1 ms per image, while a
# worker of 2 pool processes would wait longer on the last, largest task with its other process idle; and
# several tasks let several workers share a large upload.
FIRST_TASK_IMAGES = 4
IMAGES_PER_TASK = 16
# A publish that hits a broken broker connection reconnects and tries once more, at once, then gives up (the images
# stay queued for requeue_stale_images). A pooled connection that died since its last use (a RabbitMQ restart, an
# idle connection dropped by the network) failed the next publish on it without this: redis-py reconnects on its
# own, kombu's AMQP transport does not. A broker that is down still fails in one connect timeout: the reconnection
# is the attempt that fails (tests/ops/test_worker_faults_amqp.py).
PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0, "interval_max": 0}


def backoff_seconds(retries: int) -> float:
    """Exponential backoff with jitter, so workers recovering together do not retry in lockstep."""
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2**retries)
    return delay * random.uniform(0.5, 1.0)


@shared_task(bind=True, max_retries=MAX_RETRIES, acks_late=True, name="cases.tasks.classify_images")
def classify_images(self, image_ids: list[int]) -> dict[str, int]:
    # In-process (eager) runs cannot wait between attempts: they leave the images queued for a later retry.
    can_retry = not self.request.is_eager and self.request.retries < self.max_retries
    try:
        return classification.classify(image_ids=image_ids)
    except ModelUnavailable as exc:
        if can_retry:
            logger.warning(
                "classification of %s waits for a model (attempt %d): %s", image_ids, self.request.retries, exc
            )
            raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
        classification.mark_waiting(
            image_ids=image_ids,
            message=classification.site_message(
                gettext_noop("Waiting for a usable classification model: %(error)s"), error=exc
            ),
        )
        classification.refresh_case_statuses(case_ids=classification.case_ids_of(image_ids))
        logger.error("classification of %s left queued: %s", image_ids, exc)
        return {"classified": 0, "failed": 0, "waiting": len(image_ids)}
    except TRANSIENT_DATABASE_ERRORS as exc:
        if can_retry:
            logger.warning("database error while classifying %s, retrying: %s", image_ids, exc)
            raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
        # The images stay queued/classifying; requeue_stale_images sends them again.
        logger.exception("database error while classifying %s; left for requeue_stale_images", image_ids)
        return {"classified": 0, "failed": 0, "waiting": len(image_ids)}


def task_chunks(image_ids: Sequence[int]) -> list[list[int]]:
    """The images of one upload cut into tasks, in order: one task up to IMAGES_PER_TASK, else small first."""
    if len(image_ids) <= IMAGES_PER_TASK:
        return [list(image_ids)] if image_ids else []
    chunks, start, size = [], 0, FIRST_TASK_IMAGES
    while start < len(image_ids):
        chunks.append(list(image_ids[start : start + size]))
        start += size
        size = min(size * 2, IMAGES_PER_TASK)
    return chunks


def enqueue_classification(*, image_ids: Sequence[int]) -> int:
    """Send classification tasks now; returns how many were sent.

    A broker that is down must not lose or fail the upload: the images stay queued and
    `requeue_stale_images` sends them again later. In the embedded default the task runs right here,
    and its failure is recorded on the images, never raised into the request.
    """
    sent = 0
    for chunk in task_chunks(list(image_ids)):
        try:
            classify_images.apply_async(args=[chunk], retry=True, retry_policy=PUBLISH_RETRY_POLICY)
        except KombuError as exc:
            logger.error("broker unavailable, images %s stay queued until requeue_stale_images: %s", chunk, exc)
            continue
        except Exception:
            logger.exception("could not enqueue images %s; they stay queued until requeue_stale_images", chunk)
            continue
        sent += 1
    return sent


@shared_task(acks_late=True, name="cases.tasks.requeue_stale_images")
def requeue_stale_images() -> int:
    """Periodic (beat): send again images queued or classifying for longer than CLASSIFICATION_STALE_SECONDS,
    e.g. because the broker was down at upload or a worker died. Returns how many were found."""
    image_ids = selectors.stale_image_ids()
    if image_ids:
        classification.requeue_stale(image_ids=image_ids)
        sent = enqueue_classification(image_ids=image_ids)
        logger.info("requeued %d stale image(s) in %d task(s)", len(image_ids), sent)
    return len(image_ids)
