import numpy as np
import pytest
from PIL import Image

from audit.models import AuditEvent
from inference.models import ModelVersion
from inference.predictor import ModelUnavailable, Predictor, get_predictor, reset_predictor
from inference.preprocessing import preprocess_batch
from inference.registry import artifact_path
from inference.services import activate_version
from inference.testing import build_tiny_model_version, synthetic_cell_image

pytestmark = pytest.mark.slow


def test_predictor_classifies_a_batch_of_mixed_images(tiny_model):
    n = len(tiny_model.classes)
    images = [synthetic_cell_image(i % n, n, seed=100 + i, size=40 + i) for i in range(6)]
    results = get_predictor().predict(images)
    assert [r.label for r in results] == [tiny_model.classes[i % n] for i in range(6)]
    first = results[0]
    assert set(first.probabilities) == set(tiny_model.classes)
    assert abs(sum(first.probabilities.values()) - 1.0) < 1e-6
    assert first.confidence == max(first.probabilities.values())
    assert first.ood_score is not None and first.latency_ms > 0


def test_predictor_is_loaded_once_per_process(tiny_model):
    assert get_predictor() is get_predictor()


def test_predictor_reloads_when_active_version_changes(tiny_model):
    first = get_predictor()
    other = build_tiny_model_version(activate=False)
    activate_version(other)
    assert get_predictor().version.pk == other.pk
    assert get_predictor() is not first


def test_confidence_threshold_flags_unsure_predictions(db):
    reset_predictor()
    version = build_tiny_model_version(confidence_threshold=1.01)
    result = Predictor(version).predict([synthetic_cell_image(0, 3)])[0]
    assert result.flagged and "low_confidence" in result.flag_reasons


def test_no_active_version_is_a_clear_error(db, settings, tmp_path):
    reset_predictor()
    settings.BUNDLED_MODEL_DIR = tmp_path
    with pytest.raises(ModelUnavailable, match="no active model version"):
        get_predictor()


def test_missing_file_is_reported(tiny_model):
    artifact_path(tiny_model, tiny_model.serving_artifact).rename(artifact_path(tiny_model, "moved.tflite"))
    try:
        with pytest.raises(ModelUnavailable, match="model file missing"):
            Predictor(tiny_model)
    finally:
        artifact_path(tiny_model, "moved.tflite").rename(artifact_path(tiny_model, tiny_model.serving_artifact))


def test_checksum_mismatch_is_reported(tiny_model):
    tiny_model.checksums = {**tiny_model.checksums, tiny_model.serving_artifact: "0" * 64}
    with pytest.raises(ModelUnavailable, match="checksum mismatch"):
        Predictor(tiny_model)


