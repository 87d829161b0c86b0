"""Face tracker: gives each face a stable id across frames.

The shape follows SORT / ByteTrack / norfair: every tracked face predicts where
its box will be (constant velocity, using real ``pts_s`` time deltas so irregular
frame times work), detections are assigned to predictions by an optimal
assignment (Hungarian, ``scipy.optimize.linear_sum_assignment``) over a cost that
combines ``1 - IoU`` and the normalised centre distance, gated by ``min_iou``.

Per track, box and velocity are filtered with an alpha-beta filter (a fixed-gain
Kalman filter): ``box_smoothing`` removes detector jitter and, because the
correction starts from the *predicted* box, a face moving at constant speed is
followed without lag (a plain EMA would trail behind it).

Lifecycle: a new detection starts a TENTATIVE track; ``confirm_hits`` matches make
it CONFIRMED; a tentative track that misses once is dropped (a flicker, not a
face). A confirmed track that misses coasts on its predicted box and is still
reported for ``coast_misses`` updates, then becomes LOST (kept, not reported, and
can be re-matched with its old id), and is removed once it has missed more than
``max_misses`` consecutive updates *and* has not been seen for more than
``max_lost_s`` seconds. The time bound keeps a face's id (and its score memory and open
alert) through a hand over the face or a head turned away for a second, whatever the
frame rate and detection schedule; the miss count keeps it for slow streams.

Track objects are live: the tracker updates them in place on every call, and
each owns a ``memory`` object made by the factory given to the tracker (the
scorer keeps the face's embedding ring and smoothed score there). The arrays a
track exposes (``box``, ``velocity``, ``keypoints``) are replaced, never written
into, so an array taken from one frame's result never changes afterwards.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from scipy.optimize import linear_sum_assignment

from stream_guard.errors import ConfigError
from stream_guard.types import FaceDetections, TrackState

M = TypeVar("M")

_INFEASIBLE = 1e6  # cost of a gated-out pair; large enough to lose to any feasible one
_MIN_SIZE = 1.0  # px; predicted sizes never shrink below this
# A track's new state: centre/size and velocity (float64), box and velocity (float32).
_State = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TrackerOptions:
    """How the face tracker matches and keeps faces.

    ``min_iou``: a detection may match a track only if the IoU of the track's
    predicted box and the detection is at least this. ``confirm_hits``: matches
    (including the first detection) before a track is CONFIRMED. ``max_misses``:
    consecutive ``update()`` calls without a match after which a track is removed.
    ``coast_misses``: for this many misses a confirmed track is still reported
    (on its predicted box, ``matched_now=False``) before it turns LOST.
    ``max_lost_s``: a track is not removed before it has gone unseen this long
    (stream seconds; the alerts' ``gone`` time, so an alert and its face end together).
    ``box_smoothing``: 0 = the box is the detection; towards 1 = heavier smoothing.
    ``velocity_gain``: how fast the velocity follows the observed motion (0-1].
    ``center_weight``: weight of the normalised centre distance in the match cost.
    """

    min_iou: float = 0.2
    confirm_hits: int = 2
    max_misses: int = 15
    coast_misses: int = 2
    max_lost_s: float = 2.0
    box_smoothing: float = 0.5
    velocity_gain: float = 0.2
    center_weight: float = 0.5

    def __post_init__(self) -> None:
        checks = (
            (0.0 <= self.min_iou <= 1.0, "min_iou must be in [0, 1]"),
            (self.confirm_hits >= 1, "confirm_hits must be >= 1"),
            (self.max_misses >= 0, "max_misses must be >= 0"),
            (0 <= self.coast_misses <= self.max_misses, "coast_misses must be in [0, max_misses]"),
            (0.0 <= self.max_lost_s < float("inf"), "max_lost_s must be >= 0 seconds"),
            (0.0 <= self.box_smoothing < 1.0, "box_smoothing must be in [0, 1)"),
            (0.0 < self.velocity_gain <= 1.0, "velocity_gain must be in (0, 1]"),
            (self.center_weight >= 0.0, "center_weight must be >= 0"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"tracker options: {message}")


class Track(Generic[M]):
    """One followed face.

    ``box``: smoothed ``[x1, y1, x2, y2]`` float32. ``velocity``: float32
    ``[vcx, vcy, vw, vh]`` in pixels per second (centre and size). ``keypoints``:
    ``(6, 2)`` from the last matched detection, shifted with the box while
    coasting. ``hits``: matched detections so far; ``misses``: consecutive
    ``update()`` calls without one; ``age``: frames (``update`` and ``predict``
    calls) since the track was created. ``first_pts_s`` / ``last_pts_s``: times
    of the first and the latest matched detection. ``matched_now``: whether a
    detection was matched to this track in the latest ``update()`` (False after
    ``predict()``). ``memory``: per-face state owned by this track.
    """

    __slots__ = (
        "_cs",
        "_t",
        "_vel",
        "age",
        "box",
        "detection_score",
        "first_pts_s",
        "hits",
        "id",
        "keypoints",
        "last_pts_s",
        "matched_now",
        "memory",
        "misses",
        "state",
        "velocity",
    )

    def __init__(
        self, track_id: int, memory: M, cs: np.ndarray, keypoints: np.ndarray,
        score: float, pts_s: float, state: TrackState,
    ) -> None:
        self.id = track_id
        self.memory = memory
        self.state = state
        self.keypoints = keypoints
        self.detection_score = score
        self.hits = 1
        self.misses = 0
        self.age = 1
        self.first_pts_s = pts_s
        self.last_pts_s = pts_s
        self.matched_now = True
        self._t = pts_s  # time of the current state estimate
        vel = np.zeros(4)
        self._set_state(cs, vel, _cs_to_xyxy(cs).astype(np.float32), vel.astype(np.float32))

    @property
    def is_confirmed(self) -> bool:
        """True once the track has been confirmed (also while coasting or lost)."""
        return self.state is not TrackState.TENTATIVE

    def _set_state(
        self, cs: np.ndarray, vel: np.ndarray, box: np.ndarray, velocity: np.ndarray,
    ) -> None:
        """Replace the filter state (centre/size, velocity) and the public arrays."""
        self._cs = cs
        self._vel = vel
        self.box = box
        self.velocity = velocity

    def __repr__(self) -> str:
        box = ", ".join(f"{v:.1f}" for v in self.box)
        return (
            f"Track(id={self.id}, state={self.state.value}, box=[{box}], "
            f"hits={self.hits}, misses={self.misses}, matched_now={self.matched_now})"
        )


class FaceTracker(Generic[M]):
    """Assigns stable ids to faces; one instance per stream, used from one thread."""

    def __init__(self, options: TrackerOptions, memory_factory: Callable[[], M]) -> None:
        self.options = options
        self._memory_factory = memory_factory
        self._tracks: list[Track[M]] = []  # kept in id order
        self._removed: list[Track[M]] = []
        self._next_id = 1

    @property
    def tracks(self) -> tuple[Track[M], ...]:
        """All live tracks, LOST ones included, in id order."""
        return tuple(self._tracks)

    @property
    def removed(self) -> tuple[Track[M], ...]:
        """Tracks dropped by the latest ``update()`` or ``reset()``."""
        return tuple(self._removed)

    def update(self, detections: FaceDetections, pts_s: float) -> list[Track[M]]:
        """Match this frame's detections to the tracks; return the visible tracks.

        Visible = matched now (``matched_now=True``, tentative ones included) plus
        confirmed tracks coasting on their predicted box (``matched_now=False``).
        """
        self._removed = []
        det_xyxy = np.asarray(detections.boxes, dtype=np.float64).reshape(-1, 4)
        det_cs = _xyxy_to_cs(det_xyxy)
        pred, vel = self._predicted(pts_s)
        rows, cols = self._associate(pred, det_cs, det_xyxy)
        if rows.size:
            vel = self._correct(pred, vel, rows, det_cs[cols], pts_s)
        matched = dict(zip(rows.tolist(), cols.tolist(), strict=True))
        boxes, vels = _cs_to_xyxy(pred).astype(np.float32), vel.astype(np.float32)
        for i, track in enumerate(self._tracks):
            state = (pred[i], vel[i], boxes[i], vels[i])
            j = matched.get(i)
            if j is None:
                self._on_miss(track, state, pts_s)
            else:
                self._on_hit(track, state, detections, j, pts_s)
        self._drop_dead(pts_s)
        self._start_tracks(detections, det_cs, set(matched.values()), pts_s)
        return self._visible()

    def predict(self, pts_s: float) -> list[Track[M]]:
        """Move every track along its velocity to ``pts_s`` (a frame without detection).

        Counts no misses and matches nothing; returns the visible tracks, all
        with ``matched_now=False``.
        """
        pred, vel = self._predicted(pts_s)
        boxes, vels = _cs_to_xyxy(pred).astype(np.float32), vel.astype(np.float32)
        for i, track in enumerate(self._tracks):
            self._move(track, (pred[i], vel[i], boxes[i], vels[i]), pts_s)
            track.matched_now = False
        return self._visible()

    def reset(self) -> None:
        """Drop every track (after a stream gap). Ids keep counting, never reused."""
        self._removed = self._tracks
        self._tracks = []

    # -- steps -----------------------------------------------------------------

    def _predicted(self, pts_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Predicted centre/size ``(N, 4)`` of all tracks at ``pts_s``, and their velocities."""
        if not self._tracks:
            return np.zeros((0, 4)), np.zeros((0, 4))
        cs = np.array([t._cs for t in self._tracks])
        vel = np.array([t._vel for t in self._tracks])
        dt = np.maximum(pts_s - np.array([t._t for t in self._tracks]), 0.0)
        pred = cs + vel * dt[:, None]
        np.maximum(pred[:, 2:], _MIN_SIZE, out=pred[:, 2:])
        return pred, vel

    def _associate(
        self, pred: np.ndarray, det_cs: np.ndarray, det_xyxy: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Optimal gated assignment; returns matched (track rows, detection cols)."""
        if pred.shape[0] == 0 or det_cs.shape[0] == 0:
            empty = np.zeros(0, dtype=np.intp)
            return empty, empty
        iou = iou_matrix(_cs_to_xyxy(pred), det_xyxy)
        feasible = iou >= self.options.min_iou
        if not feasible.any():
            empty = np.zeros(0, dtype=np.intp)
            return empty, empty
        cost = 1.0 - iou + self.options.center_weight * _centre_distance(pred, det_cs)
        cost[~feasible] = _INFEASIBLE
        rows, cols = linear_sum_assignment(cost)
        keep = feasible[rows, cols]
        return rows[keep], cols[keep]

    def _correct(
        self, pred: np.ndarray, vel: np.ndarray, rows: np.ndarray, z: np.ndarray, pts_s: float,
    ) -> np.ndarray:
        """Alpha-beta correction of the matched rows; writes ``pred``, returns new velocities."""
        opts = self.options
        residual = z - pred[rows]
        pred[rows] += (1.0 - opts.box_smoothing) * residual
        since = pts_s - np.array([self._tracks[i].last_pts_s for i in rows.tolist()])
        first = np.array([self._tracks[i].hits == 1 for i in rows.tolist()])
        # The first re-detection measures the velocity outright; later ones nudge it.
        gain = np.where(first, 1.0, opts.velocity_gain) / np.maximum(since, 1e-6)
        gain[since <= 1e-6] = 0.0  # same timestamp twice: no motion information
        vel = vel.copy()
        vel[rows] += gain[:, None] * residual
        return vel

    def _on_hit(
        self, track: Track[M], state: _State, detections: FaceDetections, j: int, pts_s: float,
    ) -> None:
        """Bookkeeping for a track matched to detection ``j``."""
        track._t = pts_s
        track._set_state(*state)
        track.keypoints = np.array(detections.keypoints[j], dtype=np.float32)
        track.detection_score = float(detections.scores[j])
        track.hits += 1
        track.misses = 0
        track.age += 1
        track.last_pts_s = pts_s
        track.matched_now = True
        if track.state is TrackState.LOST or track.hits >= self.options.confirm_hits:
            track.state = TrackState.CONFIRMED

    def _on_miss(self, track: Track[M], state: _State, pts_s: float) -> None:
        """Bookkeeping for a track without a detection: coast, then lose it."""
        self._move(track, state, pts_s)
        track.misses += 1
        track.matched_now = False
        if track.state is TrackState.CONFIRMED and track.misses > self.options.coast_misses:
            track.state = TrackState.LOST
            # Held where it was last seen: a velocity measured on detector jitter, carried on for a second
            # or two, would move and shrink the box off a face that comes back where it left.
            track._set_state(track._cs, np.zeros_like(track._vel), track.box, np.zeros_like(track.velocity))

    @staticmethod
    def _move(track: Track[M], state: _State, pts_s: float) -> None:
        """Set a predicted state; keypoints follow the centre."""
        shift = (state[0][:2] - track._cs[:2]).astype(np.float32)
        if shift.any():
            track.keypoints = track.keypoints + shift
        track._t = max(track._t, pts_s)
        track._set_state(*state)
        track.age += 1

    def _drop_dead(self, pts_s: float) -> None:
        """Remove tentative tracks that missed and tracks missing too long (updates and seconds)."""
        keep: list[Track[M]] = []
        for track in self._tracks:
            unseen_s = pts_s - track.last_pts_s  # negative if the stream's clock jumped back: no time to go by
            missing_too_long = track.misses > self.options.max_misses and not 0.0 <= unseen_s <= self.options.max_lost_s
            dead = track.misses > 0 and (track.state is TrackState.TENTATIVE or missing_too_long)
            (self._removed if dead else keep).append(track)
        self._tracks = keep

    def _start_tracks(
        self, detections: FaceDetections, det_cs: np.ndarray, used: set[int], pts_s: float,
    ) -> None:
        """Open a track for every detection no track took."""
        initial = TrackState.CONFIRMED if self.options.confirm_hits <= 1 else TrackState.TENTATIVE
        for j in range(det_cs.shape[0]):
            if j in used:
                continue
            track = Track(
                self._next_id, self._memory_factory(), det_cs[j].copy(),
                np.array(detections.keypoints[j], dtype=np.float32),
                float(detections.scores[j]), pts_s, initial,
            )
            self._next_id += 1
            self._tracks.append(track)

    def _visible(self) -> list[Track[M]]:
        return [t for t in self._tracks if t.state is not TrackState.LOST]


# -- geometry ------------------------------------------------------------------


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` ``(N, 4)`` with every box in ``b`` ``(M, 4)``, xyxy."""
    wh = np.maximum(
        np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]),
        0.0,
    )
    inter = wh[..., 0] * wh[..., 1]
    size_a = np.maximum(a[:, 2:] - a[:, :2], 0.0)
    size_b = np.maximum(b[:, 2:] - b[:, :2], 0.0)
    union = (size_a[:, 0] * size_a[:, 1])[:, None] + size_b[:, 0] * size_b[:, 1] - inter
    return np.where(union > 0.0, inter / np.maximum(union, 1e-9), 0.0)


