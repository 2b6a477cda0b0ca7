"""Database connections of Celery workers: kept between tasks, like a web process keeps them between requests.

Celery's Django fixup closes every database connection before and after each task unless
CELERY_DB_REUSE_MAX is set (settings/base.py sets it out of reach). A one-image task then paid a new
PostgreSQL connection (its authentication, and the server's new backend process) on top of a few
milliseconds of work. Instead, these handlers apply Django's own rule at each task boundary, as the request
cycle does (django.db.close_old_connections): a connection older than CONN_MAX_AGE, left with an error, or
not in autocommit is closed, and the next query opens a fresh one. Eager tasks run inside a request, whose
own cycle already does this.

Django then checks a kept connection with a `SELECT 1` before the task's first query (CONN_HEALTH_CHECKS): a
round trip per task, one of the dozen a one-image task makes. A PostgreSQL connection that is idle and whose
socket has nothing to read is taken as healthy without it: a backend that goes away (pg_terminate_backend, a
server restart or shutdown, idle_session_timeout, a proxy closing the connection) sends its reason and closes
the socket, which leaves the socket readable; so does a reset from the server's host. Anything else (data
waiting, a transaction open, another database engine) gets Django's `SELECT 1` as before, which closes a dead
connection so that the task's first query opens a new one. A server that vanished without a word (its host
lost from the network) is not caught by either check sooner than the kernel gives up on the connection.

Loaded by every worker through CELERY_IMPORTS.
"""

from __future__ import annotations

import select

from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections, connections

try:
    from psycopg import DatabaseError
    from psycopg.pq import ConnStatus, TransactionStatus

    _CONNECTION_OK, _TRANSACTION_IDLE = ConnStatus.OK, TransactionStatus.IDLE
except ImportError:  # no psycopg 3: socket_says_intact never says so
    DatabaseError = OSError
    _CONNECTION_OK = _TRANSACTION_IDLE = None
_poll = getattr(select, "poll", None)


def _is_eager(task) -> bool:
    return bool(getattr(getattr(task, "request", None), "is_eager", False))


def socket_says_intact(connection) -> bool:
    """Whether an open PostgreSQL connection (psycopg 3) is idle, sound by libpq's account and has nothing
    waiting on its socket: nothing has happened to it since its last answer."""
    pgconn = getattr(connection.connection, "pgconn", None)
    if pgconn is None or _poll is None:  # psycopg 2, or no poll(): Django's check decides
        return False
    # A connection closed or broken (by psycopg's account) is not OK; one in a transaction is not IDLE.
    if pgconn.status != _CONNECTION_OK or pgconn.transaction_status != _TRANSACTION_IDLE:
        return False
    try:
        poller = _poll()
        poller.register(pgconn.socket, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError, DatabaseError):  # no usable socket
        return False


def skip_health_checks_of_intact_connections() -> None:
    """Mark the kept PostgreSQL connections whose socket says they are intact as checked, so that Django does
    not send its `SELECT 1` before their first query; the others keep Django's check."""
    for connection in connections.all(initialized_only=True):
        if (
            connection.vendor == "postgresql"
            and connection.connection is not None
            and connection.health_check_enabled
            and not connection.health_check_done
            and socket_says_intact(connection)
        ):
            connection.health_check_done = True


@task_prerun.connect(dispatch_uid="hematovision-task-prerun-connections", weak=False)
def close_stale_connections_before_task(sender=None, task=None, **kwargs) -> None:
    if not _is_eager(task or sender):
        close_old_connections()
        skip_health_checks_of_intact_connections()


@task_postrun.connect(dispatch_uid="hematovision-task-postrun-connections", weak=False)
def close_stale_connections_after_task(sender=None, task=None, **kwargs) -> None:
    if not _is_eager(task or sender):
        close_old_connections()
