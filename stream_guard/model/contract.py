"""The model contract: what the pipeline needs to know about a deepfake model.

A model is a folder with ``model.json`` and two ONNX graphs (see models/README.md):

* the *encoder* maps a batch of face crops ``float32 [N, 3, H, W]`` to embeddings
  ``float32 [N, D]``;
* a model with ``regions`` in its ``model.json`` (names from :data:`REGION_NAMES`) and
  ``region_sizes`` takes one more encoder input per size ``s``, ``regions_s``
  ``float32 [N, R, s, s]``: those masks of each crop, in that order, drawn at ``s`` pixels
  from the face mesh's landmarks (:mod:`stream_guard.faces.regions`);
* the *temporal head* maps a batch of embedding sequences ``float32 [N, T, D]``
  (``1 <= T <= window``) to logits ``float32 [N, 1]``.

The probability is ``sigmoid(calibration_a * logit + calibration_b)``. ``threshold`` is where
the verdict turns fake; ``operating_points`` (optional) name other thresholds and what each was
measured to flag, so ``--threshold quiet`` means the same on every command.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from stream_guard.errors import ConfigError, ModelError

FORMAT = "stream_guard-model/1"
# Face-region masks an encoder may take (stream_guard.faces.regions draws them).
REGION_NAMES = ("core", "seam_in", "seam_out", "mouth", "eyes")
# The name every model answers to: its own ``threshold``.
DEFAULT_POINT = "default"
POINT_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """A named threshold and the shares of held-out real and fake clips it was measured to flag
    (None where the model's maker did not measure them)."""

    name: str
    threshold: float
    reals_flagged: float | None = None
    fakes_caught: float | None = None

    def to_json(self) -> dict:
        measured = {k: v for k, v in (("reals_flagged", self.reals_flagged), ("fakes_caught", self.fakes_caught))
                    if v is not None}
        return {"threshold": self.threshold, **measured}

    def measured(self) -> str:
        """``flags 10% of reals, catches 33% of fakes``; empty where nothing was measured."""
        return ", ".join(f"{what} {v:.0%} of {whom}" for what, v, whom in (
            ("flags", self.reals_flagged, "reals"), ("catches", self.fakes_caught, "fakes")) if v is not None)

    def describe(self) -> str:
        """``quiet 0.911 (flags 10% of reals, catches 33% of fakes)``."""
        measured = self.measured()
        return f"{self.name} {self.threshold:.3f}" + (f" ({measured})" if measured else "")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Parsed ``model.json``. Paths are absolute."""

    folder: Path
    name: str
    version: str
    trained: bool
    encoder_path: Path
    temporal_path: Path
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_margin: float
    embedding_dim: int
    window: int
    sample_hz: float
    threshold: float
    calibration_a: float
    calibration_b: float
    description: str = ""
    regions: tuple[str, ...] = ()  # region masks the encoder takes beside the crops (empty: none)
    region_sizes: tuple[int, ...] = ()  # the sizes they are drawn at, one encoder input each
    operating_points: tuple[OperatingPoint, ...] = ()  # named thresholds, as model.json lists them

    def named_thresholds(self) -> tuple[OperatingPoint, ...]:
        """``default`` (the model's ``threshold``) first, then the other operating points."""
        default = next((p for p in self.operating_points if p.name == DEFAULT_POINT),
                       OperatingPoint(DEFAULT_POINT, self.threshold))
        return (default, *(p for p in self.operating_points if p.name != DEFAULT_POINT))

    def threshold_for(self, choice: float | str | None) -> float:
        """The threshold ``--threshold`` asks for: a number as it is, an operating point's name
        as its threshold, None as the model's own. An unknown name is a :class:`ConfigError`
        naming the known ones."""
        if choice is None:
            return self.threshold
        if not isinstance(choice, str):
            return float(choice)
        points = self.named_thresholds()
        for point in points:
            if point.name == choice:
                return point.threshold
        known = ", ".join(p.name for p in points)
        raise ConfigError(f"--threshold {choice}: model {self.name} {self.version} names the thresholds {known}; "
                          "or give a number 0..1")

    def probability(self, logit: float) -> float:
        z = self.calibration_a * logit + self.calibration_b
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def to_json(self) -> dict:
        regions = {"regions": list(self.regions), "region_sizes": list(self.region_sizes)} if self.regions else {}
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "trained": self.trained,
            "description": self.description,
            "encoder": self.encoder_path.name,
            "temporal": self.temporal_path.name,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "crop_margin": self.crop_margin,
            "embedding_dim": self.embedding_dim,
            "window": self.window,
            "sample_hz": self.sample_hz,
            "threshold": self.threshold,
            "calibration": {"a": self.calibration_a, "b": self.calibration_b},
            **regions,
            **({"operating_points": {p.name: p.to_json() for p in self.operating_points}}
               if self.operating_points else {}),
        }

    def save(self) -> Path:
        path = self.folder / "model.json"
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def _number(meta: dict, key: str, lo: float, hi: float, where: str = "") -> float:
    name = f"{where}.{key}" if where else key
    try:
        value = float(meta[key])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"model.json: '{name}' is missing or not a number") from e
    if not lo <= value <= hi:
        raise ModelError(f"model.json: '{name}'={value} is outside [{lo}, {hi}]")
    return value


