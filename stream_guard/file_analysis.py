"""Analyse one video or image file to the end and summarise it per face and per file.

Used by ``stream-guard evaluate`` and ``stream-guard scan``. How scores combine:

* **window score**: each time a face is sampled (``sample_hz`` of the model), the recurrent
  head scores that face's last ``window`` crops: one calibrated probability.
* **face (track) score**: the mean of its window scores.
* **file score**: the highest face score among faces with at least ``min_windows`` scored
  windows (a file is as fake as its most suspicious face); if no face has that many, the
  highest score of any face. A file in which no face was found has no score, nor one whose
  faces were never judged: all below the run's minimum face size (``faces_too_small`` counts
  them) or cut off by the frame's edge (``faces_cut_off``).
* **stills**: an image, or a video of a single frame (a still saved as a GIF), is scored as a
  one-second clip of that picture (a face must be seen more than once to be tracked), and
  reported as that clip.

Beside the scores, each file is also watched as a live run would watch it: the same alert rule
(:class:`~stream_guard.outputs.alerts.AlertStateMachine`, the run's ``--alert-raise`` and
``--alert-clear``) counts the fake alerts a monitor would have raised and when the first came,
and, when asked (``keep_trace``), its window scores are kept
(:class:`~stream_guard.alert_replay.AlertTrace`) to replay the rule at other thresholds.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from stream_guard.alert_replay import AlertTrace
from stream_guard.config import RunConfig
from stream_guard.errors import NotAVideoError, StillImageError
from stream_guard.faces.crop import crop_face
from stream_guard.model.occlusion import Explaining, OcclusionMap, WindowRecorder
from stream_guard.model.provenance import Provenance
from stream_guard.outputs.alerts import RAISED, AlertOptions, AlertStateMachine
from stream_guard.outputs.base import Sink
from stream_guard.pipeline import Pipeline, RunSummary
from stream_guard.sources.display import stream_display
from stream_guard.sources.probe import MIN_FRAME_SIDE
from stream_guard.sources.pyav_source import STILL_IMAGE_BRANDS
from stream_guard.sources.spec import file_source_text, missing_file, parse_source, redact_url, url_scheme
from stream_guard.types import FrameResult, NotJudged, TrackState

log = logging.getLogger(__name__)

Scanned = Path | str  # what is analysed: a file, or a recording's URL
STILL_FRAMES = 10  # a still picture is scored as this many frames at 10 fps
STILL_TIMEOUT_S = 30.0  # to fetch a picture over the network
HEIF_SUFFIXES = frozenset({".heic", ".heif"})  # how iPhones save photos: read by pillow-heif (the heic extra)
# .jfif: how browsers save some JPEGs
# pictures that may be animations (messengers' stickers, memes): scored as the video they play as
ANIMATED_PICTURE_SUFFIXES = frozenset({".webp", ".png", ".apng", ".avif"})
IMAGE_SUFFIXES = (frozenset({".jpg", ".jpeg", ".jfif", ".bmp", ".tif", ".tiff"}) | ANIMATED_PICTURE_SUFFIXES
                  | HEIF_SUFFIXES)
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv",
                            ".3gp", ".3g2",  # older phones
                            ".mts", ".m2ts", ".vob", ".mxf", ".dv",  # camcorders (AVCHD), DVDs, broadcast
                            ".ogv", ".gif"})  # animated pictures: how many face-swap memes are shared


def printable(name: str) -> str:
    """``name`` with the bytes of a file name that are not UTF-8 (kept by Python as lone surrogates,
    which no UTF-8 file or font takes) shown as U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def scanned_name(target: Scanned) -> str:
    """A file's path, or a URL with its credentials hidden, printable."""
    return printable(redact_url(target) if isinstance(target, str) else str(target))


def scanned_stem(target: Scanned) -> str:
    """The name of a file, or of the last part of a URL's path, without its suffix, printable."""
    return printable(Path(urlsplit(target).path if isinstance(target, str) else target).stem or "picture")


