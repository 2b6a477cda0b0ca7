"""The quantized exports bench/quant_speed.py compares (docs/benchmarks.md, hquant): what each one stores and runs."""

import collections

import numpy as np
import pytest

from inference.export import export_tflite

pytestmark = pytest.mark.slow


def _model():
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    maps = layers.Conv2D(64, 3, padding="same", activation="relu")(inputs)
    maps = layers.Conv2D(128, 3, padding="same", activation="relu")(maps)
    features = layers.GlobalAveragePooling2D(name="features")(maps)
    return keras.Model(inputs, {"logits": layers.Dense(3, name="logits")(features), "features": features})


def _op_input_types(path) -> collections.Counter:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    return collections.Counter(
        (op["op_name"], interpreter._get_tensor_details(op["inputs"][0], 0)["dtype"].__name__)
        for op in interpreter._get_ops_details()
    )


def test_dynamic_range_export_stores_int8_weights_and_keeps_float_activations(tmp_path):
    model = _model()
    full = export_tflite(model, tmp_path / "full.tflite")
    dynamic = export_tflite(model, tmp_path / "dynamic.tflite", dynamic_range=True)
    # int8 weights: about a quarter of the float32 file.
    assert dynamic.stat().st_size < 0.4 * full.stat().st_size
    ops = _op_input_types(dynamic)
    assert ops[("CONV_2D", "float32")] == 2
    assert not any(dtype == "int8" for _, dtype in ops)


def test_int8_export_quantizes_activations_behind_float_input(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    batches = [np.random.default_rng(seed).uniform(0, 255, size=(8, 16, 16, 3)).astype(np.float32) for seed in (0, 1)]
    path = export_tflite(_model(), tmp_path / "int8.tflite", int8_calibration=lambda: iter(batches))
    ops = _op_input_types(path)
    assert ops[("CONV_2D", "int8")] == 2
    assert ops[("QUANTIZE", "float32")] == 1
    interpreter = Interpreter(model_path=str(path))
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
