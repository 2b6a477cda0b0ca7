"""Which model version serves, and where its files are."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from .models import ModelVersion


def artifact_path(version: ModelVersion, filename: str) -> Path:
    base = settings.BUNDLED_MODEL_DIR if version.source == ModelVersion.Source.BUNDLED else settings.MODEL_STORE_DIR
    return Path(base) / version.artifact_dir / filename


def get_active_version() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()


def active_model_status() -> tuple[bool, str]:
    version = get_active_version()
    if version is None:
        return False, "no active model version"
    path = artifact_path(version, version.serving_artifact)
    if not path.is_file():
        return False, f"model file missing: {path}"
    return True, f"{version.name} ({path.name})"