@dataclass
class TrackSeries:
    """Every scored window of one face track."""

    track_id: int
    times_s: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    heights: list[float] = field(default_factory=list)  # the face's box height (px) at each scored window
    verdict: str = "uncertain"
    peak_score: float = -1.0
    peak_time_s: float = 0.0
    peak_crop: np.ndarray | None = None  # RGB face crop at the most suspicious window
    explanation: OcclusionMap | None = None  # what the peak window's score rests on (when asked)

    @property
    def score(self) -> float | None:
        return float(np.mean(self.scores)) if self.scores else None

    @property
    def face_px(self) -> float | None:
        """The face's median box height (px) over its scored windows."""
        return float(np.median(self.heights)) if self.heights else None

    def to_json(self) -> dict:
        return {"track_id": self.track_id, "score": self.score, "verdict": self.verdict,
                "windows": len(self.scores), "peak_score": self.peak_score if self.scores else None,
                "face_px": None if self.face_px is None else round(self.face_px, 1),
                "peak_time_s": self.peak_time_s, "times_s": [round(t, 3) for t in self.times_s],
                "scores": [round(s, 4) for s in self.scores]}


@dataclass(frozen=True)
class FileAnalysis:
    path: Scanned
    frames: int
    duration_s: float
    tracks: tuple[TrackSeries, ...]
    score: float | None
    provenance: Provenance  # the software, model and threshold that judged it
    alerts: int = 0  # fake alerts the live alert rule raised
    first_alert_s: float | None = None  # stream time of the first
    trace: AlertTrace | None = None  # with keep_trace: to replay the alert rule at other thresholds
    faces_too_small: int = 0  # faces seen only below the minimum face size (tracked, never judged)
    faces_cut_off: int = 0  # the other faces never judged: cut off by the frame's edge whenever seen

    @property
    def has_face(self) -> bool:
        return any(t.scores for t in self.tracks)

    @property
    def face_px(self) -> float | None:
        """The median box height (px) of the face whose score is the file's."""
        track = scoring_track(self.tracks)
        return None if track is None else track.face_px

    @property
    def verdict(self) -> str:
        if self.score is None:
            return "no-face"
        return "fake" if self.score >= self.provenance.threshold else "real"

    def to_json(self) -> dict:
        return {"file": scanned_name(self.path), "frames": self.frames, "duration_s": round(self.duration_s, 3),
                "score": self.score, "verdict": self.verdict, **self.provenance.to_json(),
                "alerts": self.alerts, "first_alert_s": self.first_alert_s, "faces_too_small": self.faces_too_small,
                "faces_cut_off": self.faces_cut_off,
                "tracks": [t.to_json() for t in self.tracks if t.scores]}


def no_score_text(faces_too_small: int = 0, faces_cut_off: int = 0) -> str:
    """Why a file has no score: ``no face found``, or which faces were seen but never judged."""
    why = [f"{faces_too_small} below --min-face"] if faces_too_small else []
    why += [f"{faces_cut_off} cut off by the frame's edge"] if faces_cut_off else []
    return f"no face judged ({', '.join(why)})" if why else "no face found"


def scoring_track(tracks: list[TrackSeries] | tuple[TrackSeries, ...], min_windows: int = 3) -> TrackSeries | None:
    """The face whose score is the file's (see the module docstring)."""
    scored = [t for t in tracks if t.scores]
    if not scored:
        return None
    steady = [t for t in scored if len(t.scores) >= min_windows] or scored
    return max(steady, key=lambda t: t.score)  # type: ignore[arg-type,return-value]


def file_score(tracks: list[TrackSeries] | tuple[TrackSeries, ...], min_windows: int = 3) -> float | None:
    """See the module docstring."""
    track = scoring_track(tracks, min_windows)
    return None if track is None else track.score


