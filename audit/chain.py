"""The audit trail as a hash chain, sealed in batches so that recording an event stays one plain INSERT.

`seal()` takes the events not sealed yet, in id order, and gives each the next sequence number and
    chain_hash = HMAC-SHA256(key, previous chain_hash | seq | the event's fields as stored)
(the first event chains from 64 zeros). It runs as a periodic task (`audit.tasks.seal_audit_trail`, every
minute with Celery beat), at start-up of the embedded default (`manage.py recover`), or by hand
(`manage.py seal_audit`). The database lets an update fill the two chain columns of an unsealed event and
nothing else (audit.db_guards), so an event cannot be changed before it is sealed either.

`verify()` walks the chain in sequence order and reports the first link that does not hold: a changed event
(its hash no longer matches), a deleted one (a sequence number is missing), or a sealed event whose chain
fields were forged. The key (AUDIT_CHAIN_KEY, else derived from SECRET_KEY) is not in the database, so
someone who can write to the database cannot re-seal a changed trail. To notice that the newest events were
removed, keep the head that verify prints (sequence and hash) somewhere else now and then.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction

from .models import AuditEvent

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
SEAL_BATCH = 1000
HKDF_INFO = b"hematovision audit chain v1"


@lru_cache(maxsize=4)
def _key_for(configured: str, secret_key: str) -> bytes:
    if configured:
        return configured.encode()
    if not secret_key:
        raise ImproperlyConfigured("Set AUDIT_CHAIN_KEY (or at least SECRET_KEY) to seal the audit trail.")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO).derive(secret_key.encode())


def chain_key() -> bytes:
    return _key_for(getattr(settings, "AUDIT_CHAIN_KEY", "") or "", settings.SECRET_KEY)


def _payload(event: AuditEvent) -> bytes:
    created_at = event.created_at.astimezone(UTC).isoformat(timespec="microseconds")
    fields = [
        event.pk,
        created_at,
        event.actor_id,
        event.actor_email,
        event.action,
        event.object_type,
        event.object_id,
        event.details,
        event.ip_address,
    ]
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def link_hash(*, previous: str, seq: int, event: AuditEvent) -> str:
    message = previous.encode() + b"|" + str(seq).encode() + b"|" + _payload(event)
    return hmac.new(chain_key(), message, hashlib.sha256).hexdigest()


def _head() -> tuple[int, str]:
    head = (
        AuditEvent.objects.filter(chain_seq__isnull=False)
        .order_by("-chain_seq")
        .values_list("chain_seq", "chain_hash")
        .first()
    )
    return head if head else (0, GENESIS)


def _seal_batch(batch_size: int) -> int:
    with transaction.atomic():
        pending = list(
            AuditEvent.objects.select_for_update().filter(chain_seq__isnull=True).order_by("id")[:batch_size]
        )
        if not pending:
            return 0
        seq, previous = _head()
        for event in pending:
            seq += 1
            event.chain_seq = seq
            event.chain_hash = previous = link_hash(previous=previous, seq=seq, event=event)
        _write_seals(pending)
    return len(pending)


def _write_seals(events: list[AuditEvent]) -> None:
    """One UPDATE per event, sent together (executemany: pipelined on PostgreSQL), the only UPDATE the
    database's guard lets through (audit.db_guards)."""
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET chain_seq = %s, chain_hash = %s WHERE id = %s AND chain_seq IS NULL",  # noqa: S608
            [(event.chain_seq, event.chain_hash, event.pk) for event in events],
        )


def seal(*, batch_size: int = SEAL_BATCH, max_batches: int | None = None) -> int:
    """Chain every event not sealed yet; returns how many were sealed. Safe to run from several places: a
    sealer that loses a race to another (same sequence number) stops and leaves the rest to the next run."""
    total = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        try:
            count = _seal_batch(batch_size)
        except IntegrityError:
            logger.info("audit: another process is sealing; leaving the rest to it")
            break
        total += count
        batches += 1
        if count < batch_size:
            break
    if total:
        logger.info("audit: sealed %d event(s)", total)
    return total


_due_lock = threading.Lock()
_last_seal = 0.0


def seal_if_due(sender=None, **kwargs) -> int:
    """request_finished receiver of the embedded default (no beat there): seal at most every
    AUDIT_SEAL_INTERVAL_SECONDS, after a response has been sent, never in a request's way and never raising."""
    global _last_seal
    interval = getattr(settings, "AUDIT_SEAL_INTERVAL_SECONDS", 0)
    if not interval or time.monotonic() - _last_seal < interval or not _due_lock.acquire(blocking=False):
        return 0
    try:
        _last_seal = time.monotonic()
        return seal()
    except Exception:
        logger.exception("audit: sealing after a request failed; the next run retries")
        return 0
    finally:
        _due_lock.release()


@dataclass(frozen=True)
class ChainReport:
    sealed: int
    unsealed: int
    head_seq: int
    head_hash: str
    broken_at: int | None = None
    event_id: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def verify(*, chunk_size: int = 2000) -> ChainReport:
    """Walk the sealed events in sequence order; the first link that does not hold ends the walk."""
    unsealed = AuditEvent.objects.filter(chain_seq__isnull=True).count()
    previous, expected, count = GENESIS, 1, 0
    events = AuditEvent.objects.filter(chain_seq__isnull=False).order_by("chain_seq")
    for event in events.iterator(chunk_size=chunk_size):
        if event.chain_seq != expected:
            return ChainReport(
                sealed=count,
                unsealed=unsealed,
                head_seq=expected - 1,
                head_hash=previous,
                broken_at=expected,
                event_id=event.pk,
                reason=(
                    f"seq {expected}{'' if event.chain_seq == expected + 1 else f'–{event.chain_seq - 1}'} is missing "
                    f"(deleted); the next sealed event is seq {event.chain_seq}"
                ),
            )
        computed = link_hash(previous=previous, seq=expected, event=event)
        if not hmac.compare_digest(computed, event.chain_hash):
            reason = "the event's content does not match its hash (changed after sealing)"
            if expected == 1:
                reason += ", or AUDIT_CHAIN_KEY/SECRET_KEY is not the key the trail was sealed with"
            return ChainReport(
                sealed=count,
                unsealed=unsealed,
                head_seq=expected - 1,
                head_hash=previous,
                broken_at=expected,
                event_id=event.pk,
                reason=f"{reason} [{event.created_at:%Y-%m-%d %H:%M:%S} {event.action}]",
            )
        previous, expected, count = event.chain_hash, expected + 1, count + 1
    return ChainReport(sealed=count, unsealed=unsealed, head_seq=expected - 1, head_hash=previous)
