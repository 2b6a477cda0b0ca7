"""gunicorn's web processes get their views and case templates ready before the first request, and never
load a model (they do not classify)."""

import runpy
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

from inference import predictor as predictor_module

ROOT = Path(__file__).resolve().parents[2]


def load_gunicorn_conf(monkeypatch) -> dict:
    for name in ("DB_POOL", "GUNICORN_WORKER_CLASS"):
        monkeypatch.delenv(name, raising=False)  # restored after the test: the file sets DB_POOL
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_a_web_worker_compiles_the_case_templates_and_loads_no_model(db, monkeypatch):
    conf = load_gunicorn_conf(monkeypatch)
    predictor_module.reset_predictor()

    with mock.patch("django.template.loader.get_template") as get_template:
        conf["warm_up_web_process"](SimpleNamespace(pid=4242))

    assert [call.args[0] for call in get_template.call_args_list] == list(conf["WARM_TEMPLATES"])
    assert predictor_module._predictor is None


def test_a_failing_web_warm_up_does_not_stop_the_worker(caplog, monkeypatch):
    conf = load_gunicorn_conf(monkeypatch)

    with mock.patch("django.template.loader.get_template", side_effect=RuntimeError("template missing")):
        conf["warm_up_web_process"](SimpleNamespace(pid=4243))  # must not raise

    assert "web worker pid=4243: warm-up failed" in caplog.text
