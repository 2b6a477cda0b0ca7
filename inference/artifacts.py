"""A model directory: artifact files plus `metadata.json`, the description a ModelVersion is registered from.

Django-free, so training can write it and the registry (services) can read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .ood import OOD_STATISTICS_FILE
from .runtimes import sha256_of_file

METADATA_FILE = "metadata.json"


def read_model_metadata(directory: Path) -> dict[str, Any]:
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"model metadata missing: {path}")
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def artifact_checksums(directory: Path, metadata: dict[str, Any]) -> dict[str, str]:
    files = [metadata.get("serving_artifact"), metadata.get("keras_artifact")]
    if metadata.get("ood_threshold") is not None:
        files.append(OOD_STATISTICS_FILE)
    return {name: sha256_of_file(Path(directory) / name) for name in filter(None, files)}


def write_model_metadata(directory: Path, metadata: dict[str, Any], *, with_checksums: bool = False) -> Path:
    if with_checksums:
        metadata["checksums"] = artifact_checksums(directory, metadata)
    path = Path(directory) / METADATA_FILE
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(metadata, stream, indent=2, sort_keys=True)
        stream.write("\n")
    return path
