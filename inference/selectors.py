"""Reads of the model registry."""

from __future__ import annotations

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
