import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from audit.models import AuditEvent
from inference import services
from inference.models import ModelImport, ModelVersion
from tests.factories import ModelVersionFactory


@pytest.fixture
def versions(db):
    active = ModelVersionFactory(
        name="active-one", is_active=True, metrics={"validation": {"n": 400, "accuracy": 0.9312, "macro_f1": 0.91}}
    )
    spare = ModelVersionFactory(name="spare-one", metrics={"accuracy": 0.88, "n": 100})
    return active, spare


def test_list_shows_versions_with_their_metrics(versions, admin_user, client):
    client.force_login(admin_user)
    content = client.get(reverse("inference:list")).content.decode()
    assert 'data-name="active-one" data-active="true"' in content
    assert "accuracy 0.9312" in content and "macro_f1 0.91" in content
    assert "accuracy 0.88" in content


@pytest.mark.parametrize("role_fixture", ["technician", "pathologist", "supervisor", "researcher"])
def test_model_pages_are_for_admins_only(versions, role_fixture, request, client):
    client.force_login(request.getfixturevalue(role_fixture))
    assert client.get(reverse("inference:list")).status_code == 403
    assert client.post(reverse("inference:activate", args=[versions[1].pk])).status_code == 403
    assert ModelVersion.objects.get(is_active=True) == versions[0]


def test_activation_switches_the_active_version_and_is_audited(versions, admin_user, client):
    active, spare = versions
    services.record_evaluation(version=spare, data="a folder (100 cells)", metrics=spare.metrics)
    client.force_login(admin_user)
    response = client.post(reverse("inference:activate", args=[spare.pk]), {"confirm": "yes"})
    assert response.status_code == 302
    assert ModelVersion.objects.get(is_active=True) == spare
    event = AuditEvent.objects.get(action=AuditEvent.Action.MODEL_ACTIVATED)
    assert (event.actor, event.object_id, event.details["previous"]) == (admin_user, str(spare.pk), ["active-one"])


def test_activating_an_unknown_version_is_404(admin_user, client):
    client.force_login(admin_user)
    assert client.post(reverse("inference:activate", args=[999999])).status_code == 404


def test_import_refuses_a_file_that_is_not_a_keras_model_and_keeps_the_entries(admin_user, client):
    client.force_login(admin_user)
    upload = SimpleUploadedFile("notes.txt", b"not a model")
    response = client.post(reverse("inference:import"), {"file": upload, "name": "my-model", "scale": "1/255"})
    content = response.content.decode()
    assert response.status_code == 400
    assert "notes.txt is not a Keras model file" in content
    assert 'value="my-model"' in content
    assert not ModelVersion.objects.exists()


@pytest.mark.slow
def test_import_of_a_corrupt_keras_file_is_recorded_as_failed_with_why(
    admin_user, client, django_capture_on_commit_callbacks
):
    client.force_login(admin_user)
    upload = SimpleUploadedFile("broken.keras", b"PK\x03\x04 truncated")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("inference:import"), {"file": upload, "scale": "1/255"})
    job = ModelImport.objects.get()
    assert job.status == ModelImport.Status.FAILED
    page = client.get(reverse("inference:list")).content.decode()
    assert 'data-testid="import-row" data-status="failed"' in page
    assert "Not imported:" in page
    assert not ModelVersion.objects.exists()