def _triple(meta: dict, key: str) -> tuple[float, float, float]:
    value = meta.get(key)
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)):
        raise ModelError(f"model.json: '{key}' must be a list of 3 numbers")
    return (float(value[0]), float(value[1]), float(value[2]))


def _regions(meta: dict) -> tuple[tuple[str, ...], tuple[int, ...]]:
    names, sizes = meta.get("regions", []), meta.get("region_sizes", [])
    if not (isinstance(names, list) and all(isinstance(v, str) for v in names)):
        raise ModelError("model.json: 'regions' must be a list of region names")
    unknown = [v for v in names if v not in REGION_NAMES]
    if unknown:
        raise ModelError(f"model.json: unknown regions {unknown}; this version knows {list(REGION_NAMES)}")
    if not (isinstance(sizes, list) and all(isinstance(v, int) and 1 <= v <= 4096 for v in sizes)
            and bool(sizes) == bool(names)):
        raise ModelError("model.json: 'region_sizes' must list the mask sizes (1-4096 px) when 'regions' is set, "
                         "and only then")
    return tuple(names), tuple(sizes)


def _share(point: dict, key: str, where: str) -> float | None:
    return None if key not in point else _number(point, key, 0.0, 1.0, where)


def _operating_points(meta: dict, threshold: float) -> tuple[OperatingPoint, ...]:
    points = meta.get("operating_points", {})
    if not isinstance(points, dict):
        raise ModelError("model.json: 'operating_points' must map names to {\"threshold\": ...}")
    out = []
    for name, point in points.items():
        where = f"operating_points.{name}"
        if not POINT_NAME.fullmatch(name):
            raise ModelError(f"model.json: operating point name {name!r} must be lower-case letters, digits and "
                             "'-', starting with a letter")
        if not isinstance(point, dict):
            raise ModelError(f"model.json: '{where}' must be an object with a 'threshold'")
        out.append(OperatingPoint(name, _number(point, "threshold", 0.0, 1.0, where),
                                  _share(point, "reals_flagged", where), _share(point, "fakes_caught", where)))
        if name == DEFAULT_POINT and out[-1].threshold != threshold:
            raise ModelError(f"model.json: operating point '{DEFAULT_POINT}' must be at 'threshold' ({threshold}), "
                             f"not {out[-1].threshold}")
    return tuple(out)


def load_model_spec(folder: str | Path) -> ModelSpec:
    """Read and validate ``folder/model.json``; raise :class:`ModelError` on any problem."""
    folder = Path(folder).expanduser().resolve()
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise ModelError(f"no model.json in model folder {folder}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ModelError(f"{meta_path}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path}: must hold a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise ModelError(f"{meta_path}: format must be '{FORMAT}', got {meta.get('format')!r}")
    graphs = {}
    for key in ("encoder", "temporal"):
        name = meta.get(key)
        if not isinstance(name, str) or not (folder / name).is_file():
            raise ModelError(f"{meta_path}: '{key}' graph {name!r} not found in {folder}")
        graphs[key] = folder / name
    calibration = meta.get("calibration", {"a": 1.0, "b": 0.0})
    threshold = _number(meta, "threshold", 0.0, 1.0)
    regions, region_sizes = _regions(meta)
    return ModelSpec(
        folder=folder,
        name=str(meta.get("name", folder.name)),
        version=str(meta.get("version", "0")),
        trained=bool(meta.get("trained", False)),
        description=str(meta.get("description", "")),
        encoder_path=graphs["encoder"],
        temporal_path=graphs["temporal"],
        input_size=int(_number(meta, "input_size", 16, 1024)),
        mean=_triple(meta, "mean"),
        std=_triple(meta, "std"),
        crop_margin=_number(meta, "crop_margin", 0.0, 2.0),
        embedding_dim=int(_number(meta, "embedding_dim", 1, 65536)),
        window=int(_number(meta, "window", 1, 256)),
        sample_hz=_number(meta, "sample_hz", 0.1, 240.0),
        threshold=threshold,
        calibration_a=_number(calibration, "a", -1e6, 1e6),
        calibration_b=_number(calibration, "b", -1e6, 1e6),
        regions=regions,
        region_sizes=region_sizes,
        operating_points=_operating_points(meta, threshold),
    )
