"""Model files are imported by a worker: the web request only stores the file and queues the job."""

from unittest import mock

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from inference import import_jobs
from inference.models import ModelImport, ModelVersion

pytestmark = pytest.mark.django_db


def small_keras_file(tmp_path) -> bytes:
    import keras

    keras.utils.set_random_seed(11)
    inputs = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(features))
    path = tmp_path / "small.keras"
    model.save(path)
    return path.read_bytes()


def test_queueing_stores_the_file_and_does_not_import_in_the_request(admin_user, settings):
    upload = SimpleUploadedFile("model.h5", b"any bytes")

    with mock.patch("inference.import_jobs.import_keras_model") as importer:
        job = import_jobs.queue_model_import(upload=upload, options={"scale": "1/255"}, actor=admin_user)

    importer.assert_not_called()
    assert job.status == ModelImport.Status.QUEUED
    assert (settings.MODEL_STORE_DIR / job.stored_file).read_bytes() == b"any bytes"
    assert "model.h5" not in job.stored_file


def test_a_broker_that_is_down_leaves_the_import_queued_with_the_reason(admin_user, django_capture_on_commit_callbacks):
    upload = SimpleUploadedFile("model.keras", b"any bytes")

    with mock.patch("inference.tasks.import_model_file.delay", side_effect=ConnectionError("broker unreachable")):
        with django_capture_on_commit_callbacks(execute=True):
            job = import_jobs.queue_model_import(upload=upload, options={"scale": "1/255"}, actor=admin_user)

    job.refresh_from_db()
    assert job.status == ModelImport.Status.QUEUED
    assert "broker unreachable" in job.message


def test_a_failed_import_is_recorded_and_its_upload_removed(admin_user, settings):
    job = import_jobs.queue_model_import(
        upload=SimpleUploadedFile("broken.h5", b"not hdf5"), options={"scale": "1/255"}, actor=admin_user
    )

    job = import_jobs.run_model_import(job_id=job.pk)

    assert job.status == ModelImport.Status.FAILED
    assert job.message.startswith("Not imported:")
    assert not (settings.MODEL_STORE_DIR / job.stored_file).exists()
    assert not ModelVersion.objects.exists()


def test_a_redelivered_task_does_not_import_twice(admin_user):
    job = ModelImport.objects.create(original_name="m.h5", stored_file="uploads/m.h5", status=ModelImport.Status.DONE)

    with mock.patch("inference.import_jobs.import_keras_model") as importer:
        import_jobs.run_model_import(job_id=job.pk)

    importer.assert_not_called()


@pytest.mark.slow
def test_the_api_queues_an_import_that_the_worker_turns_into_a_version(
    admin_user, client, tmp_path, django_capture_on_commit_callbacks
):
    client.force_login(admin_user)
    upload = SimpleUploadedFile("small.keras", small_keras_file(tmp_path))

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("api-model-versions"), {"file": upload, "classes": "A,B,C", "name": "small-import"}
        )

    assert response.status_code == 202
    job = ModelImport.objects.get(pk=response.json()["id"])
    assert job.status == ModelImport.Status.DONE, job.message
    assert job.version == ModelVersion.objects.get(name="small-import")
    assert job.version.classes == ["A", "B", "C"]
    detail = client.get(reverse("api-model-import-detail", args=[job.pk])).json()
    assert (detail["status"], detail["version"]) == ("done", job.version.pk)
