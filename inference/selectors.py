"""Reads of the model registry."""

from __future__ import annotations

from pathlib import Path

from .artifacts import read_model_metadata
from .models import ModelVersion
from .registry import get_active_version


def model_versions() -> list[ModelVersion]:
    return list(ModelVersion.objects.order_by("-created_at"))


def find_version(*, name_or_id: str | None) -> ModelVersion | None:
    """A version by name or primary key; the active one when none is named."""
    if not name_or_id:
        return get_active_version()
    version = ModelVersion.objects.filter(name=name_or_id).first()
    if version is None and str(name_or_id).isdigit():
        version = ModelVersion.objects.filter(pk=int(name_or_id)).first()
    return version


def version_from_directory(directory: Path) -> ModelVersion:
    """An unsaved ModelVersion for a model folder that is not registered (a training output, the bundled
    model before installation); its absolute artifact_dir makes registry.artifact_path point into it."""
    metadata = read_model_metadata(directory)
    return ModelVersion(
        name=metadata["name"],
        source=ModelVersion.Source.TRAINED,
        backbone=metadata["backbone"],
        classes=metadata["classes"],
        input_size=metadata["input_size"],
        preprocessing=metadata["preprocessing"],
        confidence_threshold=metadata.get("confidence_threshold", 0.0),
        ood_threshold=metadata.get("ood_threshold"),
        temperature=metadata.get("temperature", 1.0),
        metrics=metadata.get("metrics", {}),
        training=metadata.get("training", {}),
        artifact_dir=str(Path(directory).resolve()),
        serving_artifact=metadata["serving_artifact"],
        keras_artifact=metadata.get("keras_artifact", ""),
        checksums=metadata.get("checksums", {}),
    )
