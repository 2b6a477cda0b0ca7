import numpy as np
import pytest
from django.conf import settings
from PIL import Image

from inference.gradcam import GradCamUnavailable, gradcam_heatmap, gradcam_overlay, overlay_heatmap
from inference.preprocessing import make_preprocessing
from tests.factories import ModelVersionFactory

SIZE = 32
CLASSES = ["STRUCTURE", "BLANK"]


def structure_detector(*, named_outputs: bool):
    """A classifier whose evidence for class 0 is bright pixels: a 3x3 all-ones filter (ReLU), global
    average pooling, and a dense layer with weight +1 for class 0 and -1 for class 1."""
    import keras
    from keras import layers

    inputs = keras.Input((SIZE, SIZE, 3))
    maps = layers.Conv2D(1, 3, strides=2, padding="same", activation="relu", name="evidence")(inputs)
    pooled = layers.GlobalAveragePooling2D(name="features")(maps)
    dense = layers.Dense(2, activation=None if named_outputs else "softmax", name="logits")
    scores = dense(pooled)
    model = keras.Model(inputs, {"logits": scores, "features": pooled} if named_outputs else scores)
    model.get_layer("evidence").set_weights([np.ones((3, 3, 3, 1), "float32"), np.zeros(1, "float32")])
    dense.set_weights([np.array([[1.0, -1.0]], "float32"), np.zeros(2, "float32")])
    return model


def top_left_square(size: int = SIZE) -> np.ndarray:
    array = np.zeros((size, size, 3), dtype=np.float32)
    array[2 : size // 2 - 4, 3 : size // 2 - 3] = 1.0
    return array


def quadrant_means(heatmap: np.ndarray) -> np.ndarray:
    h, w = heatmap.shape[0] // 2, heatmap.shape[1] // 2
    return np.array([heatmap[:h, :w].mean(), heatmap[:h, w:].mean(), heatmap[h:, :w].mean(), heatmap[h:, w:].mean()])


@pytest.fixture(scope="module")
def detector():
    return structure_detector(named_outputs=False)


def test_heatmap_has_the_feature_map_shape_and_unit_range():
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    image = np.random.default_rng(0).uniform(0, 1, (SIZE, SIZE, 3)).astype("float32")
    heatmap = gradcam_heatmap(model, image, class_index=2)
    assert heatmap.shape == (SIZE // 2, SIZE // 2)
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0


def test_heatmap_peaks_where_the_evidence_is(detector):
    heatmap = gradcam_heatmap(detector, top_left_square(), class_index=0)
    assert np.argmax(quadrant_means(heatmap)) == 0
    peak_row, peak_col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert peak_row < SIZE // 4 and peak_col < SIZE // 4
    assert heatmap.max() == pytest.approx(1.0)


def test_heatmap_of_a_classifier_calling_a_nested_backbone_peaks_where_the_evidence_is():
    import keras

    detector = structure_detector(named_outputs=False)
    backbone = keras.Model(detector.inputs, detector.get_layer("evidence").output, name="backbone")
    classifier = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), backbone, keras.layers.GlobalAveragePooling2D(), detector.get_layer("logits")]
    )
    heatmap = gradcam_heatmap(classifier, top_left_square(), class_index=0)
    assert heatmap.shape == (SIZE // 2, SIZE // 2)
    assert np.argmax(quadrant_means(heatmap)) == 0


def test_heatmap_is_empty_for_the_class_the_evidence_argues_against(detector):
    heatmap = gradcam_heatmap(detector, top_left_square(), class_index=1)
    assert np.all(heatmap == 0.0)


def test_heatmap_rejects_a_class_index_out_of_range(detector):
    with pytest.raises(ValueError, match="out of range"):
        gradcam_heatmap(detector, top_left_square(), class_index=2)


def test_overlay_keeps_the_image_size_and_colours_only_the_hot_region():
    image = Image.new("RGB", (40, 30), (128, 128, 128))
    heatmap = np.zeros((4, 4))
    heatmap[0, 0] = 1.0
    overlaid = np.asarray(overlay_heatmap(image, heatmap), dtype=int)
    assert overlaid.shape == (30, 40, 3)
    assert np.abs(overlaid[1, 1] - 128).sum() > 50
    assert np.all(overlaid[25, 35] == 128)


@pytest.fixture
def keras_version(db):
    model = structure_detector(named_outputs=True)
    version = ModelVersionFactory(
        classes=CLASSES,
        input_size=SIZE,
        preprocessing=make_preprocessing(input_size=SIZE, scale="raw", crop="center_square"),
        keras_artifact="model.keras",
        serving_artifact="model.tflite",
    )
    directory = settings.MODEL_STORE_DIR / version.artifact_dir
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras")
    return version


def test_gradcam_overlay_of_a_version_marks_the_structure_at_the_image_size(keras_version):
    # 48x32 image: preprocessing crops the centred 32x32 square (columns 8..40), which the overlay maps back.
    pixels = np.zeros((32, 48, 3), dtype=np.uint8)
    pixels[4:12, 10:18] = 255
    image = Image.fromarray(pixels)
    overlaid = gradcam_overlay(image, class_name="STRUCTURE", version=keras_version)
    assert overlaid.size == image.size
    change = np.abs(np.asarray(overlaid, dtype=int) - pixels).sum(axis=2)
    assert change[2:14, 8:20].mean() > 10 * max(change[20:, 28:].mean(), 1.0)


def test_gradcam_overlay_defaults_to_the_predicted_class(keras_version):
    pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    pixels[20:28, 20:28] = 255
    overlaid = np.asarray(gradcam_overlay(Image.fromarray(pixels), version=keras_version), dtype=int)
    assert np.abs(overlaid - pixels).sum(axis=2)[18:30, 18:30].mean() > 20


def test_gradcam_overlay_rejects_an_unknown_class(keras_version):
    with pytest.raises(ValueError, match="not a class"):
        gradcam_overlay(Image.new("RGB", (SIZE, SIZE)), class_name="PLATELET", version=keras_version)


@pytest.mark.django_db
def test_gradcam_overlay_needs_a_keras_artifact():
    version = ModelVersionFactory(keras_artifact="")
    with pytest.raises(GradCamUnavailable, match="no Keras model file"):
        gradcam_overlay(Image.new("RGB", (SIZE, SIZE)), version=version)


@pytest.mark.django_db
def test_gradcam_overlay_refuses_a_modified_keras_file(keras_version):
    keras_version.checksums = {"model.keras": "0" * 64}
    keras_version.save()
    with pytest.raises(GradCamUnavailable, match="checksum mismatch"):
        gradcam_overlay(Image.new("RGB", (SIZE, SIZE)), version=keras_version)
