"""audit.services.record_many: one event per object, in one INSERT, as `record` would have written them."""

from audit.models import AuditEvent
from audit.services import record, record_many
from tests.factories import CaseFactory


def test_record_many_writes_what_record_writes_for_each_object(technician, django_assert_num_queries):
    cases = [CaseFactory(), CaseFactory()]

    with django_assert_num_queries(1):
        events = record_many(
            action=AuditEvent.Action.EXPORT, actor=technician, events=[(case, {"n": n}) for n, case in enumerate(cases)]
        )
    single = record(action=AuditEvent.Action.EXPORT, actor=technician, obj=cases[0], details={"n": 0})

    assert all(event.pk for event in events)
    stored = AuditEvent.objects.get(pk=events[0].pk)
    for field in ("action", "actor_id", "actor_email", "object_type", "object_id", "details", "ip_address"):
        assert getattr(stored, field) == getattr(single, field)
    assert [AuditEvent.objects.get(pk=event.pk).object_id for event in events] == [str(case.pk) for case in cases]


def test_record_many_of_nothing_writes_nothing(technician, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert record_many(action=AuditEvent.Action.EXPORT, actor=technician, events=[]) == []


def test_record_many_stores_what_bulk_create_stores(technician):
    """The INSERT built once per process writes each column as the ORM's bulk_create does."""
    from audit.services import _event

    case = CaseFactory()
    pairs = [(case, {"file": "a.png", "n": [1, 2]}), (case, None)]
    events = record_many(action=AuditEvent.Action.UPLOAD, actor=technician, events=pairs)
    expected = AuditEvent.objects.bulk_create(
        [_event(AuditEvent.Action.UPLOAD, technician, None, obj, "", "", details) for obj, details in pairs]
    )

    fields = [field.attname for field in AuditEvent._meta.concrete_fields if field.name not in ("id", "created_at")]
    stored = [AuditEvent.objects.get(pk=event.pk) for event in events]
    for written, reference in zip(stored, (AuditEvent.objects.get(pk=event.pk) for event in expected), strict=True):
        assert {name: getattr(written, name) for name in fields} == {name: getattr(reference, name) for name in fields}
        assert written.created_at is not None
    assert [event.pk for event in events] == [event.pk for event in stored]
    assert [event.created_at for event in events] == [event.created_at for event in stored]
