import json

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from inference.ensemble import build_ensemble
from inference.models import ModelVersion
from tests.inference.test_training import _dataset


def _member(seed: int, size: int = 16):
    """A small classifier with the outputs trained members have: logits and pooled features."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3), name="image")
    maps = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    features = layers.GlobalAveragePooling2D(name="features")(maps)
    logits = layers.Dense(3, name="logits")(features)
    return keras.Model(inputs, {"logits": logits, "features": features}, name="classifier")


def test_ensemble_averages_the_members_logits_and_features():
    first, second = _member(0), _member(1)
    x = np.random.default_rng(0).uniform(0, 255, (5, 16, 16, 3)).astype("float32")
    outputs = build_ensemble([first, second])(x)
    expected = {key: (np.asarray(first(x)[key]) + np.asarray(second(x)[key])) / 2 for key in ("logits", "features")}
    np.testing.assert_allclose(np.asarray(outputs["logits"]), expected["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(outputs["features"]), expected["features"], rtol=1e-5, atol=1e-5)


def test_ensemble_is_one_flat_graph_with_each_members_layers_prefixed():
    ensemble = build_ensemble([_member(0), _member(1)])
    names = [layer.name for layer in ensemble.layers]
    assert {"m0_conv", "m1_conv", "m0_logits", "m1_logits", "logits", "features"} <= set(names)
    assert not [layer for layer in ensemble.layers if layer.__class__.__name__ in ("Functional", "Model")]


def _fake_member(directory, *, classes, scale="raw"):
    directory.mkdir(parents=True)
    (directory / "model.keras").write_bytes(b"not read before the metadata is checked")
    (directory / "metadata.json").write_text(
        json.dumps({"name": directory.name, "classes": classes, "preprocessing": {"input_size": 48, "scale": scale}})
    )
    return directory


def test_ensemble_command_needs_two_members(db, tmp_path):
    member = _fake_member(tmp_path / "a", classes=["A", "B"])
    with pytest.raises(CommandError, match="at least two"):
        call_command("ensemble", "--member", str(member), "--data", str(tmp_path), "--val-data", str(tmp_path))


def test_ensemble_command_rejects_members_with_different_classes(db, tmp_path):
    first = _fake_member(tmp_path / "a", classes=["A", "B"])
    second = _fake_member(tmp_path / "b", classes=["A", "C"])
    with pytest.raises(CommandError, match="classes differ"):
        call_command(
            "ensemble", "--member", str(first), "--member", str(second),
            "--data", str(tmp_path), "--val-data", str(tmp_path), "--no-register", "--output", str(tmp_path / "out"),
        )  # fmt: skip


def test_ensemble_command_rejects_a_folder_without_a_keras_model(db, tmp_path):
    first = _fake_member(tmp_path / "a", classes=["A", "B"])
    (tmp_path / "b").mkdir()
    with pytest.raises(CommandError, match="no model.keras"):
        call_command(
            "ensemble", "--member", str(first), "--member", str(tmp_path / "b"),
            "--data", str(tmp_path), "--val-data", str(tmp_path),
        )  # fmt: skip


@pytest.mark.slow
def test_ensemble_command_combines_two_trained_members_into_one_served_model(db, tmp_path, settings):
    import keras

    from inference.gradcam import gradcam_heatmap
    from inference.predictor import Predictor
    from inference.testing import synthetic_cell_image

    settings.MODEL_STORE_DIR = tmp_path / "store"
    data = _dataset(tmp_path / "data")
    members = []
    for seed in (0, 1):
        members.append(tmp_path / f"member{seed}")
        call_command(
            "train", "--data", str(data), "--weights", "none", "--input-size", "48", "--whole-network-size", "32",
            "--views", "1", "--epochs", "1", "--val-fraction", "0.25", "--seed", str(seed),
            "--no-register", "--output", str(members[-1]), "--quiet-progress",
        )  # fmt: skip
    call_command(
        "ensemble", "--member", str(members[0]), "--member", str(members[1]),
        "--data", str(data), "--val-data", str(data), "--name", "tiny-ensemble", "--quiet-progress", "--activate",
    )  # fmt: skip

    version = ModelVersion.objects.get(name="tiny-ensemble")
    assert version.is_active and version.classes == ["LYMPHOCYTE", "NEUTROPHIL", "PLATELET"]
    assert set(version.checksums) == {"model.tflite", "model.keras", "ood.npz"}
    assert [m["folder"] for m in version.training["ensemble"]["members"]] == [str(m) for m in members]
    assert version.training["export_parity_max_abs_diff"] <= 1e-3
    assert version.training["timings_s"]["total_with_members_s"] > version.training["timings_s"]["total_s"]

    folder = tmp_path / "store" / "tiny-ensemble"
    ensemble = keras.models.load_model(folder / "model.keras", compile=False)
    first = keras.models.load_model(members[0] / "model.keras", compile=False)
    second = keras.models.load_model(members[1] / "model.keras", compile=False)
    x = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 3)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(ensemble(x)["logits"]),
        (np.asarray(first(x)["logits"]) + np.asarray(second(x)["logits"])) / 2,
        rtol=1e-4,
        atol=1e-4,
    )
    # Grad-CAM works on the ensemble as on any classifier (on the last member's last feature map).
    heatmap = gradcam_heatmap(ensemble, x[0], 1)
    assert heatmap.ndim == 2 and np.isfinite(heatmap).all()
    predictions = Predictor(version).predict([synthetic_cell_image(2, 3, size=40, seed=99)])
    assert predictions[0].label in version.classes and 0.0 < predictions[0].confidence <= 1.0
