import numpy as np
import pytest
from PIL import Image

from inference.data import AugmentationConfig, DatasetError, augment, load_image_folder, stratified_split


def _folder(root, counts):
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (8, 8), (index * 20, 0, 0)).save(root / name / f"{index}.png")
    return root


def test_loads_one_label_per_class_folder(tmp_path):
    dataset = load_image_folder(_folder(tmp_path, {"B": 2, "A": 3}))
    assert dataset.classes == ["A", "B"]
    assert dataset.counts() == {"A": 3, "B": 2}


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="data folder not found"):
        load_image_folder(tmp_path / "nowhere")


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="no class folders"):
        load_image_folder(tmp_path)


def test_single_class_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="at least two classes"):
        load_image_folder(_folder(tmp_path, {"A": 3}))


def test_corrupt_images_are_skipped_and_listed_in_a_warning(tmp_path):
    _folder(tmp_path, {"A": 2, "B": 2})
    (tmp_path / "A" / "broken.jpg").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="broken.jpg"):
        dataset = load_image_folder(tmp_path)
    assert len(dataset) == 4
    assert [path.name for path, _ in dataset.skipped] == ["broken.jpg"]


def test_extra_folders_merge_by_class_name(tmp_path):
    first = _folder(tmp_path / "one", {"A": 1, "B": 1})
    second = _folder(tmp_path / "two", {"B": 2})
    assert load_image_folder([first, second]).counts() == {"A": 1, "B": 3}


def test_stratified_split_holds_out_every_class():
    labels = np.array([0] * 10 + [1] * 4)
    train, val = stratified_split(labels, fraction=0.2, seed=0)
    assert sorted(labels[val]) == [0, 0, 1]
    assert set(train).isdisjoint(val) and len(train) + len(val) == 14


def test_augment_is_reproducible_for_a_seed():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    config = AugmentationConfig()
    first = augment(image, rng=np.random.default_rng(3), config=config)
    second = augment(image, rng=np.random.default_rng(3), config=config)
    assert np.array_equal(np.asarray(first), np.asarray(second))
