"""The analysis stage: detect, track, crop, score, draw. All its state lives on one thread."""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from stream_guard.faces.crop import crop_face, share_beyond_frame
from stream_guard.faces.detector import FaceDetector
from stream_guard.faces.regions import FaceRegions
from stream_guard.faces.shot_change import ShotChangeDetector
from stream_guard.faces.tracker import FaceTracker, Track
from stream_guard.model.scorer import FaceScorer, TrackMemory
from stream_guard.outputs.overlay import HudInfo, annotate
from stream_guard.types import (FaceDetections, FaceResult, Frame, FrameResult, NotJudged, StageTimes, TrackState,
                                Verdict)

AUTO_TILED_DETECT_EVERY = 3  # detector schedule for large (tiled) frames when detect_every is 0 (auto)
# A face with this share of its box (or more) beyond the frame's edge is not judged: with a quarter of the
# face gone, its crop's scores no longer rank fakes above reals (research log, "Faces cut by the frame's edge").
CUT_OFF_SHARE = 0.25
MAX_FAKE_STEP_S = 1.0  # the most stream time between two frames that counts towards a face's time judged fake
DETECT_HERE = object()  # process()'s default: run the detector on this thread, on the schedule
FPS_WINDOW_S = 2.0  # the frame rate shown is that of this last stretch of time


@dataclass(slots=True)
class TrackSummary:
    """What the end-of-run summary reports per face track."""

    track_id: int
    first_s: float
    last_s: float
    verdict: str
    score: float | None
    mean_score: float | None
    max_score: float | None
    n_scores: int
    fake_s: float = 0.0  # stream time during which its verdict was fake
    _reported_s: float | None = None  # when it was last reported (for fake_s)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__ if not k.startswith("_")}

    def count_fake_time(self, pts_s: float, verdict: Verdict) -> None:
        """Add the time since the last report to ``fake_s`` if the face is judged fake now. A step
        is at most :data:`MAX_FAKE_STEP_S`: a gap in the stream is not time anyone saw it."""
        if verdict is Verdict.FAKE and self._reported_s is not None:
            self.fake_s += min(max(0.0, pts_s - self._reported_s), MAX_FAKE_STEP_S)
        self._reported_s = pts_s


