"""The embedded default's var/ folders (database, encrypted images, models) are readable by their owner only."""

import os
import stat
import subprocess
import sys
from pathlib import Path

from django.conf import settings

from cases import storage


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_embedded_default_creates_its_var_folders_mode_700(tmp_path):
    var = tmp_path / "deep" / "var"
    env = {**os.environ, "HEMATOVISION_VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "hematovision.settings.local"}
    env.pop("PRIVATE_MEDIA_ROOT", None)
    env.pop("MODEL_STORE_DIR", None)
    subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=settings.BASE_DIR,
        env=env,
        check=True,
        timeout=120,
    )

    for folder in (var, var / "private", var / "models"):
        assert folder.is_dir(), folder
        assert mode(folder) == 0o700, f"{folder} is {oct(mode(folder))}"


def test_an_existing_var_folder_is_tightened_to_700(tmp_path):
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    os.chmod(var, 0o755)  # noqa: S103 - the loose folder the setting must tighten
    env = {**os.environ, "HEMATOVISION_VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "hematovision.settings.local"}
    subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=settings.BASE_DIR, env=env, check=True)

    assert mode(var) == 0o700


def test_the_image_store_creates_its_folders_mode_700(settings, tmp_path):
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "a" / "private"

    key = storage.save(b"cell")

    root = Path(settings.PRIVATE_MEDIA_ROOT)
    assert mode(root) == 0o700
    assert mode((root / key).parent) == 0o700
    assert mode(root / key) == 0o600
