"""Adapting the active model to a laboratory: the command, the job from the page (reviews -> adapt ->
evaluate -> gate -> activate -> rollback), cancellation and the activation gate. Tiny model, tiny images."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from audit.models import AuditEvent
from cases import services as case_services
from cases.lab_cells import split_cases, write_laboratory_cells
from cases.models import Case, Review
from inference import adaptation, services
from inference.adapt import AdaptationCancelled, AdaptConfig, adapt_model, hash_fraction, split_by_hash
from inference.data import load_image_folder
from inference.evaluation import compute_metrics
from inference.models import AdaptationJob, ModelEvaluation, ModelVersion
from inference.registry import artifact_path
from inference.testing import DEFAULT_TINY_CLASSES, synthetic_cell_image
from tests.cases import images
from tests.factories import CaseFactory, LaboratoryFactory, ModelVersionFactory

# A few steps on a few tiny images: the point is that every stage runs, not that the model learns much.
TINY = AdaptConfig(epochs=1, batch_size=16, views=1, replay_per_class=4)
EVALUATE_KEYS = {"model", "data"} | set(
    compute_metrics(labels=np.array([0, 1]), probabilities=np.eye(2), classes=["a", "b"])
)


def write_cells(root: Path, *, per_class: int, seed: int = 0) -> Path:
    n = len(DEFAULT_TINY_CLASSES)
    for index, name in enumerate(DEFAULT_TINY_CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            synthetic_cell_image(index, n, size=40, seed=seed * 1000 + index * 100 + k).save(
                root / name / f"{name.lower()}-{seed}-{k}.png"
            )
    return root


def test_hash_split_is_stable_and_near_the_fraction(tmp_path):
    dataset = load_image_folder([write_cells(tmp_path, per_class=20)])
    rest, held = split_by_hash(dataset, fraction=0.25, salt="holdout:")
    assert len(rest) + len(held) == 60 and 5 <= len(held) <= 25
    _, again_held = split_by_hash(dataset.subset(np.arange(30)), fraction=0.25, salt="holdout:")
    # A file's side does not depend on which other files are present.
    assert {p.name for p in again_held.paths} == {p.name for p in held.paths} & {p.name for p in dataset.paths[:30]}
    assert 0 <= hash_fraction("a") < 1 and hash_fraction("a") == hash_fraction("a") != hash_fraction("b")


def test_cases_split_by_case_with_both_parts_present():
    adapt, holdout = split_cases([1, 1, 2, 3, 3, 3], holdout_fraction=0.01)
    assert adapt | holdout == {1, 2, 3} and holdout and adapt and not adapt & holdout
    assert split_cases([7, 7], holdout_fraction=0.9) == ({7}, set())


def test_adapt_command_registers_an_inactive_evaluated_version(tiny_model, tmp_path):
    data = write_cells(tmp_path / "lab", per_class=10)
    out = StringIO()
    call_command(
        "adapt", "--data", str(data), "--name", "lab-a", "--json", "--epochs", "1", "--holdout-fraction", "0.3",
        stdout=out,
    )  # fmt: skip
    summary = json.loads(out.getvalue())
    assert summary["name"] == "lab-a" and summary["base"] == tiny_model.name
    assert summary["adapt_cells"] + summary["holdout_cells"] == 30 and summary["holdout_cells"] > 0
    assert summary["seconds"] > 0
    assert set(summary["candidate"]) >= EVALUATE_KEYS and set(summary["active"]) >= EVALUATE_KEYS
    assert summary["candidate"]["n"] == summary["active"]["n"] == summary["holdout_cells"]
    version = ModelVersion.objects.get(name="lab-a")
    assert (version.source, version.is_active) == (ModelVersion.Source.ADAPTED, False)
    assert version.training["provenance"]["base_version"] == tiny_model.name
    assert sum(version.training["provenance"]["adapt_counts"].values()) == summary["adapt_cells"]
    assert artifact_path(version, "model.tflite").is_file()
    evaluation = ModelEvaluation.objects.get(version=version)
    assert evaluation.baseline == tiny_model and evaluation.metrics["n"] == summary["holdout_cells"]
    assert ModelVersion.objects.get(is_active=True) == tiny_model


def test_adapt_command_refuses_bad_input_clearly(tiny_model, tmp_path):
    with pytest.raises(CommandError, match="--data and --name are required"):
        call_command("adapt", "--name", "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CommandError, match="no class folders"):
        call_command("adapt", "--data", str(tmp_path / "empty"), "--name", "x")
    data = write_cells(tmp_path / "lab", per_class=2)
    (data / "BLAST").mkdir()
    synthetic_cell_image(0, 3).save(data / "BLAST" / "b.png")
    with pytest.raises(CommandError, match="not classes of the model"):
        call_command("adapt", "--data", str(data), "--name", "x")
    with pytest.raises(CommandError, match="already exists"):
        call_command("adapt", "--data", str(data), "--name", tiny_model.name)
    assert ModelVersion.objects.count() == 1


def test_cancelling_mid_training_stops_and_leaves_no_files(tiny_model, tmp_path):
    data = load_image_folder([write_cells(tmp_path / "lab", per_class=6)], classes=tiny_model.classes)
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 3

    output = tmp_path / "out"
    with pytest.raises(AdaptationCancelled):
        adapt_model(
            base_dir=artifact_path(tiny_model, "model.keras").parent,
            data=data,
            output_dir=output,
            name="never",
            config=TINY,
            should_stop=should_stop,
        )
    assert not (output / "metadata.json").exists()


DURING_EXPORT: list = []


def exporter_with_hooks(**kwargs):
    """LABORATORY_CELLS_EXPORTER for tests: the real export, then whatever a test wants done meanwhile."""
    exported = write_laboratory_cells(**kwargs)
    while DURING_EXPORT:
        DURING_EXPORT.pop()()
    return exported


# --- From the platform ----------------------------------------------------------------------------------


def reviewed_case(technician, pathologist, *, laboratory, cells_per_class: int, seed: int, sign: bool = True):
    case = CaseFactory(created_by=technician, laboratory=laboratory)
    n = len(DEFAULT_TINY_CLASSES)
    files = []
    for index in range(n):
        for k in range(cells_per_class):
            image = synthetic_cell_image(index, n, size=40, seed=seed * 1000 + index * 100 + k)
            files.append(images.upload(f"c{seed}-{index}-{k}.png", images.encode(image, "PNG")))
    cells, rejected = case_services.add_images(case=case, files=files, uploaded_by=technician)
    assert not rejected
    for position, cell in enumerate(cells):
        label = DEFAULT_TINY_CLASSES[position // cells_per_class]
        Review.objects.create(image=cell, reviewer=pathologist, kind=Review.Kind.CONFIRM, to_label=label)
    if sign:
        Case.objects.filter(pk=case.pk).update(status=Case.Status.SIGNED)
    return case


@pytest.fixture
def lab_world(tiny_model, technician, pathologist):
    lab, other = LaboratoryFactory(name="Lab North"), LaboratoryFactory(name="Lab South")
    cases = [reviewed_case(technician, pathologist, laboratory=lab, cells_per_class=3, seed=s) for s in range(4)]
    reviewed_case(technician, pathologist, laboratory=lab, cells_per_class=1, seed=9, sign=False)
    reviewed_case(technician, pathologist, laboratory=other, cells_per_class=1, seed=8)
    return {"lab": lab, "cases": cases, "version": tiny_model}


def test_a_laboratorys_signed_cells_are_split_by_case(lab_world, tmp_path):
    exported = write_laboratory_cells(output_dir=tmp_path, laboratory_id=lab_world["lab"].pk, holdout_fraction=0.3)
    adapt_cases, holdout_cases = set(exported["cases"]["adapt"]), set(exported["cases"]["holdout"])
    assert adapt_cases | holdout_cases == {case.pk for case in lab_world["cases"]}  # not unsigned, not other lab
    assert adapt_cases and holdout_cases and not adapt_cases & holdout_cases
    written = {p.relative_to(exported["holdout_dir"]).as_posix() for p in exported["holdout_dir"].rglob("*.png")}
    assert written == set(exported["case_of"]) and {int(c) for c in exported["case_of"].values()} == holdout_cases
    total = sum(sum(part.values()) for part in exported["counts"].values())
    assert total == 4 * 3 * len(DEFAULT_TINY_CLASSES)


def test_reviews_to_adapted_version_through_the_gate_and_back(
    lab_world, supervisor, admin_user, client, monkeypatch, django_capture_on_commit_callbacks
):
    """Reviews -> adapt (started from the page) -> evaluate -> gate -> activate -> rollback."""
    dispatched = []
    monkeypatch.setattr(adaptation, "dispatch_adaptation", dispatched.append)
    base = lab_world["version"]

    client.force_login(supervisor)
    page = client.get(reverse("inference:adapt"))
    assert page.status_code == 200 and "Lab North" in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("inference:adapt"), {"name": "north-1", "laboratory": lab_world["lab"].pk})
    job = AdaptationJob.objects.get(name="north-1")
    assert response.status_code == 302 and response["Location"] == reverse("inference:adaptation", args=[job.pk])
    assert dispatched == [job.pk] and job.status == AdaptationJob.Status.QUEUED
    assert 'data-status="queued"' in client.get(reverse("inference:adaptation", args=[job.pk])).content.decode()

    # What the training worker (or the background process) runs:
    job = adaptation.run_adaptation_job(job_id=job.pk, config=TINY)
    assert job.status == AdaptationJob.Status.DONE, job.message
    assert job.progress == 1.0 and job.version is not None and not job.version.is_active
    candidate = job.version
    provenance = candidate.training["provenance"]
    assert provenance["laboratory_id"] == lab_world["lab"].pk and provenance["base_version"] == base.name
    assert set(provenance["cases"]["adapt"]) | set(provenance["cases"]["holdout"]) == {
        case.pk for case in lab_world["cases"]
    }
    evaluation = ModelEvaluation.objects.get(version=candidate)
    assert evaluation.baseline == base
    assert evaluation.metrics["case_differential"]["cases"] == len(provenance["cases"]["holdout"])

    # A supervisor compares but cannot activate.
    compare = client.get(reverse("inference:compare", args=[candidate.pk])).content.decode()
    assert 'data-testid="comparison-table"' in compare and "confirm-activate" not in compare
    assert client.post(reverse("inference:activate", args=[candidate.pk]), {"confirm": "yes"}).status_code == 403

    client.force_login(admin_user)
    # A bare POST goes to the comparison first; nothing changes.
    response = client.post(reverse("inference:activate", args=[candidate.pk]))
    assert response["Location"] == reverse("inference:compare", args=[candidate.pk])
    assert ModelVersion.objects.get(is_active=True) == base
    compare = client.get(reverse("inference:compare", args=[candidate.pk])).content.decode()
    assert "confirm-activate" in compare and "accuracy" in compare and "recall by class" in compare
    client.post(reverse("inference:activate", args=[candidate.pk]), {"confirm": "yes"})
    assert ModelVersion.objects.get(is_active=True) == candidate

    listing = client.get(reverse("inference:list")).content.decode()
    assert f"Roll back to {base.name}" in listing
    client.post(reverse("inference:rollback"))
    assert ModelVersion.objects.get(is_active=True) == base

    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    for action in ("model_adaptation", "model_evaluated", "model_activated", "model_rolled_back"):
        assert action in actions
    activated = AuditEvent.objects.get(action="model_activated", object_id=str(candidate.pk))
    assert activated.actor == admin_user and activated.details["previous"] == [base.name]
    assert AuditEvent.objects.get(action="model_rolled_back").details["rolled_back"] == candidate.name


def test_the_gate_refuses_an_unevaluated_version_on_the_page_and_the_api(tiny_model, admin_user, client):
    from rest_framework.test import APIClient

    spare = ModelVersionFactory(name="imported-untested")
    client.force_login(admin_user)
    page = client.get(reverse("inference:compare", args=[spare.pk])).content.decode()
    assert 'data-testid="not-evaluated"' in page and "confirm-activate" not in page
    client.post(reverse("inference:activate", args=[spare.pk]), {"confirm": "yes"})
    api = APIClient()
    api.force_authenticate(admin_user)
    response = api.post(f"/api/v1/model-versions/{spare.pk}/activate/")
    assert response.status_code == 409 and "no recorded evaluation" in response.json()["detail"]
    assert ModelVersion.objects.get(is_active=True) == tiny_model
    assert not AuditEvent.objects.filter(action="model_activated", object_id=str(spare.pk)).exists()

    services.record_evaluation(version=spare, data="a folder (2 cells)", metrics={"n": 2, "accuracy": 1.0})
    assert api.post(f"/api/v1/model-versions/{spare.pk}/activate/").status_code == 200
    assert ModelVersion.objects.get(is_active=True) == spare


def test_the_command_line_forces_the_gate_only_with_a_reason(tiny_model):
    spare = ModelVersionFactory(name="forced-one")
    with pytest.raises(CommandError, match="no recorded evaluation"):
        call_command("activate_model", "forced-one")
    with pytest.raises(CommandError, match="needs a --reason"):
        call_command("activate_model", "forced-one", "--force")
    call_command("activate_model", "forced-one", "--force", "--reason", "vendor model, validated on paper")
    assert ModelVersion.objects.get(is_active=True) == spare
    event = AuditEvent.objects.get(action="model_activated", object_id=str(spare.pk))
    assert event.details["forced"] is True and event.details["reason"] == "vendor model, validated on paper"
    call_command("activate_model", "--rollback")
    assert ModelVersion.objects.get(is_active=True) == tiny_model


def test_cancel_a_queued_job_and_a_running_one(lab_world, supervisor, client, monkeypatch, settings):
    monkeypatch.setattr(adaptation, "dispatch_adaptation", lambda job_id: None)
    queued = adaptation.queue_adaptation(name="q-1", laboratory_id=None, source_label="all", actor=supervisor)
    client.force_login(supervisor)
    client.post(reverse("inference:adaptation_cancel", args=[queued.pk]))
    queued.refresh_from_db()
    assert queued.status == AdaptationJob.Status.CANCELLED
    assert adaptation.run_adaptation_job(job_id=queued.pk).status == AdaptationJob.Status.CANCELLED  # not run

    running = adaptation.queue_adaptation(name="r-1", laboratory_id=None, source_label="all", actor=supervisor)

    settings.LABORATORY_CELLS_EXPORTER = f"{__name__}.exporter_with_hooks"
    DURING_EXPORT.append(lambda: client.post(reverse("inference:adaptation_cancel", args=[running.pk])))
    job = adaptation.run_adaptation_job(job_id=running.pk, config=TINY)
    assert job.status == AdaptationJob.Status.CANCELLED and job.version is None
    assert not ModelVersion.objects.filter(name="r-1").exists()
    steps = list(AuditEvent.objects.filter(action="model_adaptation").values_list("details__step", flat=True))
    assert steps.count("cancel") == 2


def test_a_job_without_data_fails_with_a_message_and_registers_nothing(tiny_model, supervisor, monkeypatch):
    monkeypatch.setattr(adaptation, "dispatch_adaptation", lambda job_id: None)
    job = adaptation.queue_adaptation(name="empty-1", laboratory_id=None, source_label="all", actor=supervisor)
    job = adaptation.run_adaptation_job(job_id=job.pk, config=TINY)
    assert job.status == AdaptationJob.Status.FAILED
    assert job.message == "Not adapted: there are no reviewed cells of signed cases of all to adapt on"
    assert not ModelVersion.objects.filter(name="empty-1").exists()


def test_adaptation_pages_are_for_supervisors_and_admins(tiny_model, technician, pathologist, researcher, client):
    for user in (technician, pathologist, researcher):
        client.force_login(user)
        assert client.get(reverse("inference:adapt")).status_code == 403


def test_the_embedded_default_runs_the_job_in_a_background_process(tiny_model, supervisor, settings, monkeypatch):
    started = []

    class FakePopen:
        def __init__(self, argv, **kwargs):
            started.append((argv, kwargs))

        def wait(self):
            return 0

    monkeypatch.setattr(adaptation.subprocess, "Popen", FakePopen)
    settings.CELERY_TASK_ALWAYS_EAGER = True
    assert adaptation.adaptation_runner() == "process"
    adaptation.dispatch_adaptation(41)
    ((argv, kwargs),) = started
    assert argv[-4:] == [str(Path(settings.BASE_DIR) / "manage.py"), "adapt", "--job", "41"]
    assert kwargs["start_new_session"] is True
    settings.CELERY_TASK_ALWAYS_EAGER = False
    assert adaptation.adaptation_runner() == "celery"


def _bundle_from(version, settings) -> dict:
    """Make the tiny model's folder the 'bundled model on disk', with a release evaluation in its metadata."""
    from inference.model_folder import read_model_metadata, write_model_metadata

    folder = artifact_path(version, "model.keras").parent
    metadata = read_model_metadata(folder)
    metadata["name"] = "bundled-next"
    metadata["metrics"] = {"test": {"n": 12, "accuracy": 0.9}}
    bundle = Path(settings.MODEL_STORE_DIR) / "bundle-next"
    bundle.mkdir(parents=True, exist_ok=True)
    for name in ("model.tflite", "model.keras", "ood.npz"):
        (bundle / name).write_bytes((folder / name).read_bytes())
    write_model_metadata(bundle, metadata, with_checksums=True)
    settings.BUNDLED_MODEL_DIR = bundle
    return metadata


