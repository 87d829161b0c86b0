"""Where shipped model files live, for an editable checkout and an installed wheel alike."""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def models_dir() -> Path:
    """The shipped ``models/`` folder: inside the package when installed from a wheel
    (the build copies it there), else the repository's top-level ``models/``."""
    for candidate in (_PACKAGE / "models", _PACKAGE.parent / "models"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"shipped models folder not found next to {_PACKAGE}")


def bundled_model(name: str) -> Path:
    """Path of one shipped model file or folder, e.g. ``bundled_model("face_detection_short_range.onnx")``."""
    return models_dir() / name