def _centre_distance(a_cs: np.ndarray, b_cs: np.ndarray) -> np.ndarray:
    """Centre distance ``(N, M)`` divided by the mean diagonal of the two boxes."""
    d = np.linalg.norm(a_cs[:, None, :2] - b_cs[None, :, :2], axis=2)
    diag_a = np.hypot(a_cs[:, 2], a_cs[:, 3])
    diag_b = np.hypot(b_cs[:, 2], b_cs[:, 3])
    return d / np.maximum(0.5 * (diag_a[:, None] + diag_b[None, :]), 1e-6)


def _xyxy_to_cs(boxes: np.ndarray) -> np.ndarray:
    """``[x1, y1, x2, y2]`` to ``[cx, cy, w, h]`` (float64)."""
    out = np.empty_like(boxes, dtype=np.float64)
    out[..., :2] = 0.5 * (boxes[..., :2] + boxes[..., 2:])
    out[..., 2:] = boxes[..., 2:] - boxes[..., :2]
    return out


def _cs_to_xyxy(cs: np.ndarray) -> np.ndarray:
    """``[cx, cy, w, h]`` to ``[x1, y1, x2, y2]``."""
    out = np.empty(cs.shape, dtype=np.float64)
    half = 0.5 * cs[..., 2:]
    np.subtract(cs[..., :2], half, out=out[..., :2])
    np.add(cs[..., :2], half, out=out[..., 2:])
    return out
