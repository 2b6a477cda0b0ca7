"""Re-running a Keras model's top-level layers on new symbolic inputs, keeping every intermediate tensor.

A layer's ``.output`` is its *first* call's output; for a nested model (a backbone called as a layer,
as in ``Sequential([MobileNetV2(...), ...])``) that is the nested model's own graph, which cannot be
combined with the outer model's inputs. Tracing calls each top-level layer once more, sharing its
weights, so heads, feature maps and outputs all live in one graph that new ``keras.Model``s can cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TracedModel:
    inputs: Any
    outputs: Any
    # layer name -> (the tensor(s) the layer was called on, its output), in the traced graph.
    layers: dict[str, tuple[Any, Any]]


def trace_layers(model, *, inputs=None, feed=None) -> TracedModel:
    """Call ``model``'s top-level layers on ``inputs`` (new ``keras.Input``s by default). With ``feed``,
    layers that consumed the model's input get ``feed`` instead (e.g. ``inputs`` after a scaling layer)."""
    import keras

    if inputs is None:
        # A Sequential's `input` can be undefined (e.g. when it starts with a nested model); `inputs` is not.
        reference = model.inputs[0] if isinstance(model, keras.Sequential) else model.input
        inputs = keras.tree.map_structure(
            lambda tensor: keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype), reference
        )
    flat_inputs = keras.tree.flatten(inputs)
    if feed is not None and len(flat_inputs) != 1:
        raise ValueError("feed replaces a single input; the model has several")
    traced: dict[str, tuple[Any, Any]] = {}

    if isinstance(model, keras.Sequential):
        x = flat_inputs[0] if feed is None else feed
        for layer in model.layers:
            outputs = layer(x)
            traced[layer.name] = (x, outputs)
            x = outputs
        return TracedModel(inputs=inputs, outputs=x, layers=traced)

    def call_and_record(layer, *args, **kwargs):
        if feed is not None:
            args = keras.tree.map_structure(lambda t: feed if t is flat_inputs[0] else t, args)
        outputs = layer(*args, **kwargs)
        traced[layer.name] = (args[0] if len(args) == 1 else args, outputs)
        return outputs

    clone = keras.models.clone_model(
        model, input_tensors=inputs, clone_function=lambda layer: layer, call_function=call_and_record
    )
    return TracedModel(inputs=inputs, outputs=clone.output, layers=traced)
