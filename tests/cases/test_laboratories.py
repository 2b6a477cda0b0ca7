"""Laboratories: kept by supervisors and admins (audited), chosen by technicians on the case form and API."""

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from cases import services
from cases.models import Case, Laboratory
from tests.api.conftest import token_client
from tests.factories import CaseFactory, LaboratoryFactory


def test_supervisor_adds_a_laboratory_and_it_is_audited(client, supervisor):
    client.force_login(supervisor)

    response = client.post(
        reverse("cases:laboratories"), {"name": " Olympus lab ", "instrument": "Olympus CX31", "um_per_pixel": "0.22"}
    )

    assert response.status_code == 302
    laboratory = Laboratory.objects.get()
    assert (laboratory.name, laboratory.instrument, laboratory.um_per_pixel) == ("Olympus lab", "Olympus CX31", 0.22)
    event = AuditEvent.objects.get(action=services.LABORATORY_CREATED)
    assert event.actor == supervisor
    assert event.object_id == str(laboratory.pk)
    assert event.details["um_per_pixel"] == 0.22


def test_a_laboratory_name_is_unique_whatever_its_case(client, admin_user):
    LaboratoryFactory(name="Barcelona")
    client.force_login(admin_user)

    response = client.post(reverse("cases:laboratories"), {"name": "barcelona"})

    assert response.status_code == 200
    assert "already exists" in response.text
    assert Laboratory.objects.count() == 1


@pytest.mark.parametrize("scale", ["0", "-1", "11", "abc"])
def test_an_impossible_scale_is_refused_with_a_message(client, supervisor, scale):
    client.force_login(supervisor)

    response = client.post(reverse("cases:laboratories"), {"name": "Lab", "um_per_pixel": scale})

    assert response.status_code == 200
    assert "is-invalid" in response.text
    assert not Laboratory.objects.exists()


def test_editing_a_laboratory_records_what_changed(client, supervisor):
    laboratory = LaboratoryFactory(name="Lab A", instrument="DM96", um_per_pixel=None)
    client.force_login(supervisor)

    response = client.post(
        reverse("cases:laboratory_edit", args=[laboratory.pk]),
        {"name": "Lab A", "instrument": "DM96", "um_per_pixel": "0.1"},
    )

    assert response.status_code == 302
    laboratory.refresh_from_db()
    assert laboratory.um_per_pixel == 0.1
    event = AuditEvent.objects.get(action=services.LABORATORY_CHANGED)
    assert event.details == {"changes": {"um_per_pixel": {"from": None, "to": 0.1}}}


def test_renaming_onto_another_laboratory_is_refused_and_changes_nothing(client, supervisor):
    LaboratoryFactory(name="Taken")
    laboratory = LaboratoryFactory(name="Mine")
    client.force_login(supervisor)

    response = client.post(reverse("cases:laboratory_edit", args=[laboratory.pk]), {"name": "TAKEN"})

    assert response.status_code == 200
    assert "already exists" in response.text
    laboratory.refresh_from_db()
    assert laboratory.name == "Mine"
    assert not AuditEvent.objects.filter(action=services.LABORATORY_CHANGED).exists()


def test_technicians_and_pathologists_cannot_manage_laboratories(client, technician, pathologist):
    laboratory = LaboratoryFactory()
    for user in (technician, pathologist):
        client.force_login(user)
        assert client.get(reverse("cases:laboratories")).status_code == 403
        assert client.post(reverse("cases:laboratory_edit", args=[laboratory.pk]), {"name": "x"}).status_code == 403
    assert Laboratory.objects.get().name == laboratory.name


def test_technician_chooses_the_laboratory_on_the_case_form(client, technician):
    laboratory = LaboratoryFactory(name="Olympus lab", um_per_pixel=0.2)
    client.force_login(technician)
    assert "Olympus lab" in client.get(reverse("cases:create")).text

    response = client.post(reverse("cases:create"), {"accession_id": "ACC-LAB-1", "laboratory": laboratory.pk})

    case = Case.objects.get(accession_id="ACC-LAB-1")
    assert case.laboratory == laboratory
    page = client.get(response["Location"]).text
    assert "Olympus lab" in page and "0.2 µm per pixel" in page


def test_the_laboratory_is_optional(client, technician):
    client.force_login(technician)

    client.post(reverse("cases:create"), {"accession_id": "ACC-NO-LAB"})

    assert Case.objects.get(accession_id="ACC-NO-LAB").laboratory is None


def test_a_laboratory_in_use_cannot_be_deleted(db):
    from django.db.models import ProtectedError

    case = CaseFactory(laboratory=LaboratoryFactory())

    with pytest.raises(ProtectedError):
        case.laboratory.delete()


def test_api_lists_laboratories_and_creates_a_case_with_one(technician):
    laboratory = LaboratoryFactory(name="Lab X", um_per_pixel=0.25)
    api = token_client(technician)

    listed = api.get("/api/v1/laboratories/")
    created = api.post("/api/v1/cases/", {"accession_id": "API-LAB", "laboratory": laboratory.pk}, format="json")

    assert listed.status_code == 200
    assert listed.json() == [
        {"id": laboratory.pk, "name": "Lab X", "instrument": laboratory.instrument, "um_per_pixel": 0.25}
    ]
    assert created.status_code == 201
    assert created.json()["laboratory"] == laboratory.pk
    assert Case.objects.get(accession_id="API-LAB").laboratory == laboratory


def test_api_refuses_an_unknown_laboratory(technician):
    response = token_client(technician).post(
        "/api/v1/cases/", {"accession_id": "API-BAD-LAB", "laboratory": 999999}, format="json"
    )

    assert response.status_code == 400
    assert "laboratory" in response.json()["errors"]
    assert not Case.objects.filter(accession_id="API-BAD-LAB").exists()
