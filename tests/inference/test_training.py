import json

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


@pytest.mark.slow
def test_weight_average_ends_training_with_the_averaged_weights(db, tmp_path):
    import keras

    data = _dataset(tmp_path / "data")

    def head_after_training(*average):
        output = tmp_path / f"out{len(average)}"
        call_command(
            "train", "--data", str(data), "--weights", "none", "--input-size", "32", "--whole-network-size", "32",
            "--views", "1", "--epochs", "2", "--batch-size", "4", "--learning-rate", "0.01", "--val-fraction", "0.25",
            "--no-register", "--output", str(output), "--quiet-progress", *average,
        )  # fmt: skip
        model = keras.models.load_model(output / "model.keras", compile=False)
        return float(np.abs(model.get_layer("logits").get_weights()[0]).max()), output

    trained, _ = head_after_training()
    # An average that barely moves stays at the first step's weights: the zero head has hardly left zero.
    averaged, output = head_after_training("--weight-average", "0.9999999")
    assert averaged < trained / 10
    config = json.loads((output / "metadata.json").read_text())["training"]["config"]
    assert config["weight_average_momentum"] == 0.9999999


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


# --- the recipe registry -------------------------------------------------------------------------------------


def _multilab_root(root, *, fields_per_class=2):
    """A tiny datasets root as the multilab recipes read it: PBC class folders with train/val, LISC
    training windows, and olympus fields in the manifest layout (one boxed leukocyte per field)."""
    from tests.inference.smears import smear

    classes = ["LYMPHOCYTE", "NEUTROPHIL", "PLATELET"]
    for split, per_class in (("train", 6), ("val", 2)):
        for index, name in enumerate(classes):
            folder = root / "pbc" / split / name
            folder.mkdir(parents=True)
            for seed in range(per_class):
                synthetic_cell_image(index, 3, size=40, seed=100 * index + seed).save(folder / f"{split}{seed}.jpg")
    for index, name in enumerate(classes[:2]):
        folder = root / "lisc" / "train" / name
        folder.mkdir(parents=True)
        for seed in range(3):
            synthetic_cell_image(index, 3, size=40, seed=500 + seed).save(folder / f"{seed}.png")
    olympus = root / "olympus"
    manifest = ["split,label,path,boxes"]
    boxes = ["path,class,xmin,ymin,xmax,ymax"]
    number = 0
    for split in ("train", "val"):
        (olympus / "images" / split).mkdir(parents=True)
        for label in classes[:2]:
            for _ in range(fields_per_class):
                image, (box,) = smear(leukocytes=[(300 + 7 * number, 220)], red_cells=40, seed=number)
                relative = f"images/{split}/{number:05d}.jpg"
                image.save(olympus / relative, quality=92)
                manifest.append(f"{split},{label},{relative},1")
                boxes.append(f"{relative},WBC,{box[0]},{box[1]},{box[2]},{box[3]}")
                number += 1
    (olympus / "MANIFEST.csv").write_text("\n".join(manifest) + "\n")
    (olympus / "BOXES.csv").write_text("\n".join(boxes) + "\n")
    return root


def test_the_registry_lists_every_recipe():
    from inference.recipes import available_recipes, get_recipe

    assert {"frozen-head", "whole-network", "multilab", "multilab-no-olympus"} <= set(available_recipes())
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        get_recipe("nope")


@pytest.mark.parametrize("name", ["frozen-head", "whole-network", "multilab", "multilab-no-olympus"])
def test_each_recipes_config_round_trips_through_metadata_json(name):
    import json

    from inference.recipes import get_recipe

    recipe = get_recipe(name)
    config = recipe.config(seed=7, batch_size=16)
    saved = json.loads(json.dumps(config.to_json()))  # as metadata.json stores it
    assert recipe.config_class.from_json(saved) == config
    assert recipe.config_class.from_json(saved) != recipe.config()  # the fields really travel


def test_the_multilab_recipes_defaults_are_the_bundled_models_training_config(settings):
    import json
    from pathlib import Path

    from inference.data import MULTILAB_STYLE_MIX_AUGMENTATION
    from inference.recipes import get_recipe

    bundled = json.loads((Path(settings.BUNDLED_MODEL_DIR) / "metadata.json").read_text())["training"]["config"]
    recipe = get_recipe("multilab")
    config = recipe.config()
    assert recipe.config_class.from_json(bundled, strict=False) == config
    assert (config.whole_network_size, config.views, config.finetune_epochs, config.patience) == (128, 2, 5, 3)
    assert config.augmentation == MULTILAB_STYLE_MIX_AUGMENTATION and config.without == ()
    assert get_recipe("multilab-no-olympus").config().without == ("olympus",)
    # Trained by the recipe itself (`manage.py train --recipe multilab`): no setting the recipe does not know.
    assert recipe.config_class.from_json(bundled) == config
    with pytest.raises(ValueError, match="finetune_from, head_epochs"):
        recipe.config_class.from_json({**bundled, "finetune_from": "all", "head_epochs": 40})