class _Collector:
    """Receives every FrameResult on the analysis thread and keeps per-track series."""

    def __init__(self, alerts: AlertOptions, crop_size: int = 160, keep_trace: bool = False,
                 recorder: WindowRecorder | None = None) -> None:
        self.tracks: dict[int, TrackSeries] = {}
        self.frames = 0
        self.last_pts = 0.0
        self.crop_size = crop_size
        self.alert_rule = AlertStateMachine(alerts)
        self.alert_times: list[float] = []
        self.trace = AlertTrace() if keep_trace else None
        self.unjudged: dict[NotJudged, set[int]] = {reason: set() for reason in NotJudged}  # faces seen not judged
        self.recorder = recorder
        self.first_picture: np.ndarray | None = None  # kept while it is the only frame

    def never_judged(self, tracks: Iterable[TrackSeries]) -> dict[str, int]:
        """How many faces were seen but never judged, by why: ``faces_too_small``, and
        ``faces_cut_off`` for the others (:class:`FileAnalysis`)."""
        judged = {t.track_id for t in tracks if t.scores}
        small = self.unjudged[NotJudged.TOO_SMALL] - judged
        return {"faces_too_small": len(small),
                "faces_cut_off": len(self.unjudged[NotJudged.CUT_OFF] - judged - small)}

    def __call__(self, result: FrameResult) -> None:
        self.frames += 1
        self.first_picture = result.frame.image if self.frames == 1 else None
        self.last_pts = result.frame.pts_s
        self.alert_times += [a.stream_time_s for a in self.alert_rule.update(result) if a.kind == RAISED]
        if self.trace is not None:
            self.trace.add(result)
        if self.recorder is not None:
            self.recorder.add(result)
        for face in result.faces:
            if face.not_judged is not None and face.state is TrackState.CONFIRMED:
                self.unjudged[face.not_judged].add(face.track_id)
            if not face.scored or face.raw_score is None:
                continue
            series = self.tracks.setdefault(face.track_id, TrackSeries(face.track_id))
            series.times_s.append(result.frame.pts_s)
            series.scores.append(face.raw_score)
            series.smoothed.append(face.score if face.score is not None else face.raw_score)
            series.heights.append(float(face.box[3] - face.box[1]))
            series.verdict = face.verdict.value
            if face.raw_score > series.peak_score:
                series.peak_score = face.raw_score
                series.peak_time_s = result.frame.pts_s
                series.peak_crop = crop_face(result.frame.image, face.box, self.crop_size, 0.2)


def read_picture(path: Path) -> np.ndarray:
    """The RGB picture in the image file at ``path``, turned as its EXIF (or HEIF) orientation says."""
    if path.suffix.lower() in HEIF_SUFFIXES or _heif_brand(path):
        return _read_heif(path)
    data = _file_bytes(path)
    if not data.size:  # OpenCV asserts on no bytes: that took the whole scan down
        raise NotAVideoError(f"{path}: is empty (0 bytes), not a picture")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as e:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(e):  # a few KB of PNG can say 40000x30000
            raise NotAVideoError(f"{path}: the picture is too large to decode (more pixels than OpenCV's "
                                 "limit, a gigapixel unless OPENCV_IO_MAX_IMAGE_PIXELS says otherwise)") from None
        raise NotAVideoError(f"{path}: not an image OpenCV can read ({str(e).strip().splitlines()[-1]})") from None
    if image is None:
        raise NotAVideoError(f"{path}: not an image OpenCV can read")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _file_bytes(path: Path) -> np.ndarray:
    """The bytes of the file at ``path``, for OpenCV to decode: its own readers take a name only as UTF-8
    text, and one in another encoding (Latin-1 ``café.jpg`` from an old camera) crashed the process."""
    try:
        return np.fromfile(path, np.uint8)
    except OSError as e:
        raise NotAVideoError(f"{path}: cannot be read ({e.strerror or e})") from None


