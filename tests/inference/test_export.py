import numpy as np
import pytest

from inference.export import FLOAT16_PARITY_TOLERANCE, ExportParityError, check_parity, export_tflite
from inference.testing import _tiny_keras_model

pytestmark = pytest.mark.slow


def test_exported_probabilities_match_keras(tmp_path):
    model = _tiny_keras_model(n_classes=3, input_size=16)
    path = export_tflite(model, tmp_path / "model.tflite")
    batch = np.random.default_rng(0).normal(size=(5, 16, 16, 3)).astype(np.float32)
    assert check_parity(model, path, batch) <= 1e-3


def test_parity_check_catches_a_different_model(tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    exported = export_tflite(_tiny_keras_model(n_classes=3, input_size=16), tmp_path / "a.tflite")
    keras.utils.set_random_seed(2)
    other = _tiny_keras_model(n_classes=3, input_size=16)
    batch = np.random.default_rng(0).normal(0, 50, size=(5, 16, 16, 3)).astype(np.float32)
    with pytest.raises(ExportParityError, match="differ from Keras"):
        check_parity(other, exported, batch)


def test_float16_export_halves_the_weights_and_stays_close_to_keras(tmp_path):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    maps = layers.Conv2D(64, 3, padding="same", activation="relu")(inputs)
    maps = layers.Conv2D(128, 3, padding="same", activation="relu")(maps)
    features = layers.GlobalAveragePooling2D(name="features")(maps)
    model = keras.Model(inputs, {"logits": layers.Dense(3, name="logits")(features), "features": features})
    full = export_tflite(model, tmp_path / "full.tflite")
    half = export_tflite(model, tmp_path / "half.tflite", float16=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    batch = np.random.default_rng(0).uniform(0, 1, size=(5, 16, 16, 3)).astype(np.float32)
    assert check_parity(model, half, batch, tolerance=FLOAT16_PARITY_TOLERANCE) > 0.0
