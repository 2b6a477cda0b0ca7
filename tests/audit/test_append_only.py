"""Audit events are append-only in the database itself, not only through the model's save()/delete()."""

import pytest
from django.db import IntegrityError, transaction

from audit.models import AuditEvent
from audit.services import record


@pytest.fixture
def event(db, technician):
    return record(action=AuditEvent.Action.SIGN_IN, actor=technician, details={"via": "password"})


def refused(callable_):
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        callable_()


def test_queryset_update_of_an_audit_event_is_refused(event):
    refused(lambda: AuditEvent.objects.filter(pk=event.pk).update(action=AuditEvent.Action.SIGN_OUT))

    event.refresh_from_db()
    assert event.action == AuditEvent.Action.SIGN_IN


def test_queryset_update_of_the_details_is_refused(event):
    refused(lambda: AuditEvent.objects.filter(pk=event.pk).update(details={"via": "nothing"}))


def test_queryset_delete_of_audit_events_is_refused(event):
    refused(lambda: AuditEvent.objects.all().delete())

    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_a_sealed_event_cannot_be_sealed_again(event):
    AuditEvent.objects.filter(pk=event.pk).update(chain_seq=1, chain_hash="a" * 64)

    refused(lambda: AuditEvent.objects.filter(pk=event.pk).update(chain_hash="b" * 64))


def test_sealing_cannot_carry_a_change_of_the_event(event):
    refused(lambda: AuditEvent.objects.filter(pk=event.pk).update(chain_seq=1, chain_hash="a" * 64, actor_email="x@y"))


def test_a_user_with_audit_events_cannot_be_deleted(event, technician):
    """Users are deactivated, never deleted: their events keep pointing at them."""
    from django.db.models import ProtectedError

    with pytest.raises((ProtectedError, IntegrityError)), transaction.atomic():
        technician.delete()
