"""Deactivating a user asks first: a page that says what it does, then a confirmed POST."""

from django.urls import reverse

from audit.models import AuditEvent


def test_deactivate_asks_first_and_acts_only_when_confirmed(client, supervisor, technician):
    client.force_login(supervisor)
    url = reverse("accounts:deactivate", args=[technician.pk])
    people = client.get(reverse("accounts:people")).content.decode()
    assert f'href="{url}" data-testid="deactivate-user"' in people
    question = client.get(url)
    assert question.status_code == 200 and "signed out everywhere" in question.content.decode()
    unconfirmed = client.post(url, {})
    assert unconfirmed.status_code == 400 and "Tick the box" in unconfirmed.content.decode()
    technician.refresh_from_db()
    assert technician.is_active
    assert client.post(url, {"confirm": "yes"})["Location"] == reverse("accounts:people")
    technician.refresh_from_db()
    assert not technician.is_active
    assert AuditEvent.objects.filter(object_id=str(technician.pk), details__deactivated=True).exists()


def test_the_deactivation_page_is_for_people_managers(client, technician, pathologist):
    client.force_login(pathologist)
    assert client.get(reverse("accounts:deactivate", args=[technician.pk])).status_code == 403
