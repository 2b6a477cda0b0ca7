"""The audit trail is a hash chain sealed in batches; `manage.py verify_audit` says where it breaks."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from audit.chain import seal, verify
from audit.db_guards import drop_audit_guards, install_audit_guards
from audit.models import AuditEvent
from audit.services import record


@pytest.fixture
def events(db, technician):
    return [
        record(action=AuditEvent.Action.UPLOAD, actor=technician, details={"file": f"cell-{n}.png", "n": n})
        for n in range(5)
    ]


class guards_dropped:
    """What someone with direct write access to the database could do: remove the triggers, then edit."""

    def __enter__(self):
        drop_audit_guards(connection)

    def __exit__(self, *exc):
        install_audit_guards(connection, AuditEvent)


def verify_output(*args) -> str:
    out = StringIO()
    call_command("verify_audit", *args, stdout=out)
    return out.getvalue()


def test_recording_an_event_is_one_insert_and_chains_nothing(db, technician, django_assert_num_queries):
    with django_assert_num_queries(1):
        event = record(action=AuditEvent.Action.IMAGE_VIEWED, actor=technician, object_type="cases.cellimage")

    event.refresh_from_db()
    assert event.chain_seq is None and event.chain_hash == ""


def test_seal_chains_pending_events_in_order_and_verify_accepts_them(events):
    assert seal() == 5

    sealed = list(AuditEvent.objects.order_by("chain_seq"))
    assert [event.chain_seq for event in sealed] == [1, 2, 3, 4, 5]
    assert [event.pk for event in sealed] == sorted(event.pk for event in events)
    assert len({event.chain_hash for event in sealed}) == 5
    report = verify()
    assert report.ok and report.sealed == 5 and report.unsealed == 0


def test_a_second_batch_continues_the_chain(events, technician):
    seal()
    record(action=AuditEvent.Action.SIGN_OUT, actor=technician)

    assert seal() == 1
    assert AuditEvent.objects.get(action=AuditEvent.Action.SIGN_OUT).chain_seq == 6
    assert verify().ok
    assert seal() == 0


def test_unsealed_events_are_reported_not_a_break(events):
    seal()
    record(action=AuditEvent.Action.SIGN_IN)

    report = verify()
    assert report.ok and report.unsealed == 1
    assert "1 event(s) not sealed yet" in verify_output()


def test_a_changed_event_breaks_the_chain_where_it_was_changed(events):
    seal()
    target = AuditEvent.objects.get(chain_seq=3)
    with guards_dropped():
        AuditEvent.objects.filter(pk=target.pk).update(details={"file": "other.png", "n": 2})

    report = verify()
    assert not report.ok
    assert report.broken_at == 3 and report.event_id == target.pk
    with pytest.raises(CommandError, match=rf"breaks at seq 3 \(event {target.pk}"):
        verify_output()


def test_a_deleted_event_breaks_the_chain(events):
    seal()
    with guards_dropped():
        AuditEvent.objects.filter(chain_seq=2).delete()

    report = verify()
    assert not report.ok and report.broken_at == 2
    assert "missing" in report.reason


def test_a_rewritten_actor_breaks_the_chain(events, make_user):
    seal()
    other = make_user("technician")
    with guards_dropped():
        AuditEvent.objects.filter(chain_seq=5).update(actor=other, actor_email=other.email)

    assert verify().broken_at == 5


def test_verify_audit_can_seal_first(events):
    output = verify_output("--seal")

    assert "sealed 5 event(s)" in output
    assert "chain intact: 5 event(s)" in output


def test_seal_audit_command(events):
    out = StringIO()
    call_command("seal_audit", stdout=out)
    assert "sealed 5 event(s)" in out.getvalue()


def test_the_embedded_default_seals_after_a_response_at_most_once_an_interval(client, technician, settings):
    from audit import chain

    settings.AUDIT_SEAL_INTERVAL_SECONDS = 60
    chain._last_seal = 0.0
    record(action=AuditEvent.Action.SIGN_IN, actor=technician)

    client.get("/healthz")

    assert not AuditEvent.objects.filter(chain_seq__isnull=True).exists()
    record(action=AuditEvent.Action.SIGN_OUT, actor=technician)
    client.get("/healthz")
    assert AuditEvent.objects.filter(chain_seq__isnull=True).count() == 1  # within the interval: left for later


def test_no_sealing_after_responses_when_beat_does_it(client, technician, settings):
    from audit import chain

    settings.AUDIT_SEAL_INTERVAL_SECONDS = 0
    chain._last_seal = 0.0
    record(action=AuditEvent.Action.SIGN_IN, actor=technician)

    client.get("/healthz")

    assert AuditEvent.objects.filter(chain_seq__isnull=True).count() == 1


def test_deleting_the_newest_events_is_caught_against_a_recorded_head(events):
    seal()
    head = verify()
    with guards_dropped():
        AuditEvent.objects.filter(chain_seq=5).delete()

    assert verify().ok  # the rest of the chain still holds: only the recorded head tells
    with pytest.raises(CommandError, match="head seq 5 .* is missing"):
        verify_output("--expect-head", f"{head.head_seq}:{head.head_hash}")


def test_a_recorded_head_that_still_holds_passes(events):
    seal()
    head = verify()
    record(action=AuditEvent.Action.SIGN_OUT)
    seal()

    assert "chain intact: 6 event(s)" in verify_output("--expect-head", f"{head.head_seq}:{head.head_hash}")