def test_corrupt_file_is_reported(tiny_model, settings, tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.tflite").write_bytes(b"not a flatbuffer" * 10)
    settings.MODEL_STORE_DIR = tmp_path
    tiny_model.artifact_dir = "broken"
    tiny_model.checksums = {}
    with pytest.raises(ModelUnavailable, match="cannot load"):
        Predictor(tiny_model)


def test_activation_keeps_one_active_version_and_is_audited(tiny_model, admin_user):
    other = build_tiny_model_version(activate=False)
    activate_version(other, admin_user)
    assert list(ModelVersion.objects.filter(is_active=True)) == [other]
    event = AuditEvent.objects.filter(action=AuditEvent.Action.MODEL_ACTIVATED).first()
    assert event.actor == admin_user and event.object_id == str(other.pk)


def test_predictor_accepts_grey_and_transparent_images(tiny_model):
    images = [Image.new("L", (20, 30), 128), Image.new("RGBA", (33, 33), (10, 200, 10, 128))]
    results = get_predictor().predict(images)
    assert len(results) == 2
    assert all(np.isfinite(r.confidence) for r in results)


def _bundle_from(version: ModelVersion, settings) -> dict:
    """Make a tiny model's folder play the part of the bundled model directory."""
    from inference.model_folder import read_model_metadata

    settings.BUNDLED_MODEL_DIR = artifact_path(version, "")
    return read_model_metadata(settings.BUNDLED_MODEL_DIR)


def test_an_upgrade_that_replaced_the_bundled_model_activates_the_new_one(tiny_model, settings):
    from inference.services import register_from_metadata

    metadata = _bundle_from(tiny_model, settings)
    previous = register_from_metadata(
        metadata=metadata, source=ModelVersion.Source.BUNDLED, artifact_dir="", name="old"
    )
    activate_version(previous)
    reset_predictor()

    predictor = get_predictor()

    assert predictor.version.name == metadata["name"]
    assert predictor.version.source == ModelVersion.Source.BUNDLED
    assert ModelVersion.objects.get(name="old").is_active is False


def test_a_trained_active_version_is_never_replaced_by_the_bundled_model(tiny_model, settings):
    _bundle_from(tiny_model, settings)
    reset_predictor()

    assert get_predictor().version == tiny_model


def test_the_runtime_answers_as_the_signature_runner_whatever_the_batch_shapes(tiny_model):
    from ai_edge_litert.interpreter import Interpreter

    from inference.runtimes import LiteRTRuntime

    path = artifact_path(tiny_model, tiny_model.serving_artifact)
    runtime = LiteRTRuntime(path, num_threads=1)
    reference = Interpreter(model_path=str(path), num_threads=1)
    runner = reference.get_signature_runner(next(iter(reference.get_signature_list())))
    (input_name,) = runner.get_input_details()
    size = tiny_model.input_size
    rng = np.random.default_rng(3)
    # The same shape twice (the runtime keeps its plan), then other shapes (it plans again).
    for count in (4, 4, 1, 7, 4):
        batch = rng.uniform(-1, 1, size=(count, size, size, 3)).astype(np.float32)
        logits, features = runtime.run(batch)
        expected = runner(**{input_name: batch})
        assert logits.shape[0] == count
        np.testing.assert_array_equal(logits, np.asarray(expected["logits"], dtype=np.float64))
        np.testing.assert_array_equal(features, np.asarray(expected["features"], dtype=np.float64))


def test_a_large_batch_runs_in_slices_so_the_interpreter_never_plans_for_it(tiny_model):
    """The interpreter keeps the tensor arena of the largest batch it planned for (pool process memory)."""
    from ai_edge_litert.interpreter import Interpreter

    from inference.runtimes import LiteRTRuntime

    path = artifact_path(tiny_model, tiny_model.serving_artifact)
    runtime = LiteRTRuntime(path, num_threads=1)
    reference = Interpreter(model_path=str(path), num_threads=1)
    runner = reference.get_signature_runner(next(iter(reference.get_signature_list())))
    (input_name,) = runner.get_input_details()
    size = tiny_model.input_size
    count = 2 * runtime.max_invoke_batch + 3
    batch = np.random.default_rng(5).uniform(-1, 1, size=(count, size, size, 3)).astype(np.float32)
    logits, features = runtime.run(batch)
    expected = runner(**{input_name: batch})
    np.testing.assert_array_equal(logits, np.asarray(expected["logits"], dtype=np.float64))
    np.testing.assert_array_equal(features, np.asarray(expected["features"], dtype=np.float64))
    if runtime._direct:
        planned = runtime._interpreter.get_input_details()[0]["shape"][0]
        assert planned <= runtime.max_invoke_batch
    assert runtime._planned_shape is None or runtime._planned_shape[0] <= runtime.max_invoke_batch


def test_out_of_distribution_scores_are_those_of_the_scorer(tiny_model):
    # The predictor scores on one BLAS thread; the figures are the scorer's own, to the last bit.
    n = len(tiny_model.classes)
    images = [synthetic_cell_image(i % n, n, seed=300 + i) for i in range(5)]
    predictor = get_predictor()
    _, features = predictor.predict_arrays(preprocess_batch(images, predictor.preprocessing))

    results = predictor.predict(images)

    assert [r.ood_score for r in results] == [float(s) for s in predictor.ood_scorer.score(features)]


@pytest.mark.parametrize(
    ("flips", "views"),
    [
        ("horizontal", lambda b: [b, b[:, :, ::-1]]),
        ("dihedral4", lambda b: [b, b[:, :, ::-1], b[:, ::-1, :], b[:, ::-1, ::-1]]),
    ],
)
def test_test_time_flips_average_the_logits_and_features_of_the_flipped_views(tiny_model, flips, views):
    tiny_model.preprocessing = {**tiny_model.preprocessing, "test_time_flips": flips}
    predictor = Predictor(tiny_model)
    images = [synthetic_cell_image(i, len(tiny_model.classes), seed=7 + i, size=48) for i in range(3)]
    batch = preprocess_batch(images, predictor.preprocessing)
    logits, features = predictor.predict_arrays(batch)
    runs = [predictor.runtime.run(np.ascontiguousarray(view)) for view in views(batch)]
    np.testing.assert_allclose(logits, np.mean([run[0] for run in runs], axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features, np.mean([run[1] for run in runs], axis=0), rtol=1e-5, atol=1e-6)
    # Asymmetric inputs: a mirrored view gives other logits, so the average differs from the plain view.
    assert not np.allclose(logits, runs[0][0])


@pytest.mark.parametrize(("flips", "calls"), [("none", [4, 3]), ("horizontal", [4, 4, 4, 2]), ("dihedral4", [4] * 7)])
def test_a_batch_goes_to_the_runtime_a_call_at_a_time_each_image_with_its_flips(tiny_model, flips, calls):
    # A 16-image task no longer holds every image's pixels and flipped copies at once; the calls keep the
    # runtime's size, and the outputs are those of the whole batch in one call, to the last bit.
    tiny_model.preprocessing = {**tiny_model.preprocessing, "test_time_flips": flips}
    predictor = Predictor(tiny_model)
    images = [synthetic_cell_image(i % 3, len(tiny_model.classes), seed=60 + i, size=48) for i in range(7)]
    run, sizes = predictor.runtime.run, []

    def recorded(batch):
        sizes.append(len(batch))
        return run(batch)

    predictor.runtime.run = recorded
    sliced = predictor.predict(images)
    assert sizes == calls
    predictor.runtime.max_invoke_batch = 64
    whole = predictor.predict(images)
    assert sizes[len(calls) :] == [sum(calls)]  # all 7 images and their flips in one call
    assert [(r.probabilities, r.ood_score, r.label) for r in sliced] == [
        (r.probabilities, r.ood_score, r.label) for r in whole
    ]


def test_an_unknown_test_time_flip_is_refused_when_the_model_loads(tiny_model):
    tiny_model.preprocessing = {**tiny_model.preprocessing, "test_time_flips": "rotate"}
    with pytest.raises(ModelUnavailable, match="test_time_flips"):
        Predictor(tiny_model)


def test_flips_are_skipped_only_for_images_the_plain_view_is_sure_of(tiny_model):
    from inference.calibration import softmax

    images = [synthetic_cell_image(i % 3, len(tiny_model.classes), seed=90 + i, size=48) for i in range(6)]

    def predictions(flips, skip_at=None, ood_threshold=1e9):
        preprocessing = {**tiny_model.preprocessing, "test_time_flips": flips}
        if skip_at is not None:
            preprocessing["flip_skip_confidence"] = skip_at
        tiny_model.preprocessing, tiny_model.ood_threshold = preprocessing, ood_threshold
        predictor = Predictor(tiny_model)
        run, sizes = predictor.runtime.run, []

        def recorded(batch):
            sizes.append(len(batch))
            return run(batch)

        predictor.runtime.run = recorded
        return [(r.probabilities, r.ood_score, r.label, r.flagged) for r in predictor.predict(images)], sizes

    plain, _ = predictions("none")
    full, _ = predictions("horizontal")
    assert plain != full
    # Everything sure: the plain view alone, the mirror never run.
    assert predictions("horizontal", skip_at=0.0) == (plain, [2, 2, 2])
    # An OOD score near the threshold is never sure, whatever the confidence: the same figures as without
    # skipping, to the last bit.
    unsure = predictions("horizontal", skip_at=0.0, ood_threshold=1e-9)
    assert unsure == (predictions("horizontal", ood_threshold=1e-9)[0], [2, 2, 2, 2, 2, 2])
    # Half sure: each image gets its plain or its averaged figures, and only the unsure ones are mirrored.
    predictor = Predictor(tiny_model)
    logits, _ = predictor.runtime.run(preprocess_batch(images, predictor.preprocessing))
    confidence = softmax(logits / predictor.temperature).max(axis=1)
    skip_at = float(np.median(confidence))
    mixed, sizes = predictions("horizontal", skip_at=skip_at)
    sure = confidence >= skip_at
    assert 0 < sure.sum() < len(images) and sum(sizes) == len(images) + (~sure).sum()
    assert mixed == [plain[row] if sure[row] else full[row] for row in range(len(images))]


def test_a_flip_skip_confidence_outside_0_1_is_refused_when_the_model_loads(tiny_model):
    tiny_model.preprocessing = {**tiny_model.preprocessing, "test_time_flips": "horizontal", "flip_skip_confidence": 2}
    with pytest.raises(ModelUnavailable, match="flip_skip_confidence"):
        Predictor(tiny_model)