class Analyzer:
    """Turns frames into :class:`FrameResult` objects. Not thread-safe by design:
    the tracker and every face's memory belong to the thread that calls ``process``."""

    def __init__(self, detector: FaceDetector, tracker: FaceTracker[TrackMemory], scorer: FaceScorer,
                 detect_every: int = 1, max_summaries: int = 1000, regions: FaceRegions | None = None,
                 min_face_px: float = 0.0, shot_changes: ShotChangeDetector | None = None) -> None:
        if scorer.spec.regions and regions is None:
            raise ValueError(f"model {scorer.spec.name} takes face-region masks: pass regions (a FaceRegions)")
        self.detector = detector
        self.tracker = tracker
        self.scorer = scorer
        self.regions = regions if scorer.spec.regions else None
        self.detect_every = max(0, detect_every)  # 0 = auto (see detect_interval)
        self.min_face_px = max(0.0, min_face_px)  # shorter faces are not sampled (see too_small)
        self.shot_changes = shot_changes if shot_changes is not None else ShotChangeDetector()
        self.summaries: dict[int, TrackSummary] = {}
        self.max_summaries = max_summaries
        self.status = ""
        self._out_times: deque[float] = deque()  # when the frames of the last FPS_WINDOW_S came out
        self._last_pts: float | None = None
        self._frame_period_s = 1.0 / 30.0  # running estimate from stream timestamps
        self._tracking = threading.Event()  # set while any face is tracked; read by the detection thread

    def warm_up(self, width: int, height: int) -> None:
        """Run every model once on blank input so the first real frame is not slowed
        by ONNX Runtime's first-call set-up (on a live stream that would drop frames)."""
        self.detector.detect(np.zeros((height, width, 3), np.uint8))
        size = self.scorer.spec.input_size
        masks: list[np.ndarray] = []
        if self.regions is not None:
            box, keypoints = np.array([0, 0, 64, 64], np.float32), np.array([[20, 28], [44, 28]], np.float32)
            masks = [m[None] for m in self.regions(np.zeros((64, 64, 3), np.uint8), box, keypoints)[0]]
        embedding = self.scorer.encode(np.zeros((1, size, size, 3), np.uint8), masks)
        self.scorer.probabilities([embedding])

    def reset(self, status: str = "") -> None:
        """Forget every face (after a gap in a live stream): ids keep counting."""
        self.tracker.reset()
        self.shot_changes.reset()
        self._tracking.clear()
        self.status = status

    def _fps_update(self, now: float) -> float:
        """Frames out per second over the last :data:`FPS_WINDOW_S`: frames counted over time, not an
        average of 1/gap, which frames that come in bursts (a few ms apart, then a wait) inflated to
        3-5x the real rate."""
        times = self._out_times
        times.append(now)
        while now - times[0] > FPS_WINDOW_S:
            times.popleft()
        span = now - times[0]
        return (len(times) - 1) / span if span > 0 else 0.0

    def _track_frame_period(self, pts_s: float) -> None:
        if self._last_pts is not None and 0.0 < pts_s - self._last_pts < 1.0:
            self._frame_period_s = 0.9 * self._frame_period_s + 0.1 * (pts_s - self._last_pts)
        self._last_pts = pts_s

    def _crop_budget(self, n_faces: int, every: int) -> int:
        """How many faces may go to the CNN on one frame. On a GPU, all due faces go as one
        batch. On a CPU a batch costs the sum of its crops, so the faces' work is spread over
        the frames of one sampling period (minus detector frames): no frame carries every
        face's CNN at once, and each face still keeps the model's sampling rate. (Faces never scored
        yet go beyond it: see :meth:`_score`.)"""
        if self.scorer.provider != "CPUExecutionProvider":
            return n_faces
        frames = self.scorer.sample_period_s / max(1e-3, self._frame_period_s)
        if every > 1:
            frames *= (every - 1) / every
        return max(1, math.ceil(n_faces / max(1.0, frames)))

    def not_judged(self, track: Track[TrackMemory], frame: Frame) -> NotJudged | None:
        """Why the face is not judged on ``frame``: shorter than the minimum face size, or cut off by
        the frame's edge (:data:`CUT_OFF_SHARE`); None when it is judged."""
        if float(track.box[3] - track.box[1]) < self.min_face_px:
            return NotJudged.TOO_SMALL
        if share_beyond_frame(track.box, frame.width, frame.height) >= CUT_OFF_SHARE:
            return NotJudged.CUT_OFF
        return None

    def _score(self, frame: Frame, tracks: list[Track[TrackMemory]], unjudged: dict[int, NotJudged | None],
               every: int = 1) -> tuple[set[int], set[int], float, float]:
        live = [t for t in tracks if t.state is TrackState.CONFIRMED and t.misses == 0 and unjudged[t.id] is None]
        due = [t for t in live if self.scorer.due(t.memory, frame.pts_s)]
        # most overdue first (never-sampled faces first of all)
        due.sort(key=lambda t: -1e9 if t.memory.last_sample_pts is None else t.memory.last_sample_pts)
        # a face's first score is not put off: a face seen for a moment (a clip of two frames) gets one
        never_scored = sum(1 for t in due if t.memory.last_sample_pts is None)
        due = due[:max(never_scored, self._crop_budget(len(live), every))]
        if not due:
            return set(), set(), 0.0, 0.0
        t0 = time.perf_counter()
        spec = self.scorer.spec
        crops = np.stack([crop_face(frame.image, t.box, spec.input_size, spec.crop_margin) for t in due])
        regions: list[np.ndarray] = []
        if self.regions is not None:
            per_face = []
            for t in due:
                masks, t.memory.mesh = self.regions(frame.image, t.box, t.keypoints, t.memory.mesh)
                per_face.append(masks)
            regions = [np.stack(per_size) for per_size in zip(*per_face)]
        t1 = time.perf_counter()
        changed = self.scorer.score([t.memory for t in due], crops, frame.pts_s, regions)
        return ({t.id for t in due}, {t.id for t, c in zip(due, changed) if c}, (t1 - t0) * 1e3,
                self.scorer.last_cnn_ms)

    def _face_result(self, track: Track[TrackMemory], not_judged: NotJudged | None, scored: bool,
                     changed: bool) -> FaceResult:
        m = track.memory
        return FaceResult(
            track_id=track.id, state=track.state, box=track.box.copy(), detection_score=float(track.detection_score),
            keypoints=track.keypoints.copy(), raw_score=m.raw_score, score=m.smoother.score,
            verdict=m.smoother.verdict, scored=scored, verdict_changed=changed, samples=m.n_scores,
            not_judged=not_judged,
        )

    def _remember(self, face: FaceResult, track: Track[TrackMemory], pts_s: float) -> None:
        if face.state is TrackState.TENTATIVE:
            return
        m = track.memory
        summary = self.summaries.get(face.track_id)
        if summary is None:
            if len(self.summaries) >= self.max_summaries:
                self.summaries.pop(next(iter(self.summaries)))
            summary = self.summaries[face.track_id] = TrackSummary(face.track_id, pts_s, pts_s, "", None, None, None, 0)
        if track.misses == 0:  # seen, not coasting on a prediction (that may span a jump in time)
            summary.last_s = pts_s
        summary.count_fake_time(pts_s, face.verdict)
        summary.verdict = face.verdict.value
        summary.score = face.score
        summary.n_scores = m.n_scores
        if m.n_scores:
            summary.mean_score = m.sum_scores / m.n_scores
            summary.max_score = m.max_score

    def detect_interval(self, width: int, height: int) -> int:
        """Frames per detector run: ``detect_every``, or when that is 0 (auto) every 3rd frame
        for frames the detector searches in tiles (about 3x the cost of one pass), else every frame."""
        if self.detect_every:
            return self.detect_every
        return AUTO_TILED_DETECT_EVERY if self.detector.options.tiling(width, height) else 1

    def on_schedule(self, frame: Frame) -> bool:
        """Whether ``frame`` is one of the detector's scheduled frames (:meth:`detect_interval`)."""
        return frame.index % self.detect_interval(frame.width, frame.height) == 0

    def tracking(self) -> bool:
        """Whether any face is tracked, as of the last frame the tracker took. Safe to call from a
        detection thread running ahead: it reads only a flag."""
        return self._tracking.is_set()

    def wants_detection(self, frame: Frame) -> bool:
        """Whether the detector should run on ``frame``: on the schedule, and on every frame
        while no face is tracked."""
        return self.on_schedule(frame) or not self.tracking()

    def process(self, frame: Frame, frames_dropped: int = 0, detections: FaceDetections | None | object = DETECT_HERE,
                detect_ms: float = 0.0) -> FrameResult:
        """One frame in, its result out. ``detections``: what a detection thread found on this
        frame (None: it skipped the frame); by default the detector runs here, on the schedule."""
        t0 = time.perf_counter()
        every = self.detect_interval(frame.width, frame.height)
        inline = detections is DETECT_HERE
        if inline:
            detections = self.detector.detect(frame.image) if self.wants_detection(frame) else None
            detect_ms = (time.perf_counter() - t0) * 1e3
        detected = detections is not None
        t1 = time.perf_counter()
        if self.shot_changes.is_cut(frame.image) and self.tracker.tracks:
            # A new shot: its faces are new faces, whatever their positions; on a frame the detector skips,
            # they are found on the next one it runs on.
            self.tracker.reset()
        tracks = self.tracker.update(detections, frame.pts_s) if detected else self.tracker.predict(frame.pts_s)
        if self.tracker.tracks:
            self._tracking.set()
        else:
            self._tracking.clear()
        t2 = time.perf_counter()
        self._track_frame_period(frame.pts_s)
        # With a thinned-out detector running on this thread, faces due for scoring wait one frame rather
        # than share a frame with a detector run: the two costliest stages never pile onto one frame.
        # A detection thread running ahead carries that cost elsewhere, so every frame may score.
        shared = every if inline else 1
        unjudged = {t.id: self.not_judged(t, frame) for t in tracks}
        scored, changed, crop_ms, model_ms = (set(), set(), 0.0, 0.0) if detected and shared > 1 else \
            self._score(frame, tracks, unjudged, shared)
        faces = tuple(self._face_result(t, unjudged[t.id], t.id in scored, t.id in changed) for t in tracks)
        for face, track in zip(faces, tracks):
            self._remember(face, track, frame.pts_s)
        t3 = time.perf_counter()
        now = time.monotonic()
        latency_ms = (now - frame.wallclock_s) * 1e3
        fps = self._fps_update(now)
        hud = HudInfo(fps=fps, latency_ms=latency_ms, faces=len(faces), model_name=self.scorer.spec.name,
                      untrained=not self.scorer.spec.trained, status=self.status)
        annotated = annotate(frame.image, faces, hud)
        t4 = time.perf_counter()
        times = StageTimes(detect_ms=detect_ms if detected else 0.0, track_ms=(t2 - t1) * 1e3,
                           crop_ms=crop_ms, cnn_ms=model_ms,
                           temporal_ms=self.scorer.last_temporal_ms if scored else 0.0, overlay_ms=(t4 - t3) * 1e3)
        latency_ms = (time.monotonic() - frame.wallclock_s) * 1e3
        return FrameResult(frame=frame, annotated=annotated, faces=faces, detected=detected,
                           latency_ms=latency_ms, fps=fps, times=times, frames_dropped=frames_dropped)
