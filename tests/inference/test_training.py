import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image

from inference.models import ModelVersion
from inference.testing import synthetic_cell_image
from inference.training import balanced_class_weights


def _dataset(root, per_class=8):
    for index, name in enumerate(["LYMPHOCYTE", "NEUTROPHIL", "PLATELET"]):
        (root / name).mkdir(parents=True)
        for seed in range(per_class):
            synthetic_cell_image(index, 3, size=40, seed=seed).save(root / name / f"{seed}.jpg")
    return root


def test_balanced_class_weights_equalise_class_totals():
    labels = np.array([0, 0, 0, 1])
    weights = balanced_class_weights(labels, 2)
    assert weights[0] * 3 == pytest.approx(weights[1] * 1)
    assert weights[labels].mean() == pytest.approx(1.0)


@pytest.mark.slow
def test_train_command_trains_exports_and_registers_a_version(db, tmp_path, settings):
    settings.MODEL_STORE_DIR = tmp_path / "store"
    data = _dataset(tmp_path / "data")
    call_command(
        "train",
        "--data", str(data),
        "--backbone", "mobilenet_v2",
        "--weights", "none",
        "--input-size", "32",
        "--finetune-from", "block_16",
        "--views", "2",
        "--epochs", "1",
        "--head-epochs", "2",
        "--val-fraction", "0.25",
        "--name", "tiny-trained",
        "--cache-dir", str(tmp_path / "cache"),
        "--quiet-progress",
        "--activate",
    )  # fmt: skip
    version = ModelVersion.objects.get(name="tiny-trained")
    assert version.is_active and version.classes == ["LYMPHOCYTE", "NEUTROPHIL", "PLATELET"]
    assert version.preprocessing["input_size"] == 32
    assert set(version.checksums) == {"model.tflite", "model.keras", "ood.npz"}
    assert version.training["data_fingerprint"] and version.training["finetune_epochs_run"] == 1
    assert version.ood_threshold is not None and version.temperature > 0
    assert (tmp_path / "store" / "tiny-trained" / "report-validation" / "confusion_matrix.png").is_file()
    assert version.training["export_parity_max_abs_diff"] <= 1e-3


@pytest.mark.slow
def test_train_command_fine_tunes_the_whole_network_at_an_internal_size(db, tmp_path, settings):
    import keras

    settings.MODEL_STORE_DIR = tmp_path / "store"
    call_command(
        "train",
        "--data", str(_dataset(tmp_path / "data")),
        "--weights", "none",
        "--input-size", "48",
        "--whole-network-size", "32",
        "--views", "2",
        "--epochs", "1",
        "--val-fraction", "0.25",
        "--name", "tiny-whole",
        "--quiet-progress",
    )  # fmt: skip
    version = ModelVersion.objects.get(name="tiny-whole")
    assert version.preprocessing["input_size"] == 48 and version.training["config"]["whole_network_size"] == 32
    assert set(version.checksums) == {"model.tflite", "model.keras", "ood.npz"}
    assert version.training["finetune_epochs_run"] == 1 and version.training["export_parity_max_abs_diff"] <= 1e-3
    model = keras.models.load_model(tmp_path / "store" / "tiny-whole" / "model.keras", compile=False)
    assert model.input_shape == (None, 48, 48, 3) and model.get_layer("internal_resize").output.shape[1] == 32
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def test_train_command_rejects_an_unknown_backbone(db, tmp_path):
    with pytest.raises(CommandError, match="unknown backbone"):
        call_command("train", "--data", str(_dataset(tmp_path)), "--backbone", "alexnet", "--no-register")


def test_train_command_reports_a_missing_data_folder(db, tmp_path):
    with pytest.raises(CommandError, match="data folder not found"):
        call_command("train", "--data", str(tmp_path / "missing"), "--no-register", "--weights", "none")


def test_train_command_rejects_a_single_class(db, tmp_path):
    (tmp_path / "A").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "A" / "x.png")
    with pytest.raises(CommandError, match="at least two classes"):
        call_command("train", "--data", str(tmp_path), "--no-register", "--weights", "none")


def test_train_command_explains_weights_unavailable_offline(db, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    with pytest.raises(CommandError, match="(?i)weights"):
        call_command(
            "train", "--data", str(_dataset(tmp_path / "d", per_class=2)), "--backbone", "mobilenet_v2",
            "--input-size", "32", "--no-register", "--cache-dir", str(tmp_path / "c"),
        )  # fmt: skip


def test_include_confirmed_without_an_exporter_is_a_clear_error(db, tmp_path, settings):
    settings.CONFIRMED_LABELS_EXPORTER = ""
    with pytest.raises(CommandError, match="CONFIRMED_LABELS_EXPORTER"):
        call_command("train", "--data", str(_dataset(tmp_path)), "--include-confirmed", "--no-register")