def test_a_new_bundled_model_beside_an_adapted_active_one_is_a_candidate_not_a_replacement(tiny_model, settings):
    ModelVersion.objects.filter(pk=tiny_model.pk).update(source=ModelVersion.Source.ADAPTED)
    _bundle_from(tiny_model, settings)

    candidate = services.register_bundled_candidate()

    assert candidate.name == "bundled-next" and not candidate.is_active
    assert services.is_evaluated(candidate)  # its release figures open the gate: an admin may activate it
    assert ModelVersion.objects.get(is_active=True) == tiny_model
    assert services.register_bundled_candidate() is None  # once
    assert services.ensure_bundled_model() == ModelVersion.objects.get(pk=tiny_model.pk)


def test_replay_cells_learn_from_the_base_models_probabilities_and_lab_cells_from_labels(tiny_model, tmp_path):
    import keras

    from inference.adapt import _targets
    from inference.training import TrainingConfig
    from inference.whole_network import load_views

    data = load_image_folder([write_cells(tmp_path / "lab", per_class=2)], classes=tiny_model.classes)
    classifier = keras.saving.load_model(artifact_path(tiny_model, "model.keras"), compile=False)
    pixels = load_views(
        data, views=2, preprocessing=tiny_model.preprocessing, config=TrainingConfig(), progress=lambda *a: _Bar()
    )
    is_lab = np.arange(len(data)) % 2 == 0
    # Replay labels that disagree with the (very confident) tiny model show the mix plainly.
    labels = np.where(is_lab, data.labels, (data.labels + 1) % 3)
    targets = _targets(classifier, pixels, labels, is_lab, 3, 0.7, tiny_model.preprocessing["scale"])
    assert targets.shape == (2, len(data), 3) and np.allclose(targets.sum(axis=2), 1.0)
    assert np.array_equal(targets[:, is_lab], np.eye(3, dtype=np.float32)[labels[is_lab]][None].repeat(2, 0))
    replay = targets[:, ~is_lab]
    rows = np.arange(replay.shape[1])
    assert np.allclose(replay[:, rows, labels[~is_lab]], 0.3, atol=0.02)  # the label keeps its 30 %
    assert np.allclose(replay[:, rows, data.labels[~is_lab]], 0.7, atol=0.02)  # the base model's answer 70 %


