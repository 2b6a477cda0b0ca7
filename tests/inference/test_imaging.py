"""The imaging profile: acquisition statistics per window, per-laboratory fit, the model-folder artifact and
the `unfamiliar_imaging` flag through the upload path."""

from __future__ import annotations

import io
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image, ImageFilter

from inference.imaging import (
    FEATURE_NAMES,
    UNFAMILIAR_IMAGING,
    ImagingProfile,
    LaboratoryWindows,
    fit_imaging_profile,
    imaging_profile,
    serving_profile,
    unfamiliar_windows,
    write_imaging_profile,
)
from inference.model_folder import IMAGING_PROFILE_FILE, IMAGING_PROFILE_KEY, read_model_metadata
from inference.predictor import ModelUnavailable, Predictor, reset_predictor
from inference.runtimes import sha256_of_file
from inference.services import activate_version, register_from_metadata
from inference.testing import synthetic_cell_image

N_CLASSES = 3


def tinted(image: Image.Image, gains: tuple[float, float, float]) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64) * np.asarray(gains)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def lab_a(seed: int) -> Image.Image:
    """One laboratory: the synthetic cells as drawn (sharp, pinkish background)."""
    return synthetic_cell_image(seed % N_CLASSES, N_CLASSES, size=64, seed=seed)


def lab_b(seed: int) -> Image.Image:
    """Another: the same cells bluer and slightly out of focus."""
    return tinted(lab_a(seed), (0.9, 0.95, 1.05)).filter(ImageFilter.GaussianBlur(1.2))


# A third microscope the profile never saw: a strong green cast.
def unseen(image: Image.Image) -> Image.Image:
    return tinted(image, (0.75, 1.0, 0.7))


def write_windows(directory: Path, make, seeds) -> Path:
    for seed in seeds:
        folder = directory / f"CLASS{seed % N_CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        make(seed).save(folder / f"{seed}.png")
    return directory


