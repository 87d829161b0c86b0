"""Run options as frozen dataclasses: the CLI parses, builds a :class:`RunConfig`, calls ``run``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stream_guard.faces.detector import DetectorOptions
from stream_guard.faces.tracker import TrackerOptions
from stream_guard.model.smoothing import SmoothingOptions
from stream_guard.outputs.alerts import AlertOptions
from stream_guard.outputs.http.options import ServeOptions
from stream_guard.outputs.mqtt import MqttTarget
from stream_guard.sources.capture import ReconnectPolicy
from stream_guard.sources.probe import DEFAULT_MAX_MEGAPIXELS

SNAPSHOT_KEEP = 1000  # --snapshot-keep's default
CLIP_PAD_S = 5.0  # --clip-pad's default: seconds of video kept before an alert and after it clears
CLIP_KEEP = 100  # --clip-keep's default
# --min-face's default: faces whose box is shorter (source pixels) are tracked but not judged. Out of fold,
# below it the shipped model ranks fakes at chance and flags most real faces (models/MODEL_CARD.md).
MIN_FACE_PX = 40.0


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """``spec`` is what the user typed: a path, a URL, ``webcam:N``, ``screen[:DISPLAY]``, ``window:TITLE`` or ``demo``."""

    spec: str
    realtime: bool = False
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    max_frames: int | None = None
    demo_seconds: float = 20.0
    drop_oldest: bool = False  # queue frames like a live source (keep the newest) even for a paced file
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS  # larger frames are refused (memory: queues hold frames)
    deinterlace: str = "auto"  # "auto" (frames flagged interlaced) | "always" | "off"
    input_options: tuple[tuple[str, str], ...] = ()  # FFmpeg options for opening the source (--input-option)
    tone_map: bool = True  # HDR (PQ, HLG) mapped to SDR; False: read as it is (--tone-map off)
    video_stream: int | None = None  # the ID of the video stream to analyse (--video-stream); None: the largest
    sound_device: str | None = None  # --sound: desktop, mic or a PulseAudio source name; None: the source's own
    recordings_only: bool = False  # a live stream is refused (scan, evaluate: a live one would never end)


@dataclass(frozen=True, slots=True)
class ModelOptions:
    """``model_dir`` None = the shipped default; ``provider`` is ``auto`` or a comma list (``cuda,cpu``);
    ``threshold`` a number, an operating point's name (``ModelSpec.threshold_for``) or None (the model's)."""

    model_dir: Path | None = None
    provider: str = "auto"
    threshold: float | str | None = None
    intra_op_threads: int = 1
    smoothing: SmoothingOptions = field(default_factory=SmoothingOptions)


@dataclass(frozen=True, slots=True)
class OutputOptions:
    out_path: Path | None = None
    out_segment_s: float | None = None  # split --out into files of this many seconds of video
    out_keep: int | None = None  # keep the newest N segment files (None: all)
    events_path: Path | None = None
    show: bool = False
    webhooks: tuple[str, ...] = ()  # --webhook [FORMAT=]URL: each gets every alert as a POST
    alerts: AlertOptions = field(default_factory=AlertOptions)  # when alerts are raised/cleared
    speak: bool = False  # say alerts aloud (espeak-ng or pyttsx3)
    snapshots: Path | None = None  # save the frame and the face of each raised alert here
    snapshot_keep: int = SNAPSHOT_KEEP  # the newest alerts whose pictures are kept
    clips: Path | None = None  # save an MP4 of the video around each fake alert here
    clip_pad_s: float = CLIP_PAD_S
    clip_keep: int = CLIP_KEEP  # the newest clips kept
    virtual_cam: bool = False  # send the annotated video to a virtual camera (pyvirtualcam)
    stream_to: str | None = None  # push the annotated video to this rtmp(s)/rtsp/udp URL
    serve: ServeOptions | None = None  # --serve: the HTTP live view (dashboard, overlay, metrics)
    mqtt: MqttTarget | None = None  # --mqtt: alerts, state and availability on an MQTT broker
    mqtt_discovery: bool = False  # --mqtt-discovery: announce a binary sensor to Home Assistant


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    """``detect_every``: run the detector on every n-th frame and track in between;
    0 = auto (every frame, every 3rd for frames large enough to be searched in tiles).
    ``min_face_px``: faces whose box is shorter are tracked but not judged (0: judge every face)."""

    detect_every: int = 0
    min_face_px: float = MIN_FACE_PX


def analysis_options(detect_every: int = 0, min_face_px: float | None = None) -> AnalysisOptions:
    """Analysis options from command-line values (``min_face_px`` None: the default)."""
    return AnalysisOptions(detect_every, MIN_FACE_PX if min_face_px is None else min_face_px)


@dataclass(frozen=True, slots=True)
class RunConfig:
    source: SourceOptions
    model: ModelOptions = field(default_factory=ModelOptions)
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    tracker: TrackerOptions = field(default_factory=TrackerOptions)
    analysis: AnalysisOptions = field(default_factory=AnalysisOptions)
    outputs: OutputOptions = field(default_factory=OutputOptions)
