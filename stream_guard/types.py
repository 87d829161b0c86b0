"""The data types passed unchanged from stage to stage.

Images are always RGB ``uint8`` arrays of shape ``(H, W, 3)``: PyAV decodes straight
to RGB, the face detector and the CNN want RGB, and only encoders that insist on
another layout convert at the edge.
"""
from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


class PendingImage:
    """A decoded picture whose conversion to an RGB array waits until a thread first asks for it
    (:meth:`get`); it is converted once, and whoever asks after gets the same array.

    A live source's frames go through a queue that drops the oldest when the analysis falls
    behind: a frame dropped there is never converted, and the reading thread, which must keep up
    with the stream, does not spend its time on pictures nobody looks at (tone mapping an HDR
    frame costs several times its decoding)."""

    __slots__ = ("shape", "convert_ms", "_convert", "_image", "_lock")

    def __init__(self, shape: tuple[int, int, int], convert: Callable[[], np.ndarray]) -> None:
        self.shape = shape  # (H, W, 3) of the converted array
        self.convert_ms = 0.0
        self._convert: Callable[[], np.ndarray] | None = convert
        self._image: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def converted(self) -> bool:
        """Whether a thread has converted it yet."""
        return self._image is not None

    def get(self) -> np.ndarray:
        """The RGB ``uint8`` array, converted on this thread if no thread has yet."""
        with self._lock:
            if self._image is None:
                assert self._convert is not None
                started = time.perf_counter()
                self._image = self._convert()
                self.convert_ms = (time.perf_counter() - started) * 1e3
                self._convert = None  # lets the decoded picture go
            return self._image


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame.

    ``pts_s`` is the source's presentation time in seconds (monotonic within a
    stream); ``wallclock_s`` is ``time.monotonic()`` when the frame was received,
    the start point of the latency we report, and ``received_unix_s`` the Unix time
    then (an alert's ``wall_time``, the same in every output). ``pixels`` is the
    picture, or a :class:`PendingImage` not yet converted: read it as :attr:`image`.
    """

    pixels: np.ndarray | PendingImage
    index: int
    pts_s: float
    wallclock_s: float
    source_id: str
    decode_ms: float = 0.0  # read + decode time in the capture thread (benchmarks)
    received_unix_s: float = field(default_factory=time.time)

    @property
    def image(self) -> np.ndarray:
        """The picture, RGB ``uint8`` ``(H, W, 3)`` (converted now, on this thread, if it is pending)."""
        pixels = self.pixels
        return pixels.get() if isinstance(pixels, PendingImage) else pixels

    def convert(self) -> None:
        """Convert a pending picture now, on this thread (nothing to do if it already is)."""
        if isinstance(self.pixels, PendingImage):
            self.pixels.get()

    @property
    def convert_ms(self) -> float:
        """How long the picture's conversion took, wherever it ran (0 until it has, or if it was given converted)."""
        return self.pixels.convert_ms if isinstance(self.pixels, PendingImage) else 0.0

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


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


class NotJudged(str, enum.Enum):
    """Why a tracked face is not judged on a frame: it is not sampled, and its score and verdict stay
    as they were."""

    TOO_SMALL = "too small"  # shorter than the run's minimum face size
    CUT_OFF = "cut off"  # a quarter or more of it beyond the frame's edge: its crop would be mostly invented edge


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
    ``not_judged``: why the face is tracked but not sampled on this frame (None: it is judged).
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
    not_judged: NotJudged | None = None


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
