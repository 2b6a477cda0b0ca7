"""Each prefork pool process runs the model on its share of the worker's cores (hematovision/celery.py)."""

import os

import pytest

from hematovision import celery as celery_app


class FakeWorker:
    def __init__(self, pool_cls="prefork", concurrency=2):
        self.pool_cls = pool_cls
        self.concurrency = concurrency


@pytest.mark.parametrize(
    ("concurrency", "cores", "threads"), [(2, 2, 1), (1, 2, 2), (4, 2, 1), (2, 8, 4), (3, 8, 2), (0, 2, 2)]
)
def test_pool_inference_threads_share_the_cores(concurrency, cores, threads):
    assert celery_app.pool_inference_threads(concurrency=concurrency, cores=cores) == threads


@pytest.fixture
def no_thread_setting(monkeypatch):
    monkeypatch.delenv("INFERENCE_NUM_THREADS", raising=False)
    monkeypatch.setattr(celery_app, "_available_cores", lambda: 8)
    yield
    os.environ.pop("INFERENCE_NUM_THREADS", None)


def test_prefork_pool_processes_get_their_share(no_thread_setting):
    celery_app.share_cores_between_pool_processes(FakeWorker(concurrency=2))
    assert os.environ["INFERENCE_NUM_THREADS"] == "4"


def test_pool_class_from_the_command_line_is_recognised(no_thread_setting):
    from celery.concurrency.prefork import TaskPool

    celery_app.share_cores_between_pool_processes(FakeWorker(pool_cls=TaskPool, concurrency=8))
    assert os.environ["INFERENCE_NUM_THREADS"] == "1"


@pytest.mark.parametrize("worker", [FakeWorker(pool_cls="solo", concurrency=1), FakeWorker(concurrency="auto")])
def test_other_pools_and_auto_concurrency_keep_the_default(no_thread_setting, worker):
    celery_app.share_cores_between_pool_processes(worker)
    assert "INFERENCE_NUM_THREADS" not in os.environ


def test_a_deployment_setting_wins(no_thread_setting, monkeypatch):
    monkeypatch.setenv("INFERENCE_NUM_THREADS", "3")
    celery_app.share_cores_between_pool_processes(FakeWorker(concurrency=2))
    assert os.environ["INFERENCE_NUM_THREADS"] == "3"