class _Bar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def test_rollback_refuses_a_previous_version_whose_files_are_gone(tiny_model):
    gone = ModelVersionFactory(name="gone-one")  # registered, its files never existed
    ModelVersion.objects.filter(pk=tiny_model.pk).update(previous_version=gone)
    with pytest.raises(services.ActivationRefused, match="cannot serve any more"):
        services.rollback_version()
    assert ModelVersion.objects.get(is_active=True) == tiny_model
    with pytest.raises(services.ActivationRefused, match="no previous version"):
        ModelVersion.objects.filter(pk=tiny_model.pk).update(previous_version=None)
        services.rollback_version()


def test_supervisors_reach_the_adaptation_page_from_the_menu(supervisor, admin_user, client):
    client.force_login(supervisor)
    assert 'data-testid="nav-adapt"' in client.get(reverse("inference:adapt")).content.decode()
    client.force_login(admin_user)  # admins reach it from the models page
    assert 'data-testid="model-adapt"' in client.get(reverse("inference:list")).content.decode()


def test_evaluate_record_opens_the_gate(tiny_model, tmp_path):
    from inference.testing import build_tiny_model_version

    other = build_tiny_model_version(seed=1, name="tiny-other", activate=False)
    data = write_cells(tmp_path / "lab", per_class=3)
    assert not services.is_evaluated(other)
    call_command("evaluate", "--model", "tiny-other", "--data", str(data), "--record", "--json", stdout=StringIO())
    evaluation = ModelEvaluation.objects.get(version=other)
    assert evaluation.baseline == tiny_model and evaluation.metrics["n"] == evaluation.baseline_metrics["n"] == 9
    services.activate_version(other, require_evaluation=True)
    assert ModelVersion.objects.get(is_active=True) == other
