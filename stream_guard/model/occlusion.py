"""Occlusion sensitivity: which parts of a face's crops one window's fake score depends on.

A part of the crops (a cell of a grid laid over them, or a named region of the face drawn from its
landmarks) is hidden, filled with the model's mean grey in every crop of the window, and the window is
scored again. The part's **weight** is how far that moves the score in log-odds (``log(p / (1 - p))``,
which unlike the probability does not flatten near 0 and 1): positive where hiding the part lowers the
fake score, so the part pushes it towards fake, negative where the part pushes it towards real. The
method (Zeiler & Fergus, 2014) needs only a model's inputs and outputs, so it works for any model folder;
it tells what a score rests on, not whether the face is fake.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream_guard.faces.crop import crop_face
from stream_guard.faces.regions import FaceRegions, MeshTrack, region_masks
from stream_guard.model.contract import REGION_NAMES
from stream_guard.model.scorer import FaceScorer
from stream_guard.types import FrameResult

GRID_CELLS = 7  # cells per side: 32 px cells on a 224 px crop
HIDDEN_REGIONS = (*REGION_NAMES, "background")  # background: the crop outside the face and its outer seam band
_VARIANTS_PER_BATCH = 4  # hidden parts scored per encoder call (window crops each)
FORGET_AFTER_S = 10.0  # a face unseen this long (stream time) has left: its current window is dropped


@dataclass(frozen=True)
class WindowSample:
    """One sampled crop of a face, as the model saw it, and its face-mesh landmarks in crop pixels."""

    crop: np.ndarray  # uint8 [S, S, 3] RGB
    landmarks: np.ndarray  # float32 [468, 2+]


@dataclass(frozen=True)
class OcclusionMap:
    """How one window's score changes with each part of its crops hidden."""

    score: float  # the window's probability, all of it seen
    grid: np.ndarray  # float [GRID_CELLS, GRID_CELLS]: the probability with each cell hidden (row 0 at the top)
    regions: dict[str, float]  # HIDDEN_REGIONS name -> the probability with that region hidden
    crop: np.ndarray  # the window's last crop (uint8 RGB), what the grid is laid over

    def weight(self, hidden: float | np.ndarray) -> np.ndarray:
        """Log-odds of the window's score minus those of ``hidden`` score(s)."""
        return log_odds(self.score) - log_odds(hidden)

    @property
    def grid_weights(self) -> np.ndarray:
        return self.weight(self.grid)

    @property
    def strongest(self) -> str:
        """The named region whose hiding lowers the score most."""
        return min(self.regions, key=lambda n: self.regions[n])

    def to_json(self) -> dict:
        return {"window_score": round(self.score, 4), "hidden_with": "the model's mean grey",
                "grid_cells": int(self.grid.shape[0]), "grid_scores": np.round(self.grid, 4).tolist(),
                "grid_weights": np.round(self.grid_weights, 3).tolist(),
                "region_scores": {n: round(p, 4) for n, p in self.regions.items()},
                "region_weights": {n: round(float(self.weight(p)), 3) for n, p in self.regions.items()}}


def log_odds(p: float | np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))``, with ``p`` kept 1e-6 from 0 and 1."""
    q = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def _named_masks(landmarks: np.ndarray, size: int) -> np.ndarray:
    """bool ``[len(HIDDEN_REGIONS), size, size]``: each named region of a crop."""
    masks = region_masks(landmarks, size, size) > 0
    return np.concatenate([masks, ~masks.any(axis=0)[None]])


def _cell_masks(size: int, cells: int) -> np.ndarray:
    """bool ``[cells * cells, size, size]``: the grid's cells, row by row."""
    edges = np.linspace(0, size, cells + 1).round().astype(int)
    out = np.zeros((cells * cells, size, size), bool)
    for r in range(cells):
        for c in range(cells):
            out[r * cells + c, edges[r]:edges[r + 1], edges[c]:edges[c + 1]] = True
    return out


