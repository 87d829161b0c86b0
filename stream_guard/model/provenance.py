"""What made a verdict: the software's version, the model's name, version and content digest, and the
threshold in effect. Every record that carries a verdict out of a run (the events' ``start``, the
evidence logs, scan and evaluate reports, the live view) says it, so a verdict can be traced to the
exact model files that gave it and checked against a release.

The model digest is the SHA-256 of what ``sha256sum`` prints for the model's files (``model.json``
and its two graphs, in name order), so anyone can recompute it without this program::

    cd models/deepfake && sha256sum encoder.onnx model.json temporal.onnx | sha256sum
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_guard import __version__
from stream_guard.errors import ModelError
from stream_guard.model.contract import ModelSpec


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def model_files(spec: ModelSpec) -> list[tuple[str, Path]]:
    """The files that make the model, as (name relative to its folder, path), in name order."""
    paths = {spec.folder / "model.json", spec.encoder_path, spec.temporal_path}
    named = [(path.relative_to(spec.folder).as_posix() if path.is_relative_to(spec.folder) else path.name, path)
             for path in paths]
    return sorted(named)


def model_digest(spec: ModelSpec) -> str:
    """SHA-256 of ``sha256sum``'s listing of :func:`model_files` (one ``<hex>  <name>`` line each)."""
    try:
        listing = "".join(f"{file_sha256(path)}  {name}\n" for name, path in model_files(spec))
    except OSError as e:
        raise ModelError(f"model folder {spec.folder}: cannot read {e.filename} ({e.strerror})") from e
    return hashlib.sha256(listing.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Provenance:
    """The software and model behind a run's verdicts, and the threshold they were judged at."""

    software_version: str
    model: str
    model_version: str
    model_sha256: str
    model_trained: bool
    threshold: float
    threshold_name: str | None = None  # the model's name for that threshold (quiet, default...), if it has one

    @classmethod
    def of(cls, spec: ModelSpec, threshold: float | str | None = None) -> Provenance:
        """For ``spec``, judged at ``threshold`` (a number or an operating point's name; default: the model's).
        A number that is one of the model's named thresholds gets its name."""
        value = spec.threshold_for(threshold)
        name = next((p.name for p in spec.named_thresholds() if abs(p.threshold - value) < 1e-9), None)
        return cls(software_version=__version__, model=spec.name, model_version=spec.version,
                   model_sha256=model_digest(spec), model_trained=spec.trained, threshold=value,
                   threshold_name=threshold if isinstance(threshold, str) else name)

    @property
    def threshold_text(self) -> str:
        """``0.837 (default)``, or the number alone when the model does not name it."""
        return f"{self.threshold:.3f}" + (f" ({self.threshold_name})" if self.threshold_name else "")

    def to_json(self) -> dict[str, Any]:
        return {"stream_guard": self.software_version, "model": self.model, "model_version": self.model_version,
                "model_sha256": self.model_sha256, "model_trained": self.model_trained,
                "threshold": round(self.threshold, 4), "threshold_name": self.threshold_name}
