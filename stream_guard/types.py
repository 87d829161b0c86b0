"""The data types passed unchanged from stage to stage.

Images are always RGB ``uint8`` arrays of shape ``(H, W, 3)``: PyAV decodes straight
to RGB, the face detector and the CNN want RGB, and only encoders that insist on
another layout convert at the edge.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame.

    ``pts_s`` is the source's presentation time in seconds (monotonic within a
    stream); ``wallclock_s`` is ``time.monotonic()`` when the frame was received,
    the start point of the latency we report.
    """

    image: np.ndarray
    index: int
    pts_s: float
    wallclock_s: float
    source_id: str
    decode_ms: float = 0.0  # read + decode + colour conversion time in the capture thread (benchmarks)

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a source knows about its stream once opened."""

    source_id: str
    width: int
    height: int
    fps: float | None
    frame_count: int | None
    is_live: bool
    has_sound: bool = False  # the source publishes its sound (SoundChunk) for the outputs that carry it


SOUND_RATE = 48_000  # the sound passed between stages: 48 kHz stereo float, whatever the source had
SOUND_CHANNELS = 2
SOUND_LAYOUT = "stereo"


@dataclass(frozen=True, slots=True)
class SoundChunk:
    """A run of the source's sound, converted to :data:`SOUND_RATE` stereo.

    ``samples`` is ``(2, N)`` float32 in -1..1; ``pts_s`` is the first sample's time on the
    same clock as the video frames' :attr:`Frame.pts_s` (so sound and pictures line up).
    """

    samples: np.ndarray
    pts_s: float

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / SOUND_RATE


@dataclass(frozen=True, slots=True)
class FaceDetections:
    """Faces found in one frame, in pixel coordinates of that frame.

    ``boxes`` is ``(N, 4)`` float32 ``[x1, y1, x2, y2]``; ``scores`` is ``(N,)``;
    ``keypoints`` is ``(N, 6, 2)``: right eye, left eye, nose tip, mouth centre,
    right ear tragion, left ear tragion (the subject's right/left, as MediaPipe).
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray

    @staticmethod
    def empty() -> "FaceDetections":
        return FaceDetections(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            keypoints=np.zeros((0, 6, 2), np.float32),
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, keep: np.ndarray) -> "FaceDetections":
        return FaceDetections(self.boxes[keep], self.scores[keep], self.keypoints[keep])


class Verdict(str, enum.Enum):
    REAL = "real"
    FAKE = "fake"
    UNCERTAIN = "uncertain"


class TrackState(str, enum.Enum):
    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class FaceResult:
    """One tracked face in one frame, with its score so far.

    ``raw_score`` is the latest model probability (None before the first
    window is scored), ``score`` the smoothed probability the verdict uses, and
    ``scored`` tells whether the model ran for this face on this frame.
    ``too_small``: the face is below the run's minimum face size, so it is
    tracked but not sampled (its score and verdict stay as they were).
    """

    track_id: int
    state: TrackState
    box: np.ndarray
    detection_score: float
    keypoints: np.ndarray
    raw_score: float | None
    score: float | None
    verdict: Verdict
    scored: bool
    verdict_changed: bool
    samples: int
    too_small: bool = False


@dataclass(frozen=True, slots=True)
class StageTimes:
    """Milliseconds spent per stage on one frame (0 where a stage did not run)."""

    detect_ms: float = 0.0
    track_ms: float = 0.0
    crop_ms: float = 0.0
    cnn_ms: float = 0.0
    temporal_ms: float = 0.0
    overlay_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class FrameResult:
    """Everything the analysis thread produced for one frame; what sinks receive."""

    frame: Frame
    annotated: np.ndarray
    faces: tuple[FaceResult, ...]
    detected: bool
    latency_ms: float
    fps: float
    times: StageTimes = field(default_factory=StageTimes)
    frames_dropped: int = 0  # dropped by the live capture queue so far in this run
