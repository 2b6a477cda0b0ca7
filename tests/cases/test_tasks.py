from datetime import timedelta

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from cases import services, tasks
from cases.models import Case, CellImage, Prediction
from inference.predictor import Predictor
from tests.cases import images
from tests.factories import CaseFactory


@pytest.fixture
def case(technician):
    return CaseFactory(created_by=technician)


def upload_cells(case, user, *class_indexes):
    files = [images.upload(f"cell{i}.png", images.cell_png(index, seed=i)) for i, index in enumerate(class_indexes)]
    accepted, rejected = services.add_images(case=case, files=files, uploaded_by=user)
    assert rejected == []
    return accepted


def broker_down(*args, **kwargs):
    raise BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def make_stale(image):
    CellImage.objects.filter(pk=image.pk).update(status_changed_at=timezone.now() - timedelta(hours=1))


def test_task_stores_a_prediction_per_image_and_the_case_awaits_review(tiny_model, case, technician):
    first, second = upload_cells(case, technician, 0, 2)

    tasks.classify_images.apply(args=[[first.pk, second.pk]])

    predictions = {p.image_id: p for p in Prediction.objects.all()}
    assert predictions[first.pk].label == "LYMPHOCYTE"
    assert predictions[second.pk].label == "PLATELET"
    assert predictions[first.pk].model_version == tiny_model
    assert set(predictions[first.pk].probabilities) == set(tiny_model.classes)
    assert predictions[first.pk].latency_ms > 0
    assert set(CellImage.objects.values_list("status", flat=True)) == {CellImage.Status.CLASSIFIED}
    case.refresh_from_db()
    assert case.status == Case.Status.AWAITING_REVIEW


def test_running_the_task_twice_stores_the_prediction_once(tiny_model, case, technician):
    (image,) = upload_cells(case, technician, 1)

    tasks.classify_images.apply(args=[[image.pk]])
    tasks.classify_images.apply(args=[[image.pk]])

    assert Prediction.objects.filter(image=image).count() == 1


def test_redelivered_task_of_a_killed_worker_finishes_the_image_once(tiny_model, case, technician):
    (image,) = upload_cells(case, technician, 1)
    tasks.classify_images.apply(args=[[image.pk]])
    # As if the worker died after storing the prediction but before the status reached the broker.
    CellImage.objects.filter(pk=image.pk).update(status=CellImage.Status.CLASSIFYING)

    tasks.classify_images.apply(args=[[image.pk]])

    image.refresh_from_db()
    assert image.status == CellImage.Status.CLASSIFIED
    assert Prediction.objects.filter(image=image).count() == 1


def test_failing_predictor_marks_the_image_failed_with_a_message(tiny_model, case, technician, monkeypatch):
    (image,) = upload_cells(case, technician, 0)

    def broken(self, pictures):
        raise RuntimeError("tensor shape mismatch")

    monkeypatch.setattr(Predictor, "predict", broken)
    tasks.classify_images.apply(args=[[image.pk]])

    image.refresh_from_db()
    assert image.status == CellImage.Status.FAILED
    assert "Classification failed: tensor shape mismatch" in image.status_message
    case.refresh_from_db()
    assert case.status == Case.Status.AWAITING_REVIEW


def test_retry_after_a_failure_classifies_the_image(
    tiny_model, case, technician, monkeypatch, django_capture_on_commit_callbacks
):
    (image,) = upload_cells(case, technician, 0)
    with monkeypatch.context() as patch:
        patch.setattr(Predictor, "predict", lambda self, pictures: 1 / 0)
        tasks.classify_images.apply(args=[[image.pk]])

    with django_capture_on_commit_callbacks(execute=True):
        services.retry_classification(image=image, actor=technician)

    image.refresh_from_db()
    assert image.status == CellImage.Status.CLASSIFIED
    assert image.predictions.get().label == "LYMPHOCYTE"


def test_unreadable_stored_file_fails_only_that_image(tiny_model, case, technician, settings):
    broken, fine = upload_cells(case, technician, 0, 1)
    (settings.PRIVATE_MEDIA_ROOT / broken.storage_key).write_bytes(b"HVE1 garbage that is long enough to parse")

    tasks.classify_images.apply(args=[[broken.pk, fine.pk]])

    broken.refresh_from_db()
    fine.refresh_from_db()
    assert broken.status == CellImage.Status.FAILED
    assert "cannot be read" in broken.status_message
    assert fine.status == CellImage.Status.CLASSIFIED


def test_without_a_usable_model_images_stay_queued_with_the_reason(case, technician, settings):
    settings.INFERENCE_AUTO_BUNDLED_MODEL = False
    (image,) = upload_cells(case, technician, 0)

    tasks.classify_images.apply(args=[[image.pk]])

    image.refresh_from_db()
    assert image.status == CellImage.Status.QUEUED
    assert "Waiting for a usable classification model" in image.status_message
    assert not Prediction.objects.exists()


def test_broker_down_at_upload_keeps_the_image_queued(
    case, technician, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(tasks.classify_images, "apply_async", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        (image,) = upload_cells(case, technician, 0)

    image.refresh_from_db()
    assert image.status == CellImage.Status.QUEUED


def test_images_queued_while_the_broker_was_down_are_classified_by_requeue(
    tiny_model, case, technician, monkeypatch, django_capture_on_commit_callbacks
):
    with monkeypatch.context() as patch:
        patch.setattr(tasks.classify_images, "apply_async", broker_down)
        with django_capture_on_commit_callbacks(execute=True):
            (image,) = upload_cells(case, technician, 2)
    make_stale(image)

    found = tasks.requeue_stale_images.apply().get()

    image.refresh_from_db()
    assert found == 1
    assert image.status == CellImage.Status.CLASSIFIED
    assert image.predictions.get().label == "PLATELET"


def test_requeue_leaves_recently_queued_images_alone(case, technician, monkeypatch):
    upload_cells(case, technician, 0)
    sent = []
    monkeypatch.setattr(services, "enqueue_classification", lambda *, image_ids: sent.append(image_ids))

    assert tasks.requeue_stale_images.apply().get() == 0
    assert sent == []


def test_an_image_stuck_in_the_queue_can_be_retried(case, technician, monkeypatch):
    (image,) = upload_cells(case, technician, 0)
    make_stale(image)
    monkeypatch.setattr(services, "enqueue_classification", lambda *, image_ids: None)

    services.retry_classification(image=image, actor=technician)

    image.refresh_from_db()
    assert image.status == CellImage.Status.QUEUED
    assert image.status_changed_at > timezone.now() - timedelta(minutes=1)


def test_a_recently_queued_image_cannot_be_retried_yet(case, technician):
    (image,) = upload_cells(case, technician, 0)

    with pytest.raises(services.RetryRefused, match="still waiting after 5 minute"):
        services.retry_classification(image=image, actor=technician)
