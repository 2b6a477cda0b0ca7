"""One owner of a model folder: its file names, ``metadata.json``, checksums, and the mapping between
``metadata.json`` and the fields of a ``ModelVersion``.

A model folder is what training recipes, ensembles, adaptation and imports write, and what the registry
registers and the predictor serves::

    model.tflite      the serving artifact (LiteRT)
    model.keras       the Keras model (Grad-CAM, adaptation, ensembles); absent from some imports
    ood.npz           out-of-distribution statistics, when the model has an OOD threshold
    imaging.npz       imaging profile of the training laboratories (``imaging``), when fitted; metadata
                      key ``imaging_profile`` (threshold, laboratories, windows); without it nothing is flagged
                      ``unfamiliar_imaging``
    metadata.json     name, classes, preprocessing, thresholds, metrics, training record, sha256 checksums
    report-<split>/   evaluation reports (training writes report-validation)

Everything else asks this module for these names instead of spelling them. Django-free (training writes
folders without it); the mapping returns plain keyword arguments for ``ModelVersion`` and for
``services.register_version``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .runtimes import sha256_of_file

METADATA_FILE = "metadata.json"
SERVING_ARTIFACT = "model.tflite"
KERAS_ARTIFACT = "model.keras"
OOD_STATISTICS_FILE = "ood.npz"
IMAGING_PROFILE_FILE = "imaging.npz"
IMAGING_PROFILE_KEY = "imaging_profile"
VALIDATION_REPORT = "validation"

# metadata.json key -> (ModelVersion field, default when the key is missing; REQUIRED: the key must be there).
REQUIRED = object()
VERSION_FIELDS: dict[str, tuple[str, Any]] = {
    "name": ("name", REQUIRED),
    "backbone": ("backbone", REQUIRED),
    "classes": ("classes", REQUIRED),
    "input_size": ("input_size", REQUIRED),
    "preprocessing": ("preprocessing", REQUIRED),
    "serving_artifact": ("serving_artifact", REQUIRED),
    "keras_artifact": ("keras_artifact", ""),
    "confidence_threshold": ("confidence_threshold", 0.0),
    "ood_threshold": ("ood_threshold", None),
    "temperature": ("temperature", 1.0),
    "metrics": ("metrics", {}),
    "training": ("training", {}),
    "checksums": ("checksums", None),
}


def report_dir(directory: Path, split: str = VALIDATION_REPORT) -> Path:
    """Where the evaluation report of one split goes inside a model folder (``report-<split>``)."""
    return Path(directory) / f"report-{split}"


def read_model_metadata(directory: Path) -> dict[str, Any]:
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"model metadata missing: {path}")
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def artifact_files(
    *,
    serving_artifact: str,
    keras_artifact: str = "",
    ood_threshold: float | None = None,
    imaging_profile: bool = False,
) -> list[str]:
    """The files a model's checksums cover: serving and Keras artifacts, the OOD statistics when the
    model flags out-of-distribution inputs, and the imaging profile when it has one."""
    files = [serving_artifact, keras_artifact]
    if ood_threshold is not None:
        files.append(OOD_STATISTICS_FILE)
    if imaging_profile:
        files.append(IMAGING_PROFILE_FILE)
    return [name for name in files if name]


def artifact_checksums(directory: Path, metadata: dict[str, Any]) -> dict[str, str]:
    files = artifact_files(
        serving_artifact=metadata.get("serving_artifact") or "",
        keras_artifact=metadata.get("keras_artifact") or "",
        ood_threshold=metadata.get("ood_threshold"),
        imaging_profile=IMAGING_PROFILE_KEY in metadata,
    )
    return {name: sha256_of_file(Path(directory) / name) for name in files}


def write_model_metadata(directory: Path, metadata: dict[str, Any], *, with_checksums: bool = False) -> Path:
    if with_checksums:
        metadata["checksums"] = artifact_checksums(directory, metadata)
    path = Path(directory) / METADATA_FILE
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(metadata, stream, indent=2, sort_keys=True)
        stream.write("\n")
    return path


def new_metadata(
    *,
    name: str,
    backbone: str,
    classes: list[str],
    input_size: int,
    preprocessing: dict,
    temperature: float = 1.0,
    confidence_threshold: float | None = None,
    ood_threshold: float | None = None,
    metrics: dict | None = None,
    training: dict | None = None,
    keras_artifact: str = KERAS_ARTIFACT,
) -> dict[str, Any]:
    """The metadata.json of a folder holding the standard artifacts (checksums are added on writing)."""
    metadata = {
        "name": name,
        "backbone": backbone,
        "classes": list(classes),
        "input_size": input_size,
        "preprocessing": preprocessing,
        "serving_artifact": SERVING_ARTIFACT,
        "keras_artifact": keras_artifact,
        "temperature": temperature,
        "ood_threshold": ood_threshold,
        "metrics": metrics or {},
        "training": training or {},
    }
    if confidence_threshold is not None:
        metadata["confidence_threshold"] = confidence_threshold
    return metadata


def version_fields(metadata: dict[str, Any]) -> dict[str, Any]:
    """The ``ModelVersion`` fields a metadata.json describes (not ``source`` nor ``artifact_dir``, which
    depend on where the folder is registered from). ``checksums`` is None when the folder has none."""
    fields = {}
    for key, (field, default) in VERSION_FIELDS.items():
        if key in metadata:
            fields[field] = metadata[key]
        elif default is REQUIRED:
            raise KeyError(f"model metadata has no {key!r}")
        else:
            fields[field] = default.copy() if isinstance(default, dict) else default
    return fields


def metadata_of_version(version) -> dict[str, Any]:
    """The inverse mapping: a (registered) version's description as metadata.json holds it."""
    return {key: getattr(version, field) for key, (field, _) in VERSION_FIELDS.items()}
