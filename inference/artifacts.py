"""Moved: ``inference.model_folder`` owns model folders. These names stay importable for scripts that
still use them (benchmarks, a running training)."""

from .model_folder import METADATA_FILE, artifact_checksums, read_model_metadata, write_model_metadata

__all__ = ["METADATA_FILE", "artifact_checksums", "read_model_metadata", "write_model_metadata"]
