"""Finer Grad-CAM maps: an earlier feature map when the last one is coarse, and the colour map alone for a viewer."""

import numpy as np
import pytest
from PIL import Image

from inference.gradcam import FINE_MAP_MIN_SIDE, fine_feature_layer_name, heat_colors, heatmap_image

SIZE = 32


def strided_model(strides: int):
    """32 px input, `strides` stride-2 convolutions: the last feature map is 32 / 2**strides cells wide."""
    import keras
    from keras import layers

    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    for index in range(strides):
        x = layers.Conv2D(2, 3, strides=2, padding="same", activation="relu", name=f"conv{index}")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(2, activation="softmax")(x))


def test_a_coarse_last_map_is_replaced_by_the_deepest_map_at_least_the_minimum_side():
    assert FINE_MAP_MIN_SIDE == 8
    assert fine_feature_layer_name(strided_model(3)) == "conv1"  # 4x4 last map -> the 8x8 one


def test_a_last_map_that_is_fine_enough_is_kept():
    assert fine_feature_layer_name(strided_model(2)) is None  # 8x8 already


def test_heatmap_image_is_the_stretched_colour_map_at_the_image_size_and_transparent_outside_the_box():
    heat = np.array([[0.6, 0.7], [0.8, 0.9]])  # high everywhere: stretched so its range spans the colour scale
    picture = heatmap_image((40, 30), heat, box=(5, 0, 35, 30))
    assert picture.mode == "RGBA" and picture.size == (40, 30)
    pixels = np.asarray(picture)
    assert (pixels[:, :5, 3] == 0).all() and (pixels[:, 35:, 3] == 0).all() and (pixels[:, 5:35, 3] == 255).all()
    assert tuple(pixels[0, 5, :3]) == tuple(heat_colors(np.array([0.0]))[0])  # the minimum is blue
    assert tuple(pixels[29, 34, :3]) == tuple(heat_colors(np.array([1.0]))[0])  # the maximum is dark red


@pytest.mark.parametrize("value", [0.0, 0.5])
def test_a_flat_heatmap_shows_no_evidence(value):
    pixels = np.asarray(heatmap_image((8, 8), np.full((2, 2), value)))
    assert (pixels[..., :3] == heat_colors(np.zeros(1))[0]).all()


def test_heatmap_image_accepts_an_image_size_tuple_from_pil():
    image = Image.new("RGB", (12, 9))
    assert heatmap_image(image.size, np.eye(3)).size == (12, 9)
