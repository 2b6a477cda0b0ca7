"""Warm a serving process before its first upload: load the active model and run one tiny analysis.

A fresh process pays for the model's load, the LiteRT interpreter's and XNNPACK's set-up, and the first
call of each library the workflow uses (Pillow's decoders, NumPy and SciPy's first calls) on its first
image: about three seconds on the production path, which the first label of a case waited for. The Celery
worker's pool processes (hematovision/celery.py) and the embedded default's web process, which classifies
in-process (hematovision/wsgi.py), call `warm_up` when they start.

Warming is an optimisation: it never raises. With no usable model (none active yet, a file missing, the
tables not migrated yet) it logs why and the process starts as it would have without it.
HEMATOVISION_WARM_UP=0 turns it off (to measure a cold start, or to start a process quickly).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

# The size of a typical single-cell crop (PBC's are 360 x 363): the crop path of `locate` runs as for
# a real upload.
WARM_UP_IMAGE_SIZE = 360


def synthetic_cell(size: int = WARM_UP_IMAGE_SIZE) -> Image.Image:
    """A stained-smear look-alike: pale background, a pink cytoplasm around a purple nucleus (what `locate`
    looks for), so the analysis goes all the way to the classifier."""
    image = Image.new("RGB", (size, size), (236, 224, 228))
    draw = ImageDraw.Draw(image)
    centre, radius = size / 2, size * 0.2
    draw.ellipse((centre - radius, centre - radius, centre + radius, centre + radius), fill=(205, 150, 185))
    nucleus = radius * 0.6
    draw.ellipse((centre - nucleus, centre - nucleus, centre + nucleus, centre + nucleus), fill=(105, 45, 140))
    return image


def warm_up(*, process: str, close_connection: bool = False) -> bool:
    """Load the active model and analyse one synthetic cell with it; True when the process is warm.

    A pool process keeps the database connection the model look-up opened, for its first task; a thread
    that ends after warming closes it (`close_connection`)."""
    if os.environ.get("HEMATOVISION_WARM_UP", "1") == "0":
        logger.info("%s: warm-up turned off (HEMATOVISION_WARM_UP=0)", process)
        return False
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        from .analysis import analyse_images
        from .predictor import get_predictor

        predictor = get_predictor()
        analyse_images([synthetic_cell()], predictor=predictor)
    except Exception as exc:  # noqa: BLE001 - never keep a process from starting; the first upload retries
        logger.warning("%s: not warmed up (%s: %s); the first upload loads the model", process, type(exc).__name__, exc)
        return False
    finally:
        if close_connection:
            _close_database_connection()
    # The CPU seconds say what a benchmark that starts measuring before the pool processes are warm counts
    # as classification work (bench/e2e.py, docs/benchmarks.md "hwork").
    logger.info(
        "%s: warmed up with model version %s in %.2f s (%.2f s CPU, model on %d thread(s))",
        process,
        predictor.version.name,
        time.perf_counter() - started,
        time.process_time() - cpu_started,
        getattr(getattr(predictor, "runtime", None), "num_threads", 0),
    )
    return True


def warm_up_in_background(*, process: str) -> threading.Thread:
    """`warm_up` in a daemon thread, so that a web process starts serving pages at once."""
    thread = threading.Thread(
        target=warm_up, kwargs={"process": process, "close_connection": True}, name="hv-warm-up", daemon=True
    )
    thread.start()
    return thread


def _close_database_connection() -> None:
    try:
        from django.db import connection

        if not connection.in_atomic_block:
            connection.close()
    except Exception:  # noqa: BLE001
        logger.debug("closing the warm-up's database connection failed", exc_info=True)
