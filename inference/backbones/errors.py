from __future__ import annotations

from pathlib import Path


class UnknownBackbone(ValueError):
    """No backbone is registered under that name."""


class WeightsUnavailable(RuntimeError):
    """The requested pretrained weights cannot be had offline (or the file is wrong)."""


def load_keras_weights(model, path: Path) -> None:
    """Load a Keras weights file (.weights.h5, or a legacy .h5 matched by layer order) into ``model``."""
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError) as exc:
        raise WeightsUnavailable(f"cannot load weights from {path} into {model.name}: {exc}") from exc
