"""Database connections of Celery workers: kept between tasks, like a web process keeps them between requests.

Celery's Django fixup closes every database connection before and after each task unless
CELERY_DB_REUSE_MAX is set (settings/base.py sets it out of reach). A one-image task then paid a new
PostgreSQL connection (its authentication, and the server's new backend process) on top of a few
milliseconds of work. Instead, these handlers apply Django's own rule at each task boundary, as the request
cycle does (django.db.close_old_connections): a connection older than CONN_MAX_AGE, left with an error, or
not in autocommit is closed, and the next query opens a fresh one (after a health check,
CONN_HEALTH_CHECKS). Eager tasks run inside a request, whose own cycle already does this.

Loaded by every worker through CELERY_IMPORTS.
"""

from __future__ import annotations

from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections


def _is_eager(task) -> bool:
    return bool(getattr(getattr(task, "request", None), "is_eager", False))


@task_prerun.connect(dispatch_uid="hematovision-task-prerun-connections", weak=False)
def close_stale_connections_before_task(sender=None, task=None, **kwargs) -> None:
    if not _is_eager(task or sender):
        close_old_connections()


@task_postrun.connect(dispatch_uid="hematovision-task-postrun-connections", weak=False)
def close_stale_connections_after_task(sender=None, task=None, **kwargs) -> None:
    if not _is_eager(task or sender):
        close_old_connections()
