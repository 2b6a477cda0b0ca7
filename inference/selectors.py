"""Reads of the model registry."""

from __future__ import annotations

from pathlib import Path

from django.utils.translation import gettext_noop

from .model_folder import read_model_metadata, version_fields
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
    fields = version_fields(read_model_metadata(directory))
    return ModelVersion(
        **{**fields, "checksums": fields["checksums"] or {}},
        source=ModelVersion.Source.TRAINED,
        artifact_dir=str(Path(directory).resolve()),
    )


def evaluations_of(version: ModelVersion) -> list:
    from .models import ModelEvaluation

    return list(ModelEvaluation.objects.filter(version=version).select_related("baseline", "created_by"))


def comparison_rows(evaluation) -> dict:
    """Candidate beside baseline on one recorded evaluation: the headline figures, per-class recall, and
    the agreement of case differentials with the confirmed ones."""
    candidate, baseline = evaluation.metrics or {}, evaluation.baseline_metrics or {}

    def differential(metrics):
        value = (metrics.get("case_differential") or {}).get("mean_abs_pp")
        return None if value is None else value

    # The labels stay English keys (data-metric on the page); the page shows them translated.
    headline = [
        (gettext_noop("cells"), candidate.get("n"), baseline.get("n"), "n"),
        (gettext_noop("accuracy"), candidate.get("accuracy"), baseline.get("accuracy"), "pct"),
        (gettext_noop("macro-F1"), candidate.get("macro_f1"), baseline.get("macro_f1"), "num"),
        (
            gettext_noop("flagged for review"),
            candidate.get("flagged_fraction"),
            baseline.get("flagged_fraction"),
            "pct",
        ),
        (
            gettext_noop("accuracy of unflagged"),
            candidate.get("accuracy_unflagged"),
            baseline.get("accuracy_unflagged"),
            "pct",
        ),
        (
            gettext_noop("case differential, mean |difference| (points)"),
            differential(candidate),
            differential(baseline),
            "num",
        ),
    ]
    recall = []
    per_class = candidate.get("per_class") or {}
    order = [name for name in candidate.get("classes") or evaluation.version.classes if name in per_class]
    for name in order + sorted(set(per_class) - set(order)):
        row = per_class[name]
        if not row.get("support"):
            continue
        other = (baseline.get("per_class") or {}).get(name, {})
        recall.append((name, row.get("recall"), other.get("recall"), row.get("support")))
    cases = (candidate.get("case_differential") or {}).get("cases")
    return {"evaluation": evaluation, "headline": headline, "recall": recall, "cases": cases}
