import numpy as np
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from PIL import Image

from audit.models import AuditEvent
from inference.importing import BLOOD_CELL_CLASSES, ImportFailed, import_keras_model, sha256_of
from inference.models import ModelVersion
from inference.predictor import get_predictor, reset_predictor

SIZE = 64


def blood_cell_architecture():
    """The seeds' Blood_Cell.h5 layout (MobileNetV2, pooling, Dense 128, Dropout, Dense 4 softmax), small."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    base = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            base,
            layers.GlobalAveragePooling2D(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.3),
            layers.Dense(4, activation="softmax"),
        ]
    )
    calibrate_batch_norm(base, sample_pixels(8) / 255.0)
    return model


def calibrate_batch_norm(model, batch: np.ndarray) -> None:
    """Set each batch-norm layer's moving statistics to those of ``batch`` (in one training-mode pass), so a
    randomly initialised network neither vanishes nor explodes and its outputs differ between images."""
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    inputs = keras.Model(model.input, [layer.input for layer in norms])(batch, training=True)
    for layer, values in zip(norms, inputs, strict=True):
        values = np.asarray(values)
        gamma, beta, _, _ = layer.get_weights()
        layer.set_weights([gamma, beta, values.mean(axis=(0, 1, 2)), values.var(axis=(0, 1, 2))])


def sample_pixels(count: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def blood_cell_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("legacy") / "Blood_Cell.h5"
    blood_cell_architecture().save(path)
    return path


@pytest.fixture(scope="module")
def blood_cell_keras(blood_cell_h5):
    import keras

    return keras.models.load_model(blood_cell_h5, compile=False)


def cell_images(count: int = 4) -> list[Image.Image]:
    return [Image.fromarray(pixels.astype(np.uint8)) for pixels in sample_pixels(count, seed=11)]


def small_functional_classifier(n_classes: int):
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(n_classes)(x))


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def served_probabilities(classes) -> np.ndarray:
    reset_predictor()
    try:
        predictions = get_predictor().predict(cell_images())
    finally:
        reset_predictor()
    return np.array([[p.probabilities[name] for name in classes] for p in predictions])


@pytest.mark.slow
@pytest.mark.django_db
def test_legacy_model_is_registered_with_blood_cell_defaults_and_serves_its_probabilities(
    blood_cell_h5, blood_cell_keras
):
    version = import_keras_model(path=blood_cell_h5, name="blood-cell", activate=True)

    assert version.source == ModelVersion.Source.IMPORTED
    assert version.classes == list(BLOOD_CELL_CLASSES)
    assert version.input_size == SIZE
    assert version.preprocessing["scale"] == "raw" and version.preprocessing["crop"] == "none"
    assert version.training["imported"]["pixel_scaling"] == "1/255"
    directory = settings.MODEL_STORE_DIR / "blood-cell"
    assert version.checksums == {
        filename: sha256_of(directory / filename) for filename in ("Blood_Cell.h5", "model.keras", "model.tflite")
    }
    assert version.checksums["Blood_Cell.h5"] == sha256_of(blood_cell_h5)
    assert AuditEvent.objects.filter(action=AuditEvent.Action.MODEL_IMPORTED, object_id=str(version.pk)).exists()

    expected = np.asarray(blood_cell_keras(sample_pixels(4, seed=11) / 255.0, training=False))
    assert expected.max(axis=1).min() > 0.3  # distinct, non-uniform outputs, so the comparison means something
    np.testing.assert_allclose(served_probabilities(BLOOD_CELL_CLASSES), expected, atol=1e-3)


@pytest.mark.slow
@pytest.mark.django_db
def test_command_imports_a_functional_keras_file_with_given_classes_and_scaling(tmp_path):
    model = small_functional_classifier(3)
    model.save(tmp_path / "tri.keras")
    call_command(
        "import_model", str(tmp_path / "tri.keras"), "--name", "tri", "--classes", "A,B,C", "--scale=-1..1",
        "--activate",
    )  # fmt: skip
    version = ModelVersion.objects.get(name="tri")
    assert version.is_active and version.classes == ["A", "B", "C"] and version.input_size == 32
    resized = [np.asarray(image.resize((32, 32), Image.Resampling.BILINEAR), np.float32) for image in cell_images()]
    expected = softmax(np.asarray(model(np.stack(resized) / 127.5 - 1.0), dtype=np.float64))
    np.testing.assert_allclose(served_probabilities(["A", "B", "C"]), expected, atol=1e-3)


@pytest.mark.slow
@pytest.mark.django_db
def test_command_assumes_blood_cell_classes_for_four_outputs_and_says_so(tmp_path, capsys):
    small_functional_classifier(4).save(tmp_path / "four.keras")
    call_command("import_model", str(tmp_path / "four.keras"), "--name", "four")
    output = capsys.readouterr().out
    assert "assumed Blood_Cell.h5's EOSINOPHIL, LYMPHOCYTE, MONOCYTE, NEUTROPHIL" in output
    assert "not active" in output
    assert ModelVersion.objects.get(name="four").classes == list(BLOOD_CELL_CLASSES)


@pytest.mark.django_db
def test_command_reports_a_missing_file(tmp_path):
    with pytest.raises(CommandError, match="file not found"):
        call_command("import_model", str(tmp_path / "absent.h5"))


@pytest.mark.django_db
def test_a_file_that_is_not_a_keras_model_is_refused_and_nothing_is_kept(tmp_path):
    bogus = tmp_path / "notes.h5"
    bogus.write_text("not a model")
    with pytest.raises(ImportFailed, match="not a loadable Keras model"):
        import_keras_model(path=bogus, name="bogus")
    assert not (settings.MODEL_STORE_DIR / "bogus").exists()
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_classes_must_match_the_model_outputs(blood_cell_h5):
    with pytest.raises(ImportFailed, match="3 classes given .* 4 outputs"):
        import_keras_model(path=blood_cell_h5, name="mismatch", classes=["A", "B", "C"])
    assert not ModelVersion.objects.exists()


@pytest.mark.django_db
def test_other_output_counts_need_class_names(tmp_path):
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    path = tmp_path / "six.keras"
    keras.Model(inputs, keras.layers.Dense(6, activation="softmax")(x)).save(path)
    with pytest.raises(ImportFailed, match="6 outputs: name its classes"):
        import_keras_model(path=path)


@pytest.mark.django_db
def test_an_existing_name_is_refused(blood_cell_h5):
    from tests.factories import ModelVersionFactory

    ModelVersionFactory(name="taken")
    with pytest.raises(ImportFailed, match="already exists"):
        import_keras_model(path=blood_cell_h5, name="taken")


@pytest.mark.django_db
def test_input_size_must_agree_with_a_fixed_size_model(blood_cell_h5):
    with pytest.raises(ImportFailed, match="differs from the model's fixed input size 64"):
        import_keras_model(path=blood_cell_h5, name="wrong-size", input_size=224)
