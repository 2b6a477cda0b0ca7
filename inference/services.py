"""Writes to the model registry: registering versions, activating one, installing the bundled model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext

from audit.models import AuditEvent
from audit.services import record

from .model_folder import IMAGING_PROFILE_FILE, artifact_files, read_model_metadata, version_fields
from .models import ModelEvaluation, ModelVersion
from .preprocessing import validate_preprocessing
from .runtimes import sha256_of_file

logger = logging.getLogger(__name__)

# Audit actions of the activation gate and of adaptation (plain strings, as cases' laboratory actions:
# AuditEvent.action's choices are not enforced by the database).
MODEL_ROLLED_BACK = "model_rolled_back"
MODEL_EVALUATED = "model_evaluated"
MODEL_ADAPTATION = "model_adaptation"
MODEL_SHADOW_STARTED = "model_shadow_started"
MODEL_SHADOW_STOPPED = "model_shadow_stopped"


class BundledModelMissing(RuntimeError):
    pass


class ActivationRefused(Exception):
    """The gate: a version without a recorded evaluation (or nothing to roll back to)."""


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

        checksums = {}
        files = artifact_files(
            serving_artifact=serving_artifact,
            keras_artifact=keras_artifact,
            ood_threshold=ood_threshold,
            imaging_profile=artifact_path(version, IMAGING_PROFILE_FILE).is_file(),
        )
        for filename in files:
            path = artifact_path(version, filename)
            if not path.is_file():
                raise FileNotFoundError(f"model file missing: {path}")
            checksums[filename] = sha256_of_file(path)
    version.checksums = checksums
    version.save()
    logger.info("registered model version %s (%s, %s)", version.name, version.source, version.backbone)
    return version


def activate_version(
    version: ModelVersion, actor=None, *, request=None, require_evaluation: bool = False, forced_reason: str = ""
) -> ModelVersion:
    """Make this the one serving version; audited. Pages and the API pass `require_evaluation` (the gate:
    a version without a recorded evaluation is refused); the command line may force it with a reason."""
    if require_evaluation and not is_evaluated(version):
        raise ActivationRefused(
            gettext(
                "%(name)s has no recorded evaluation: evaluate it (manage.py evaluate --model %(name)s "
                "--data DIR --record, or adapt it from the page) before activating it"
            )
            % {"name": version.name}
        )
    with transaction.atomic():
        previous_versions = list(ModelVersion.objects.select_for_update().filter(is_active=True).exclude(pk=version.pk))
        previous = [v.name for v in previous_versions]
        ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).update(is_active=False)
        version.is_active = True
        version.activated_at = timezone.now()
        # A version going live out of shadow is no longer beside itself (the row may say so even when this
        # instance does not: it is cleared either way).
        version.is_shadow, version.shadow_since = False, None
        fields = ["is_active", "activated_at", "is_shadow", "shadow_since"]
        if previous_versions:
            version.previous_version = previous_versions[0]
            fields.append("previous_version")
        version.save(update_fields=fields)
        details = {"name": version.name, "previous": previous, "evaluated": is_evaluated(version)}
        if forced_reason:
            details["forced"] = True
            details["reason"] = forced_reason
        record(
            action=AuditEvent.Action.MODEL_ACTIVATED,
            actor=actor,
            obj=version,
            details=details,
            request=request,
        )
    logger.info("activated model version %s", version.name)
    return version


def is_evaluated(version: ModelVersion) -> bool:
    return version.pk is not None and ModelEvaluation.objects.filter(version=version).exists()


def rollback_version(actor=None, *, request=None) -> ModelVersion:
    """Bring back the version the active one replaced; audited."""
    active = ModelVersion.objects.filter(is_active=True).select_related("previous_version").first()
    if active is None or active.previous_version is None:
        raise ActivationRefused(gettext("there is no previous version to roll back to"))
    target = active.previous_version
    from .registry import artifact_path

    if not artifact_path(target, target.serving_artifact).is_file():
        raise ActivationRefused(
            gettext("the previous version %(name)s cannot serve any more: its model file is gone")
            % {"name": target.name}
        )
    with transaction.atomic():
        ModelVersion.objects.select_for_update().filter(pk__in=[active.pk, target.pk]).exists()
        ModelVersion.objects.filter(pk=active.pk).update(is_active=False)
        target.is_active = True
        target.activated_at = timezone.now()
        target.previous_version = active
        target.is_shadow, target.shadow_since = False, None
        target.save(update_fields=["is_active", "activated_at", "previous_version", "is_shadow", "shadow_since"])
        record(
            action=MODEL_ROLLED_BACK,
            actor=actor,
            obj=target,
            details={"name": target.name, "rolled_back": active.name},
            request=request,
        )
    logger.info("rolled back model version %s to %s", active.name, target.name)
    return target


class ShadowRefused(Exception):
    """A version that cannot run in shadow (the active one, an unevaluated one); the message says why."""


def start_shadow(version: ModelVersion, actor=None, *, request=None) -> ModelVersion:
    """Run `version` in shadow beside the active one: every new cell is also classified by it, and what it
    says is stored for the dashboard, never shown. Replaces any other version in shadow; audited."""
    if version.is_active:
        raise ShadowRefused(
            gettext("%(name)s is the active version: only an inactive candidate can run in shadow")
            % {"name": version.name}
        )
    if not is_evaluated(version):
        raise ShadowRefused(
            gettext("%(name)s has no recorded evaluation: evaluate it before running it in shadow")
            % {"name": version.name}
        )
    with transaction.atomic():
        current = list(ModelVersion.objects.select_for_update().filter(is_shadow=True))
        if any(other.pk == version.pk for other in current):
            return version
        for other in current:
            _stop(other, actor=actor, request=request, reason=f"replaced by {version.name}")
        version.is_shadow, version.shadow_since = True, timezone.now()
        version.save(update_fields=["is_shadow", "shadow_since"])
        active = ModelVersion.objects.filter(is_active=True).first()
        record(
            action=MODEL_SHADOW_STARTED,
            actor=actor,
            obj=version,
            details={"name": version.name, "active": active.name if active else None},
            request=request,
        )
    logger.info("model version %s runs in shadow", version.name)
    return version


def stop_shadow(actor=None, *, request=None) -> ModelVersion | None:
    """No version runs in shadow any more (its stored predictions stay for the dashboard); audited."""
    with transaction.atomic():
        current = ModelVersion.objects.select_for_update().filter(is_shadow=True).first()
        if current is None:
            return None
        _stop(current, actor=actor, request=request)
    logger.info("model version %s no longer runs in shadow", current.name)
    return current


def _stop(version: ModelVersion, *, actor, request, reason: str = "") -> None:
    since = version.shadow_since
    version.is_shadow, version.shadow_since = False, None
    version.save(update_fields=["is_shadow", "shadow_since"])
    details = {"name": version.name, "since": since.isoformat() if since else None}
    if reason:
        details["reason"] = reason
    record(action=MODEL_SHADOW_STOPPED, actor=actor, obj=version, details=details, request=request)


def record_evaluation(
    *,
    version: ModelVersion,
    data: str,
    metrics: dict,
    baseline: ModelVersion | None = None,
    baseline_metrics: dict | None = None,
    actor=None,
    request=None,
) -> ModelEvaluation:
    """Store a measurement of `version` (and of the baseline, on the same cells); audited. This is what
    opens the activation gate."""
    evaluation = ModelEvaluation.objects.create(
        version=version,
        data=data[:300],
        metrics=metrics,
        baseline=baseline if baseline is not None and baseline.pk else None,
        baseline_metrics=baseline_metrics,
        created_by=actor if getattr(actor, "is_authenticated", False) else None,
    )
    record(
        action=MODEL_EVALUATED,
        actor=actor,
        obj=version,
        details={
            "name": version.name,
            "data": evaluation.data,
            "n": metrics.get("n"),
            "accuracy": metrics.get("accuracy"),
            "baseline": baseline.name if baseline is not None else None,
            "baseline_accuracy": (baseline_metrics or {}).get("accuracy"),
        },
        request=request,
    )
    return evaluation


def register_from_metadata(
    *, metadata: dict[str, Any], source: str, artifact_dir: str, name: str | None = None, actor=None
) -> ModelVersion:
    fields = version_fields(metadata)
    if name:
        fields["name"] = name
    return register_version(**fields, source=source, artifact_dir=artifact_dir, actor=actor)


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
                record_release_evaluations(version)
            return activate_version(version)
    except IntegrityError:
        # Another process activated a version at the same moment; serve that one.
        active = ModelVersion.objects.filter(is_active=True).first()
        if active is None:
            raise
        return active


def record_release_evaluations(version: ModelVersion) -> list[ModelEvaluation]:
    """The measurements a model folder ships with (metadata "metrics" per split, e.g. validation, test)
    recorded as evaluations, so a bundled release passes the gate like any evaluated candidate."""
    evaluations = []
    for split, metrics in (version.metrics or {}).items():
        if isinstance(metrics, dict) and "accuracy" in metrics:
            evaluations.append(
                record_evaluation(
                    version=version, data=f"release {split} set ({metrics.get('n', '?')} cells)", metrics=metrics
                )
            )
    return evaluations


def register_bundled_candidate() -> ModelVersion | None:
    """When the active version is not a bundled model, register the bundled model now on disk (once) as an
    inactive candidate with the evaluations it ships with, so an admin can compare and activate it. A
    bundled active version is ensure_bundled_model's (it replaces a superseded one by itself)."""
    active = ModelVersion.objects.filter(is_active=True).first()
    if active is None or active.source == ModelVersion.Source.BUNDLED:
        return None
    try:
        metadata = read_model_metadata(Path(settings.BUNDLED_MODEL_DIR))
    except FileNotFoundError:
        return None
    if ModelVersion.objects.filter(name=metadata["name"]).exists():
        return None
    with transaction.atomic():
        version = register_from_metadata(metadata=metadata, source=ModelVersion.Source.BUNDLED, artifact_dir="")
        record_release_evaluations(version)
    logger.info("registered the new bundled model %s as a candidate (active: %s)", version.name, active.name)
    return version