class OcclusionExplainer:
    """Scores a face's window with parts of its crops hidden (see the module docstring).

    ``regions`` draws the model's own region masks (for a model that takes them) from the landmarks; the
    masks stay as they were while pixels are hidden, since they say where the face is, not what it shows.
    """

    def __init__(self, scorer: FaceScorer, regions: FaceRegions, cells: int = GRID_CELLS) -> None:
        self.scorer, self.regions, self.cells = scorer, regions, cells
        size = scorer.spec.input_size
        self._cells = _cell_masks(size, cells)
        self._grey = np.asarray(scorer.spec.mean, np.float32) * 255.0  # normalises to exactly 0

    @property
    def size(self) -> int:
        return self.scorer.spec.input_size

    def _scores(self, crops: np.ndarray, model_masks: list[np.ndarray], hidden: np.ndarray) -> np.ndarray:
        """Window probabilities with each of ``hidden`` (bool ``[V, T, S, S]``) filled grey; ``[V]``."""
        t = len(crops)
        embeddings = []
        for start in range(0, len(hidden), _VARIANTS_PER_BATCH):
            part = hidden[start:start + _VARIANTS_PER_BATCH]
            batch = np.repeat(crops[None].astype(np.float32), len(part), axis=0)
            batch[part] = self._grey
            masks = [np.concatenate([m] * len(part)) for m in model_masks]
            encoded = self.scorer.encode(batch.reshape(-1, *crops.shape[1:]), masks)
            embeddings.append(encoded.reshape(len(part), t, -1))
        return self.scorer.probabilities(list(np.concatenate(embeddings)))

    def explain(self, window: Sequence[WindowSample]) -> OcclusionMap:
        """The occlusion map of one window (its samples oldest first, as the model scored them)."""
        crops = np.stack([s.crop for s in window])
        t, size = len(crops), self.size
        model_masks = [np.stack(per_size) for per_size in zip(*(self.regions.masks(s.landmarks) for s in window))]
        named = np.stack([_named_masks(s.landmarks, size) for s in window], axis=1)  # [R, T, S, S]
        cells = np.broadcast_to(self._cells[:, None], (len(self._cells), t, size, size))
        nothing = np.zeros((1, t, size, size), bool)
        scores = self._scores(crops, model_masks, np.concatenate([nothing, cells, named]))
        n = len(self._cells)
        return OcclusionMap(score=float(scores[0]), grid=scores[1:n + 1].reshape(self.cells, self.cells),
                            regions={name: float(p) for name, p in zip(HIDDEN_REGIONS, scores[n + 1:])},
                            crop=crops[-1].copy())


@dataclass(frozen=True)
class Explaining:
    """Which faces of a run get an occlusion map, and the explainer that makes them."""

    explainer: OcclusionExplainer
    every_face: bool = False  # False: only the faces judged fake


class WindowRecorder:
    """Keeps each face track's most suspicious window, rebuilt from the frames the pipeline scored
    (the same crop, the same face-mesh tracking), so :meth:`OcclusionExplainer.explain` scores it as
    the pipeline did. Call :meth:`add` with every frame result, on one thread.

    Only peaks at or above ``keep_from`` are kept: a window holds ``window`` crops (about 150 kB each at
    224 px), and a face whose score never reached the threshold cannot be judged fake."""

    def __init__(self, explainer: OcclusionExplainer, keep_from: float = 0.0) -> None:
        self.explainer, self.keep_from = explainer, keep_from
        self.peaks: dict[int, tuple[float, tuple[WindowSample, ...]]] = {}  # track id -> (score, window)
        self._windows: dict[int, deque[WindowSample]] = {}
        self._mesh: dict[int, MeshTrack] = {}
        self._last_seen: dict[int, float] = {}

    def add(self, result: FrameResult) -> None:
        spec, image, now = self.explainer.scorer.spec, result.frame.image, result.frame.pts_s
        for face in result.faces:
            if not face.scored or face.raw_score is None:
                continue
            tid = face.track_id
            landmarks, self._mesh[tid] = self.explainer.regions.crop_landmarks(
                image, face.box, face.keypoints, self._mesh.get(tid))
            window = self._windows.setdefault(tid, deque(maxlen=spec.window))
            window.append(WindowSample(crop_face(image, face.box, spec.input_size, spec.crop_margin), landmarks))
            self._last_seen[tid] = now
            if face.raw_score >= self.keep_from and face.raw_score > self.peaks.get(tid, (-1.0, ()))[0]:
                self.peaks[tid] = (face.raw_score, tuple(window))
        for tid in [t for t, seen in self._last_seen.items() if now - seen > FORGET_AFTER_S or now < seen]:
            del self._windows[tid], self._mesh[tid], self._last_seen[tid]

    def explain(self, track_id: int) -> OcclusionMap | None:
        """The occlusion map of the track's kept peak window (None if none was kept)."""
        peak = self.peaks.get(track_id)
        return None if peak is None else self.explainer.explain(peak[1])