def test_the_multilab_recipe_writes_the_bundled_models_preprocessing(settings):
    """Training the recipe again gives the serving preprocessing the bundled model has, test-time flip skipping
    included (it was first added to the bundled metadata by hand)."""
    import json
    from pathlib import Path

    from inference.preprocessing import make_preprocessing
    from inference.recipes import get_recipe

    bundled = json.loads((Path(settings.BUNDLED_MODEL_DIR) / "metadata.json").read_text())["preprocessing"]
    written = get_recipe("multilab").config().serving_preprocessing()
    assert written == bundled
    assert "flip_skip_confidence" not in make_preprocessing(input_size=224, test_time_flips="horizontal")


def test_multilab_data_reads_the_three_laboratories_and_leaves_one_out(tmp_path):
    from inference.recipes import get_recipe, multilab_data

    root = _multilab_root(tmp_path / "datasets", fields_per_class=1)
    data = multilab_data(get_recipe("multilab").config(), data_root=root, cache_dir=tmp_path / "cache")
    assert data.train_names == ["pbc/train", "olympus/train (cell windows, x3)", "lisc/train (x2)"]
    assert data.val_name == "pbc/val + olympus/val (cell windows)"
    windows = data.train_dirs[1]
    assert data.train_dirs[1:4] == [windows] * 3 and data.train_dirs[4:] == [root / "lisc" / "train"] * 2
    assert sorted(p.parent.name for p in windows.rglob("*.png")) == ["LYMPHOCYTE", "NEUTROPHIL"]
    left_out = multilab_data(get_recipe("multilab-no-olympus").config(), data_root=root, cache_dir=tmp_path / "c2")
    assert left_out.train_names == ["pbc/train", "lisc/train (x2)"] and left_out.val_dirs == [root / "pbc" / "val"]
    assert not (tmp_path / "c2").exists()


