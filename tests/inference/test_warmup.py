"""Warming a serving process (inference.warmup; hematovision/celery.py, hematovision/wsgi.py): the model is
loaded and used once before the first upload, and a process without a usable model still starts."""

import logging
from unittest import mock

import pytest
from celery.signals import task_postrun, worker_process_init

from inference import predictor as predictor_module
from inference import warmup


@pytest.fixture
def no_model(db, settings):
    settings.INFERENCE_AUTO_BUNDLED_MODEL = False
    predictor_module.reset_predictor()
    yield
    predictor_module.reset_predictor()


def test_warm_up_without_a_model_logs_and_returns_false(no_model, caplog):
    with caplog.at_level(logging.WARNING, logger="inference.warmup"):
        assert warmup.warm_up(process="test process") is False

    assert "test process: not warmed up (ModelUnavailable" in caplog.text
    assert predictor_module._predictor is None


def test_warm_up_survives_a_database_without_tables(db):
    with mock.patch.object(predictor_module, "get_active_version", side_effect=RuntimeError("no such table")):
        assert warmup.warm_up(process="fresh install") is False


def test_the_synthetic_cell_is_found_as_a_cell():
    from inference.locate import locate_cells

    location = locate_cells(warmup.synthetic_cell())

    assert len(location.cells) >= 1  # else the warm-up would never reach the classifier


@pytest.mark.slow
def test_warm_up_loads_the_active_model_and_classifies_once(tiny_model):
    original_predict = predictor_module.Predictor.predict
    with mock.patch.object(
        predictor_module.Predictor, "predict", autospec=True, side_effect=original_predict
    ) as predict:
        assert warmup.warm_up(process="test process") is True

    assert predictor_module._predictor is not None and predictor_module._predictor.version == tiny_model
    assert predict.call_count == 1 and len(predict.call_args.args[1]) >= 1
    assert predictor_module.get_predictor() is predictor_module._predictor  # the first upload reuses it


def test_celery_pool_processes_warm_up_when_they_start():
    from hematovision import celery as celery_module

    receivers_before = list(worker_process_init.receivers)
    postrun_before = list(task_postrun.receivers)
    try:
        celery_module.connect_warm_up(sender=None)  # worker_init, after Celery's Django fixup connected its own
        with mock.patch.object(warmup, "warm_up") as warm_up:
            worker_process_init.send(sender="test@host")
    finally:
        worker_process_init.receivers[:] = receivers_before
        task_postrun.receivers[:] = postrun_before
    warm_up.assert_called_once()
    assert warm_up.call_args.kwargs["process"].startswith("celery pool process")
    # A warm-up slower than Celery's default of 4 s must not get the pool process killed and restarted.
    assert celery_module.app.conf.worker_proc_alive_timeout >= 30


def test_a_celery_pool_process_without_a_model_still_starts(no_model):
    from hematovision import celery as celery_module

    celery_module.warm_up_pool_process(sender=None)  # must not raise
    assert predictor_module._predictor is None


def test_a_worker_gives_freed_heap_back_after_a_large_task_but_not_after_a_small_or_eager_one():
    """glibc keeps what a 16-image task freed in its heap; the pool process trims it after such a task."""
    from types import SimpleNamespace

    from hematovision import celery as celery_module

    postrun_before = list(task_postrun.receivers)
    try:
        celery_module.connect_warm_up(sender=None)
        with mock.patch.object(celery_module, "_malloc_trim") as trim:
            task = mock.Mock(request=SimpleNamespace(is_eager=False))
            small = ([7],)
            task_postrun.send(sender=task, task_id="0", task=task, args=small, kwargs={}, retval=None, state="SUCCESS")
            trim.assert_not_called()
            large = (list(range(16)),)
            task_postrun.send(sender=task, task_id="1", task=task, args=large, kwargs={}, retval=None, state="SUCCESS")
            trim.assert_called_once_with(0)
            by_keyword = {"image_ids": list(range(16))}
            task_postrun.send(
                sender=task, task_id="3", task=task, args=(), kwargs=by_keyword, retval=None, state="SUCCESS"
            )
            assert trim.call_count == 2
            eager = mock.Mock(request=SimpleNamespace(is_eager=True))
            task_postrun.send(
                sender=eager, task_id="2", task=eager, args=large, kwargs={}, retval=None, state="SUCCESS"
            )
            assert trim.call_count == 2
    finally:
        task_postrun.receivers[:] = postrun_before
    # On this machine (glibc) the trim is real, and calling it does no harm.
    assert celery_module._malloc_trim is not None
    celery_module._malloc_trim(0)