def _heif_brand(path: Path) -> bool:
    """Whether the file starts as a HEIF picture does (its ``ftyp`` box's brand), whatever its name."""
    try:
        with path.open("rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12].decode("latin-1") in STILL_IMAGE_BRANDS - {"avif"}


def _read_heif(path: Path) -> np.ndarray:
    """A HEIC/HEIF photo through libheif, which puts together the tiles a phone stores a photo as (FFmpeg
    gives each tile alone) and applies its turn and mirror."""
    try:
        import pillow_heif
    except ImportError:
        raise NotAVideoError(f"{path}: reading HEIC photos needs pillow-heif: "
                             "pip install 'stream-guard[heic]'") from None
    try:
        return np.asarray(pillow_heif.open_heif(str(path), convert_hdr_to_8bit=True).to_pillow().convert("RGB"))
    except (ValueError, RuntimeError, OSError) as e:
        raise NotAVideoError(f"{path}: not a HEIC picture pillow-heif can read ({e})") from None


def _picture_at(url: str) -> np.ndarray:
    """The picture at ``url`` (a JPEG, a PNG...), decoded by FFmpeg as RGB and turned as its EXIF orientation says."""
    import av

    spec = parse_source(url)
    try:
        with av.open(spec.url, options=spec.options, timeout=STILL_TIMEOUT_S) as container:
            stream = container.streams.video[0]
            frame = next(container.decode(stream))
            return stream_display(stream, frame).apply(frame.to_ndarray(format="rgb24"))
    except (av.FFmpegError, StopIteration) as e:
        raise NotAVideoError(f"{spec.display_name}: the picture could not be decoded ({e})") from None


def _fitted(rgb: np.ndarray, max_megapixels: float, name: str) -> np.ndarray:
    """``rgb`` shrunk to at most ``max_megapixels`` (the run's limit for a frame: a phone's photo has 12 to 200),
    with even sides (the clip's codec needs them)."""
    if min(rgb.shape[:2]) < MIN_FRAME_SIDE:  # said of the picture, not of the clip made from it
        raise NotAVideoError(f"{name}: the picture is {rgb.shape[1]}x{rgb.shape[0]} pixels: too small to show a face "
                             f"(minimum {MIN_FRAME_SIDE}x{MIN_FRAME_SIDE})")
    pixels = rgb.shape[0] * rgb.shape[1]
    if pixels > max_megapixels * 1e6:
        scale = (max_megapixels * 1e6 / pixels) ** 0.5
        size = (max(2, int(rgb.shape[1] * scale)), max(2, int(rgb.shape[0] * scale)))
        if min(size) < MIN_FRAME_SIDE:
            raise NotAVideoError(f"{name}: --max-megapixels {max_megapixels:g} would shrink the picture to "
                                 f"{size[0]}x{size[1]} pixels: too small to show a face (raise it)")
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    h, w = rgb.shape[0] - rgb.shape[0] % 2, rgb.shape[1] - rgb.shape[1] % 2
    return np.ascontiguousarray(rgb[:h, :w])


def _lossless_clip(pictures: Iterable[tuple[np.ndarray, int]], out: Path, max_megapixels: float, name: str) -> Path:
    """RGB pictures, each shown for its milliseconds, as a lossless clip at ``out`` (each fitted to the
    first one's size); ``name``: the file they come from, for errors."""
    import av

    with av.open(str(out), "w") as container:
        stream = None
        ms = 0
        for rgb, duration_ms in pictures:
            rgb = _fitted(rgb, max_megapixels, name)
            if stream is None:
                stream = container.add_stream("ffv1")
                stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "bgr0"
                # milliseconds for the encoder too: at a rate of 10 a sticker's 40 ms frames were stamped
                # 0, 0, 100, 100..., and the tracker took one face for several
                stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
            elif rgb.shape[:2] != (stream.height, stream.width):
                rgb = cv2.resize(rgb, (stream.width, stream.height), interpolation=cv2.INTER_AREA)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            container.mux(stream.encode(frame))
            ms += duration_ms
        if stream is not None:
            container.mux(stream.encode(None))
    if stream is None:  # (an animation cut short: its first frame cannot be decoded)
        raise NotAVideoError(f"{name}: no picture in it could be decoded (a truncated or damaged file?)")
    return out


def _still_clip(rgb: np.ndarray, out: Path, frames: int, max_megapixels: float, name: str) -> Path:
    """``frames`` copies of one RGB picture as a lossless 10 fps clip at ``out``."""
    return _lossless_clip(((rgb, 100) for _ in range(frames)), out, max_megapixels, name)


def _animation_frames(path: Path, chunk: int = 64) -> Iterator[tuple[np.ndarray, int]]:
    """The frames of an animated picture (RGB) and how long each is shown, read ``chunk`` at a time (a long
    animation is never all in memory). A frame shown for 10 ms or less is shown for 100 ms, as browsers do."""
    start = 0
    while True:
        ok, animation = cv2.imdecodeanimation(_file_bytes(path), start, chunk)
        for bgr, ms in zip(animation.frames, animation.durations):
            code = cv2.COLOR_BGRA2RGB if bgr.ndim == 3 and bgr.shape[2] == 4 else cv2.COLOR_BGR2RGB
            yield cv2.cvtColor(bgr, code), int(ms) if ms > 10 else 100
        if not ok:  # cut short (a download that stopped): what came before is scored, and said to be all
            log.warning("%s: the animation ends after frame %d, cut short (a truncated file?): scored on those",
                        path, start + len(animation.frames))
            return
        if len(animation.frames) < chunk:
            return
        start += chunk


def _is_animation(path: Path) -> bool:
    """Whether the picture is an animation (an animated WebP sticker, an APNG): more than one frame."""
    if path.suffix.lower() not in ANIMATED_PICTURE_SUFFIXES:
        return False
    _, animation = cv2.imdecodeanimation(_file_bytes(path), 0, 2)  # (not ok: cut short after them)
    return len(animation.frames) > 1


def _explain(tracks: tuple[TrackSeries, ...], recorder: WindowRecorder, threshold: float, every_face: bool) -> None:
    """Give each face judged fake (or ``every_face``) the occlusion map of its most suspicious window."""
    for track in tracks:
        if track.scores and (every_face or track.score >= threshold):
            track.explanation = recorder.explain(track.track_id)


def _run_pipeline(source: Scanned, config: RunConfig, max_frames: int | None, keep_trace: bool,
                  explaining: Explaining | None, sinks: Sequence[Sink],
                  on_pipeline: Callable[[Pipeline], None] | None,
                  ) -> tuple[RunSummary, _Collector, WindowRecorder | None]:
    """The pipeline over every frame of ``source``, without pacing or outputs, and what it collected."""
    spec = source if isinstance(source, str) else file_source_text(source)  # a file named "demo" is that file
    run_config = dataclasses.replace(
        config, source=dataclasses.replace(config.source, spec=spec, max_frames=max_frames, realtime=False,
                                           drop_oldest=False, recordings_only=True),
        outputs=dataclasses.replace(config.outputs, show=False, out_path=None, events_path=None))
    recorder = None
    if explaining is not None:
        keep_from = 0.0 if explaining.every_face else explaining.explainer.scorer.threshold
        recorder = WindowRecorder(explaining.explainer, keep_from)
    collector = _Collector(config.outputs.alerts, keep_trace=keep_trace, recorder=recorder)
    pipeline = Pipeline(run_config, extra_sinks=sinks, on_result=collector)
    if on_pipeline is not None:
        on_pipeline(pipeline)
    summary = pipeline.run()
    return summary, collector, recorder


def analyse_file(path: str | Path, config: RunConfig, max_frames: int | None = None,
                 scratch: Path | None = None, keep_trace: bool = False,
                 explaining: Explaining | None = None,
                 sinks: Sequence[Sink] = (),
                 on_pipeline: Callable[[Pipeline], None] | None = None) -> FileAnalysis:
    """Run the real pipeline over one file, or a recording at a URL (every frame, no pacing), and summarise it.
    Images are scored as a one-second still clip, written in ``scratch`` (a temporary folder if None).
    A live stream is refused (:class:`SourceError`): it has no end to analyse to.
    ``keep_trace``: keep every frame's window scores (``trace``), about 20 MB an hour of 30 fps video with one face.
    ``explaining``: add an occlusion map to each face judged fake, or to every face.
    ``sinks``: outputs that also receive the run's frames (a progress bar, a window).
    ``on_pipeline``: called with each run's pipeline before it starts, so that another thread can stop it
    (the analysis then covers what was read)."""
    target: Scanned = path if isinstance(path, str) and url_scheme(path) not in (None, "file") else Path(path)
    if isinstance(target, Path) and not target.is_file():
        raise missing_file(str(target), target)
    if isinstance(target, str) and Path(urlsplit(target).path).suffix.lower() in HEIF_SUFFIXES:
        raise NotAVideoError(f"{scanned_name(target)}: HEIC pictures are read from files (FFmpeg cannot put "
                             "their tiles together): download it, then scan the file")

    def run(source: Scanned, run_config: RunConfig = config) -> tuple[RunSummary, _Collector, WindowRecorder | None]:
        return _run_pipeline(source, run_config, max_frames, keep_trace, explaining, sinks, on_pipeline)

    # A still's ten frames cost little to search in tiles whatever its size: a group photo's faces are too
    # small for the detector's whole-frame pass well below the size at which a video's frames are tiled.
    # There the tiles only add faces: those the whole picture shows keep the boxes the model was trained on.
    # (Its detector runs on every frame all the same: ten frames cost little.)
    # (--detect-tiles off, tile_above 0, is obeyed.)
    tiles = 1 if config.detector.tile_above else 0
    tiled = dataclasses.replace(config, detector=dataclasses.replace(config.detector, add_tiles_above=tiles),
                                analysis=dataclasses.replace(config.analysis, detect_every=1))

    with contextlib.ExitStack() as cleanup:
        folder = scratch or Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="stream_guard_still_")))

        def run_still(rgb: np.ndarray) -> tuple[RunSummary, _Collector, WindowRecorder | None]:
            return run(_still_clip(rgb, folder / (scanned_stem(target) + ".mkv"), STILL_FRAMES,
                                   config.source.max_megapixels, scanned_name(target)), tiled)

        if isinstance(target, Path) and _is_animation(target):  # scored as the video it plays as
            summary, collector, recorder = run(_lossless_clip(
                _animation_frames(target), folder / (scanned_stem(target) + ".mkv"), config.source.max_megapixels,
                scanned_name(target)))
        elif isinstance(target, Path) and target.suffix.lower() in IMAGE_SUFFIXES:
            summary, collector, recorder = run_still(read_picture(target))
        else:
            try:
                summary, collector, recorder = run(target)
            except StillImageError:  # a picture whatever its name says (a photo saved without its suffix)
                summary, collector, recorder = run_still(
                    _picture_at(target) if isinstance(target, str) else read_picture(target))
        if collector.frames == 1 and collector.first_picture is not None:
            # a video of one picture (a still saved as a GIF or a one-frame clip) is scored as a still: a face
            # seen once is never tracked, so it would be "no-face"
            summary, collector, recorder = run_still(collector.first_picture)
    tracks = tuple(sorted(collector.tracks.values(), key=lambda t: t.track_id))
    if recorder is not None and explaining is not None:
        _explain(tracks, recorder, summary.provenance.threshold, explaining.every_face)
    return FileAnalysis(path=target, frames=collector.frames, duration_s=collector.last_pts, tracks=tracks,
                        score=file_score(tracks), provenance=summary.provenance,
                        alerts=len(collector.alert_times),
                        first_alert_s=collector.alert_times[0] if collector.alert_times else None,
                        trace=collector.trace,
                        **collector.never_judged(tracks))
