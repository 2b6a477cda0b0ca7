"""Writes to the model registry: registering versions, activating one, installing the bundled model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import record

from .artifacts import read_model_metadata
from .models import ModelVersion
from .ood import OOD_STATISTICS_FILE
from .preprocessing import validate_preprocessing
from .runtimes import sha256_of_file

logger = logging.getLogger(__name__)


class BundledModelMissing(RuntimeError):
    pass


def register_version(
    *,
    name: str,
    source: str,
    backbone: str,
    classes: list[str],
    input_size: int,
    preprocessing: dict[str, Any],
    artifact_dir: str,
    serving_artifact: str,
    keras_artifact: str = "",
    confidence_threshold: float = 0.0,
    ood_threshold: float | None = None,
    temperature: float = 1.0,
    metrics: dict | None = None,
    training: dict | None = None,
    checksums: dict[str, str] | None = None,
    actor=None,
) -> ModelVersion:
    """Record a model whose files are already in place. Checksums of the artifact files are computed
    here unless given (the bundled model ships its own, so tampering is detected)."""
    if len(classes) < 2:
        raise ValueError(f"a classifier needs at least two classes, got {classes}")
    validate_preprocessing(preprocessing)
    if preprocessing["input_size"] != input_size:
        raise ValueError(f"input_size {input_size} differs from preprocessing {preprocessing['input_size']}")
    version = ModelVersion(
        name=name,
        source=source,
        backbone=backbone,
        classes=list(classes),
        input_size=input_size,
        preprocessing=dict(preprocessing),
        confidence_threshold=confidence_threshold,
        ood_threshold=ood_threshold,
        temperature=temperature,
        metrics=metrics or {},
        training=training or {},
        artifact_dir=artifact_dir,
        serving_artifact=serving_artifact,
        keras_artifact=keras_artifact,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    if checksums is None:
        from .registry import artifact_path

        files = [serving_artifact, keras_artifact]
        if ood_threshold is not None:
            files.append(OOD_STATISTICS_FILE)
        checksums = {}
        for filename in filter(None, files):
            path = artifact_path(version, filename)
            if not path.is_file():
                raise FileNotFoundError(f"model file missing: {path}")
            checksums[filename] = sha256_of_file(path)
    version.checksums = checksums
    version.save()
    logger.info("registered model version %s (%s, %s)", version.name, version.source, version.backbone)
    return version


def activate_version(version: ModelVersion, actor=None, *, request=None) -> ModelVersion:
    """Make this the one serving version; audited."""
    with transaction.atomic():
        previous = list(
            ModelVersion.objects.select_for_update()
            .filter(is_active=True)
            .exclude(pk=version.pk)
            .values_list("name", flat=True)
        )
        ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).update(is_active=False)
        version.is_active = True
        version.activated_at = timezone.now()
        version.save(update_fields=["is_active", "activated_at"])
        record(
            action=AuditEvent.Action.MODEL_ACTIVATED,
            actor=actor,
            obj=version,
            details={"name": version.name, "previous": previous},
            request=request,
        )
    logger.info("activated model version %s", version.name)
    return version


def register_from_metadata(
    *, metadata: dict[str, Any], source: str, artifact_dir: str, name: str | None = None, actor=None
) -> ModelVersion:
    return register_version(
        name=name or metadata["name"],
        source=source,
        backbone=metadata["backbone"],
        classes=metadata["classes"],
        input_size=metadata["input_size"],
        preprocessing=metadata["preprocessing"],
        artifact_dir=artifact_dir,
        serving_artifact=metadata["serving_artifact"],
        keras_artifact=metadata.get("keras_artifact", ""),
        confidence_threshold=metadata.get("confidence_threshold", 0.0),
        ood_threshold=metadata.get("ood_threshold"),
        temperature=metadata.get("temperature", 1.0),
        metrics=metadata.get("metrics", {}),
        training=metadata.get("training", {}),
        checksums=metadata.get("checksums"),
        actor=actor,
    )


def bundled_model_superseded(version: ModelVersion) -> bool:
    """True when `version` is a bundled model that a newer release of the platform replaced on disk
    (its files are gone, so it cannot serve any more)."""
    if version.source != ModelVersion.Source.BUNDLED:
        return False
    try:
        metadata = read_model_metadata(Path(settings.BUNDLED_MODEL_DIR))
    except FileNotFoundError:
        return False
    return metadata["name"] != version.name


def ensure_bundled_model() -> ModelVersion:
    """The active version. When there is none, or the active one is a bundled model that an upgrade
    replaced, register (once) and activate the bundled model now on disk. A trained or imported
    active version is never replaced."""
    active = ModelVersion.objects.filter(is_active=True).first()
    if active is not None and not bundled_model_superseded(active):
        return active
    directory = Path(settings.BUNDLED_MODEL_DIR)
    try:
        metadata = read_model_metadata(directory)
    except FileNotFoundError as exc:
        raise BundledModelMissing(f"the bundled model is not installed ({exc})") from exc
    if active is not None:
        logger.warning(
            "bundled model %s was replaced on disk by %s; activating the new one", active.name, metadata["name"]
        )
    try:
        with transaction.atomic():
            version = ModelVersion.objects.filter(name=metadata["name"]).first()
            if version is None:
                version = register_from_metadata(metadata=metadata, source=ModelVersion.Source.BUNDLED, artifact_dir="")
            return activate_version(version)
    except IntegrityError:
        # Another process activated a version at the same moment; serve that one.
        active = ModelVersion.objects.filter(is_active=True).first()
        if active is None:
            raise
        return active
