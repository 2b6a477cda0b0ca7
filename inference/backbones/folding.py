"""Folding batch normalization into the convolution before it.

In inference a BatchNormalization after a convolution is an affine map per channel, so it can be
merged into that convolution's kernel and bias: the folded model computes the same function with
fewer layers (faster export and serving) and has no batch statistics left to disturb when it is
fine-tuned with small batches. Only top-level Conv2D/DepthwiseConv2D -> BatchNormalization pairs whose
convolution feeds nothing else are folded; batch norms inside nested models are left alone.
"""

from __future__ import annotations

import numpy as np

from .tracing import trace_layers

FOLDABLE_CONVOLUTIONS = ("Conv2D", "DepthwiseConv2D")


def _flat(structure) -> list:
    import keras

    return keras.tree.flatten(structure)


def foldable_pairs(model) -> dict[str, str]:
    """{convolution layer name: batch-norm layer name} for the pairs ``fold_batch_norm`` merges."""
    traced = trace_layers(model)
    producer = {}
    consumers: dict[str, int] = {}
    for name, (_, outputs) in traced.layers.items():
        for tensor in _flat(outputs):
            producer[id(tensor)] = name
    for inputs, _ in traced.layers.values():
        for tensor in _flat(inputs):
            source = producer.get(id(tensor))
            if source is not None:
                consumers[source] = consumers.get(source, 0) + 1
    output_producers = {producer.get(id(tensor)) for tensor in _flat(traced.outputs)}
    pairs = {}
    for name, (inputs, _) in traced.layers.items():
        layer = model.get_layer(name)
        if layer.__class__.__name__ != "BatchNormalization" or layer.axis not in (-1, 3):
            continue
        flat_inputs = _flat(inputs)
        source = producer.get(id(flat_inputs[0])) if len(flat_inputs) == 1 else None
        if source is None or consumers.get(source) != 1 or source in output_producers:
            continue
        convolution = model.get_layer(source)
        if convolution.__class__.__name__ in FOLDABLE_CONVOLUTIONS and convolution.data_format == "channels_last":
            pairs[source] = name
    return pairs


def folded_weights(convolution, batch_norm) -> list[np.ndarray]:
    """Kernel and bias of ``convolution`` followed by ``batch_norm`` (in inference mode)."""
    depthwise = convolution.__class__.__name__ == "DepthwiseConv2D"
    kernel = np.asarray(convolution.kernel, dtype=np.float64)
    channels = kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[3]
    bias = np.asarray(convolution.bias, dtype=np.float64) if convolution.use_bias else np.zeros(channels)
    gamma = np.asarray(batch_norm.gamma, dtype=np.float64) if batch_norm.scale else np.ones(channels)
    beta = np.asarray(batch_norm.beta, dtype=np.float64) if batch_norm.center else np.zeros(channels)
    mean = np.asarray(batch_norm.moving_mean, dtype=np.float64)
    variance = np.asarray(batch_norm.moving_variance, dtype=np.float64)
    factor = gamma / np.sqrt(variance + batch_norm.epsilon)
    # Depthwise kernels are [kh, kw, in, multiplier] and output channel in * multiplier + m.
    kernel = kernel * (factor.reshape(kernel.shape[2], kernel.shape[3]) if depthwise else factor)
    dtype = convolution.kernel.dtype
    return [kernel.astype(dtype), ((bias - mean) * factor + beta).astype(dtype)]


def fold_batch_norm(model):
    """A new functional model computing ``model``'s inference function with batch norms folded into the
    convolutions before them (those layers become Identity layers of the same name). Weights are copied;
    ``model`` is unchanged."""
    import keras

    if isinstance(model, keras.Sequential) or not hasattr(model, "input"):
        raise ValueError("fold_batch_norm needs a functional model")
    pairs = foldable_pairs(model)
    folded_norms = set(pairs.values())

    def clone(layer):
        if layer.name in pairs:
            return layer.__class__.from_config({**layer.get_config(), "use_bias": True})
        if layer.name in folded_norms:
            return keras.layers.Identity(name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    def call(layer, *args, **kwargs):
        if layer.name in folded_norms:
            return layer(args[0])  # the batch norm's training/mask arguments mean nothing to Identity
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in model.layers:
        target = folded.get_layer(layer.name)
        if layer.name in pairs:
            target.set_weights(folded_weights(layer, model.get_layer(pairs[layer.name])))
        elif layer.name not in folded_norms and layer.weights:
            target.set_weights(layer.get_weights())
    return folded