@pytest.mark.slow
def test_train_recipe_multilab_runs_end_to_end_on_a_tiny_data_root(db, tmp_path, settings):
    from inference.recipes import MultilabConfig

    settings.MODEL_STORE_DIR = tmp_path / "store"
    root = _multilab_root(tmp_path / "datasets")
    call_command(
        "train",
        "--recipe", "multilab",
        "--data-root", str(root),
        "--weights", "none",
        "--input-size", "32",
        "--whole-network-size", "32",
        "--epochs", "1",
        "--batch-size", "8",
        "--name", "tiny-multilab",
        "--cache-dir", str(tmp_path / "cache"),
        "--quiet-progress",
    )  # fmt: skip
    version = ModelVersion.objects.get(name="tiny-multilab")
    training = version.training
    assert training["recipe"] == "multilab" and training["finetune_epochs_run"] == 1
    assert training["train_dirs"] == ["pbc/train", "olympus/train (cell windows, x3)", "lisc/train (x2)"]
    assert training["val_dir"] == "pbc/val + olympus/val (cell windows)"
    # 6 PBC + 2 olympus cells x3 + 3 LISC windows x2 for each of LYMPHOCYTE and NEUTROPHIL; PBC alone for PLATELET.
    assert training["train_counts"] == {"LYMPHOCYTE": 18, "NEUTROPHIL": 18, "PLATELET": 6}
    assert training["val_counts"] == {"LYMPHOCYTE": 4, "NEUTROPHIL": 4, "PLATELET": 2}
    config = MultilabConfig.from_json(training["config"])
    assert config == MultilabConfig(weights=None, input_size=32, whole_network_size=32, finetune_epochs=1, batch_size=8)
    assert set(version.checksums) == {"model.tflite", "model.keras", "ood.npz"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--recipe", "whole-network", "--finetune-from", "block11"], "--finetune-from does nothing with recipe whole"),
        (["--whole-network-size", "64", "--head-epochs", "3"], "--head-epochs does nothing with recipe whole-network"),
        (["--recipe", "whole-network", "--cache-dir", "c"], "--cache-dir does nothing with recipe whole-network"),
        (["--recipe", "frozen-head", "--whole-network-size", "64"], "--whole-network-size does nothing"),
        (["--recipe", "frozen-head", "--weight-average", "0.999"], "--weight-average does nothing with recipe frozen"),
        (["--without", "lisc"], "--without does nothing with recipe frozen-head"),
        (["--olympus-repeat", "1"], "--olympus-repeat does nothing with recipe frozen-head"),
        (["--val-data", "v", "--val-fraction", "0.2"], "--val-fraction does nothing with --val-data"),
        (["--data-root", "r"], "--data-root does nothing with recipe frozen-head"),
    ],
)
def test_train_rejects_an_option_that_does_nothing_on_the_chosen_recipe(db, tmp_path, arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("train", "--data", str(tmp_path), "--no-register", *arguments)
    assert not list(tmp_path.iterdir())  # refused before any work


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--data", "d"], "--data does nothing with recipe multilab"),
        (["--val-data", "v"], "--val-data does nothing with recipe multilab"),
        (["--head-epochs", "3"], "--head-epochs does nothing with recipe multilab"),
        (["--val-fraction", "0.2"], "--val-fraction does nothing with recipe multilab"),
        (["--without", "lisc", "--lisc-repeat", "1"], "--lisc-repeat does nothing with recipe multilab: lisc is left"),
    ],
)
def test_train_multilab_rejects_folder_options(db, tmp_path, arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("train", "--recipe", "multilab", "--data-root", str(tmp_path), "--no-register", *arguments)


def test_train_multilab_takes_each_laboratorys_repeat_from_the_command_line(tmp_path):
    from inference.management.commands.train import Command

    command = Command()
    parser = command.create_parser("manage.py", "train")
    typed = ["--recipe", "multilab", "--data-root", str(tmp_path), "--olympus-repeat", "1", "--lisc-repeat", "4"]
    _, config = command._recipe_and_config(vars(parser.parse_args(typed)))
    assert (config.olympus_repeat, config.lisc_repeat) == (1, 4)
    _, default = command._recipe_and_config(vars(parser.parse_args(typed[:4])))
    assert (default.olympus_repeat, default.lisc_repeat) == (3, 2)


def test_train_multilab_without_olympus_caches_nothing(db, tmp_path):
    with pytest.raises(CommandError, match="--cache-dir does nothing with recipe multilab-no-olympus"):
        call_command(
            "train", "--recipe", "multilab-no-olympus", "--data-root", str(tmp_path), "--cache-dir", "c",
            "--no-register",
        )  # fmt: skip


def test_train_multilab_needs_a_data_root(db):
    with pytest.raises(CommandError, match="recipe multilab needs --data-root"):
        call_command("train", "--recipe", "multilab", "--no-register")


def test_train_py_and_whole_network_py_do_not_import_each_other():
    from pathlib import Path

    import inference

    package = Path(inference.__file__).parent
    training = (package / "training.py").read_text()
    assert "from .whole_network" not in training and "from .frozen_head" not in training
    for module in ("whole_network.py", "frozen_head.py", "training_common.py"):
        text = (package / module).read_text()
        assert "from .training import" not in text and "from .recipes" not in text
    assert "from .whole_network" not in (package / "frozen_head.py").read_text()
    assert "from .frozen_head" not in (package / "whole_network.py").read_text()


def test_the_legacy_training_config_maps_to_its_recipe():
    from inference.frozen_head import FrozenHeadConfig
    from inference.training import TrainingConfig, recipe_config
    from inference.whole_network import WholeNetworkConfig

    name, config = recipe_config(TrainingConfig(whole_network_size=96, views=2, finetune_from="all", seed=3))
    assert name == "whole-network" and config == WholeNetworkConfig(whole_network_size=96, views=2, seed=3)
    name, config = recipe_config(TrainingConfig(finetune_from="block13", head_epochs=5))
    assert name == "frozen-head" and config == FrozenHeadConfig(finetune_from="block13", head_epochs=5)


@pytest.mark.slow
def test_the_legacy_train_function_still_trains_through_the_registry(tmp_path):
    """Scripts call ``inference.training.train(train_dirs=..., val_dir=..., config=TrainingConfig(...))``."""
    from inference.data import MULTILAB_AUGMENTATION
    from inference.training import TrainingConfig, train

    data = _dataset(tmp_path / "data")
    config = TrainingConfig(
        weights=None, input_size=32, whole_network_size=32, views=1, finetune_epochs=1, finetune_from="all",
        augmentation=MULTILAB_AUGMENTATION,
    )  # fmt: skip
    result = train(
        train_dirs=[data, data], val_dir=data, output_dir=tmp_path / "out", name="legacy", config=config,
        cache_dir=tmp_path / "cache", log=lambda message: None,
    )  # fmt: skip
    training = result.metadata["training"]
    assert training["recipe"] == "whole-network" and training["train_dirs"] == [str(data), str(data)]
    assert training["val_dir"] == str(data) and training["train_counts"]["PLATELET"] == 16
    assert training["config"]["whole_network_size"] == 32 and "finetune_from" not in training["config"]
    assert (tmp_path / "out" / "metadata.json").is_file() and not (tmp_path / "cache").exists()