@pytest.fixture(scope="module")
def two_labs(tmp_path_factory) -> list[LaboratoryWindows]:
    root = tmp_path_factory.mktemp("labs")
    return [
        LaboratoryWindows(
            "a", (write_windows(root / "a" / "train", lab_a, range(0, 120)),),
            (write_windows(root / "a" / "val", lab_a, range(1000, 1060)),),
        ),
        # No validation split: a share of the training windows is held out for the threshold.
        LaboratoryWindows("b", (write_windows(root / "b" / "train", lab_b, range(2000, 2120)),)),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def fitted(two_labs):
    return fit_imaging_profile(two_labs, per_lab=100, quantile=0.995, log=lambda message: None)


def test_the_profile_is_a_small_finite_vector_of_any_window():
    for window in (lab_a(1), lab_a(1).resize((300, 300)), Image.new("RGB", (40, 40), (255, 255, 255))):
        profile = imaging_profile(window)
        assert profile.shape == (len(FEATURE_NAMES),) and np.all(np.isfinite(profile))


def test_a_colour_shifted_copy_is_flagged_and_the_window_itself_is_not(fitted):
    profile = fitted.profile
    for seed in (5000, 5001, 5002):
        window = lab_a(seed)
        assert profile.unfamiliar([window, unseen(window), lab_b(seed)]) == [False, True, False]


def test_the_threshold_flags_about_the_chosen_share_of_validation_windows(fitted):
    assert fitted.profile.laboratories == ("a", "b")
    assert fitted.summary["a"]["validation"] == 60 and fitted.summary["b"]["validation"] == 25
    assert fitted.summary["b"]["fitted"] == 75
    shares = [fitted.summary[name]["validation_flagged"] for name in ("a", "b")]
    assert 0.0 <= min(shares) and max(shares) <= 0.05


@pytest.mark.slow
def test_fitting_round_trip_through_a_model_folder(fitted, tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(Path(settings.MODEL_STORE_DIR) / tiny_model.artifact_dir, folder)
    write_imaging_profile(folder, fitted, quantile=0.995)
    metadata = read_model_metadata(folder)
    assert metadata[IMAGING_PROFILE_KEY]["threshold"] == pytest.approx(fitted.profile.threshold)
    assert metadata["checksums"][IMAGING_PROFILE_FILE] == sha256_of_file(folder / IMAGING_PROFILE_FILE)
    loaded = ImagingProfile.load(folder / IMAGING_PROFILE_FILE)
    windows = [lab_a(7000), unseen(lab_a(7000)), lab_b(7001)]
    np.testing.assert_allclose(loaded.scores(windows), fitted.profile.scores(windows))
    assert loaded.threshold == fitted.profile.threshold and loaded.laboratories == ("a", "b")


@pytest.mark.slow
def test_a_plain_output_folder_is_attached_to_a_model_folder(fitted, tiny_model, tmp_path):
    write_imaging_profile(tmp_path / "plain", fitted, quantile=0.99)
    folder = tmp_path / "model"
    shutil.copytree(Path(settings.MODEL_STORE_DIR) / tiny_model.artifact_dir, folder)
    assert IMAGING_PROFILE_KEY not in read_model_metadata(folder)
    call_command(
        "fit_imaging_profile", "--model-dir", str(folder), "--attach", str(tmp_path / "plain"), stdout=io.StringIO()
    )
    metadata = read_model_metadata(folder)
    assert metadata[IMAGING_PROFILE_KEY]["quantile"] == 0.99
    assert metadata["checksums"][IMAGING_PROFILE_FILE] == sha256_of_file(folder / IMAGING_PROFILE_FILE)


@pytest.mark.slow
def test_a_model_without_the_profile_flags_nothing(tiny_model):
    predictor = Predictor(tiny_model)
    assert serving_profile(predictor) is None
    assert unfamiliar_windows(predictor, [unseen(lab_a(1)), lab_a(2)]) == [False, False]


def version_with_profile(tiny_model, fitted):
    """A registered, active copy of the tiny model whose folder carries the fitted profile."""
    name = f"imaging-{uuid.uuid4().hex[:8]}"
    folder = Path(settings.MODEL_STORE_DIR) / name
    shutil.copytree(Path(settings.MODEL_STORE_DIR) / tiny_model.artifact_dir, folder)
    write_imaging_profile(folder, fitted, quantile=0.995)
    version = register_from_metadata(
        metadata=read_model_metadata(folder), source="trained", artifact_dir=name, name=name
    )
    activate_version(version)
    reset_predictor()
    return version


@pytest.mark.slow
def test_classify_json_shows_the_code(fitted, tiny_model, tmp_path):
    version = version_with_profile(tiny_model, fitted)
    assert IMAGING_PROFILE_FILE in version.checksums
    lab_a(8000).save(tmp_path / "familiar.png")
    unseen(lab_a(8000)).save(tmp_path / "unfamiliar.png")
    out = io.StringIO()
    call_command(
        "classify", str(tmp_path / "familiar.png"), str(tmp_path / "unfamiliar.png"), "--format", "json", stdout=out
    )
    rows = {Path(row["path"]).name: row for row in json.loads(out.getvalue())["predictions"]}
    familiar, unfamiliar = rows["familiar.png"], rows["unfamiliar.png"]
    assert UNFAMILIAR_IMAGING in unfamiliar["flag_reasons"] and unfamiliar["flagged"] is True
    assert UNFAMILIAR_IMAGING not in familiar["flag_reasons"]
    assert set(unfamiliar) == set(familiar)  # the JSON keeps its keys; only the codes differ
    reset_predictor()


@pytest.mark.slow
def test_the_profile_is_loaded_once_per_predictor_and_checked(fitted, tiny_model):
    version = version_with_profile(tiny_model, fitted)
    predictor = Predictor(version)
    assert serving_profile(predictor) is serving_profile(predictor)
    damaged = Predictor(version)
    path = Path(settings.MODEL_STORE_DIR) / version.artifact_dir / IMAGING_PROFILE_FILE
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelUnavailable, match="checksum mismatch"):
        serving_profile(damaged)
    reset_predictor()


@pytest.mark.slow
def test_the_command_fits_a_datasets_root_into_a_model_folder(tiny_model, tmp_path):
    root = tmp_path / "datasets"
    write_windows(root / "pbc" / "train", lab_a, range(0, 40))
    write_windows(root / "pbc" / "val", lab_a, range(100, 130))
    write_windows(root / "lisc" / "train", lab_b, range(200, 240))
    folder = tmp_path / "model"
    shutil.copytree(Path(settings.MODEL_STORE_DIR) / tiny_model.artifact_dir, folder)
    out = io.StringIO()
    call_command(
        "fit_imaging_profile", "--model-dir", str(folder), "--data-root", str(root), "--without", "olympus",
        "--per-lab", "30", stdout=out,
    )  # fmt: skip
    assert "imaging profile of pbc, lisc written" in out.getvalue()
    assert ImagingProfile.load(folder / IMAGING_PROFILE_FILE).laboratories == ("pbc", "lisc")
    assert read_model_metadata(folder)[IMAGING_PROFILE_KEY]["windows"]["pbc"]["fitted"] == 30
    with pytest.raises(CommandError, match="either --model-dir"):
        call_command("fit_imaging_profile", "--data-root", str(root), stdout=io.StringIO())
