"""Annotated video written with PyAV: one output frame per input frame."""
from __future__ import annotations

import logging
import re
import time
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import cv2
import numpy as np

from stream_guard.errors import OutputError
from stream_guard.outputs.audio_track import AudioTrack
from stream_guard.outputs.evidence import STAMP_PATTERN, NewestKept, unused_name, utc_stamp
from stream_guard.outputs.live_sound import AAC_PRIMING_SAMPLES, SOUND_CODECS, LiveSound
from stream_guard.sound_bus import SoundFeed
from stream_guard.writable import check_writable_file
from stream_guard.types import FrameResult, StreamInfo

if TYPE_CHECKING:
    from stream_guard.sources.spec import SourceSpec

log = logging.getLogger(__name__)
SEGMENT_RETRY_S = 60.0  # after a segment that could not be written (a full disk), start another this much later


def h264_options(crf: int = 23, preset: str = "superfast", tune: str | None = "zerolatency",
                 threads: int = 2) -> dict[str, str]:
    """libx264 settings for encoding beside the analysis.

    zerolatency: no look-ahead or frame threads (sliced threads): ~35-40 % less CPU per frame
    and no buffering, at a somewhat larger file for the same crf; threads=2 so the encoder
    does not spawn a pool per core that fights the capture and analysis threads. superfast rather
    than veryfast: 20-44 % less CPU per frame on talking-head video (720p-1080p), files 13-23 %
    larger at the same crf, PSNR 0.2-0.4 dB higher; on 2 cores the encoder competes with the CNN.
    """
    return {"crf": str(crf), "preset": preset, "threads": str(threads), **({"tune": tune} if tune else {})}


def fit_to_encoder(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """The frame at a fixed-size output's size: a frame one pixel larger (odd sides, rounded down
    to even for 4:2:0) loses its last row or column; one of another size (a source that changed
    resolution) is scaled to fit, and one of another shape is letterboxed (black bars), never
    stretched, so faces keep their proportions."""
    h, w = rgb.shape[:2]
    if (h, w) == (height, width):
        return rgb
    if 0 <= h - height <= 1 and 0 <= w - width <= 1:
        return np.ascontiguousarray(rgb[:height, :width])
    scale = min(width / w, height / h)
    fit_w, fit_h = round(w * scale), round(h * scale)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    if abs(fit_w - width) <= 1 and abs(fit_h - height) <= 1:  # the same shape, give or take rounding
        return cv2.resize(rgb, (width, height), interpolation=interpolation)
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - fit_h) // 2, (width - fit_w) // 2
    canvas[top:top + fit_h, left:left + fit_w] = cv2.resize(rgb, (fit_w, fit_h), interpolation=interpolation)
    return canvas


def code_as_bt709(stream: av.VideoStream) -> None:
    """Flags ``stream`` BT.709 (primaries, transfer, matrix) in limited range, as
    :func:`encoder_frame` codes its pictures. Unflagged, players guess: most take HD for BT.709,
    while FFmpeg codes RGB with BT.601's matrix, so a 255 green came out as 215."""
    context = stream.codec_context
    context.color_primaries = context.color_trc = context.colorspace = 1  # BT.709
    context.color_range = 1  # limited (MPEG)


def encoder_frame(rgb: np.ndarray, width: int, height: int) -> av.VideoFrame:
    """``rgb`` fitted to the encoder's size (:func:`fit_to_encoder`) as a 4:2:0 picture coded with
    BT.709's matrix, for a stream flagged by :func:`code_as_bt709`."""
    frame = av.VideoFrame.from_ndarray(fit_to_encoder(rgb, width, height), format="rgb24")
    return frame.reformat(format="yuv420p", dst_colorspace="itu709", dst_color_range="MPEG")


MS = Fraction(1, 1000)


def keyframe_every(seconds: float, fps: float) -> dict[str, str]:
    """The encoder option for a keyframe every ``seconds`` at ``fps``."""
    return {"g": str(max(1, round(seconds * fps)))}


def add_timed_h264_stream(container: av.container.OutputContainer, fps: float, width: int, height: int,
                          **options: str) -> av.VideoStream:
    """A libx264 stream (``h264_options`` plus ``options``) whose frames are stamped in milliseconds
    of their own time, for outputs whose frames do not come at a steady rate (clips, pushed streams)."""
    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height = width - width % 2, height - height % 2
    stream.pix_fmt = "yuv420p"
    code_as_bt709(stream)
    stream.codec_context.time_base = MS
    stream.options = {**h264_options(), **options}
    return stream


def mux_at_ms(container: av.container.OutputContainer, stream: av.VideoStream, rgb: np.ndarray, ms: int) -> None:
    """Encode ``rgb`` (fitted to the stream's size) stamped ``ms`` and write its packets."""
    frame = encoder_frame(rgb, stream.width, stream.height)
    frame.pts, frame.time_base = ms, MS
    container.mux(stream.encode(frame))


_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".webm": "libvpx-vp9", ".avi": "mpeg4"}

LIVE_KEYFRAME_S = 2.0  # keyframe interval of a live recording: the most a killed run loses
FRAGMENTED_MP4 = {"movflags": "+frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
_SHORT_CLUSTERS = {"cluster_time_limit": "1000", "flush_packets": "1"}  # Matroska: a cluster a second
# Container options that write a live recording as it goes, so a run that is killed (kill -9, out of
# memory, power loss) leaves a file that plays up to its last keyframe. A plain MP4 keeps its index
# in memory until the end and is unreadable without it.
_WRITE_AS_YOU_GO = {".mp4": FRAGMENTED_MP4, ".mov": FRAGMENTED_MP4, ".mkv": _SHORT_CLUSTERS,
                    ".webm": _SHORT_CLUSTERS, ".avi": {"flush_packets": "1"}}
# The MP3 encoder's first packet is stamped before 0 (its delay, 23 ms). FFmpeg's default answer in a
# container without negative times moved every picture after the first by it, rounded up to a whole
# frame: a frame late against the sound. AVI times sound by its bytes, so leaving them be is right.
_CONTAINER_OPTIONS = {".avi": {"avoid_negative_ts": "disabled"}}

# VP9's default holds 25 frames back to look ahead and encodes at "good" speed, which a live
# run on a few cores cannot keep up with
_LIVE_VP9 = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "row-mt": "1"}


def segment_pattern(out: Path) -> str:
    """The names of the segments ``--out OUT --out-segment`` writes (``OUT_<UTC stamp>.mp4``) as a regex,
    group 1 the stem: what ``--out-keep`` counts, and deletes beyond its number."""
    return rf"^({re.escape(out.stem)}_{STAMP_PATTERN}){re.escape(out.suffix)}$"


def is_kept_segment(path: Path, out: Path) -> bool:
    """Whether ``--out OUT --out-keep N`` may delete ``path``: a segment of OUT's, in OUT's folder."""
    try:
        same_folder = path.resolve().parent == out.resolve().parent
    except OSError:
        return False
    return same_folder and re.match(segment_pattern(out), path.name) is not None


class VideoFileSink:
    """Encodes ``result.annotated`` (H.264 for .mp4/.mkv/.mov), every frame it is given.

    From a file, frames are stamped by index at the source's rate. From a live source, where
    frames the analysis could not keep up with were skipped, each is stamped by when it arrived,
    so the recording plays at the speed it happened (a dropped stream shows as a still), and the
    file is written as it goes (fragmented MP4, short Matroska clusters, a keyframe every
    :data:`LIVE_KEYFRAME_S`), so a killed run keeps all but its last seconds.

    With ``segment_s`` the recording is split into files of that many seconds of video, each
    named after ``path`` and the UTC time it was started (``rec_20261205T021530.123Z.mp4``); with
    ``keep`` only the newest ``keep`` of them stay (earlier runs' included). A segment that cannot be
    written (a full disk) is closed as far as it got, and the recording starts again in a new segment
    :data:`SEGMENT_RETRY_S` later (at most ``segment_s``), for as long as the run lasts: a monitor's
    recorder heals once there is room again. A live source's single file does the same: what it got
    is moved aside as a restarted monitor's would be, and the recording goes on under its name. Each
    stretch lost is logged, and ``close`` then fails, so the run ends saying so.

    ``audio_from`` (the source file, or a recording's URL, for a run written to one file; opened
    with the source's FFmpeg options) carries the source's sound into the recording
    (:class:`~stream_guard.outputs.audio_track.AudioTrack`); ``sound`` (the sound feed of a live
    source, or of standard input, which cannot be read twice) carries it into the recording, every
    segment included
    (:class:`~stream_guard.outputs.live_sound.LiveSound`).
    """

    name = "file"
    lossless = True

    def __init__(self, path: str | Path, fps: float | None = None, crf: int = 23, preset: str = "superfast",
                 tune: str | None = "zerolatency", threads: int = 2, segment_s: float | None = None,
                 keep: int | None = None, audio_from: SourceSpec | None = None,
                 sound: SoundFeed | None = None) -> None:
        self.path = Path(path)
        self.audio_from = audio_from
        self.sound = sound
        self.fps = fps
        self.crf = crf
        self.preset = preset
        self.tune = tune
        self.threads = threads
        self.segment_s = segment_s
        self.frames_written = 0
        self.lost_stretches = 0
        self._resume_at: float | None = None  # after a file the disk refused: start a new one at this time
        self.files: list[Path] = []  # every file this run wrote, the open one last
        self._kept = None if keep is None else NewestKept(
            self.path.parent, segment_pattern(self.path), lambda stem: (self.path.with_name(stem + self.path.suffix),),
            keep)
        self._info: StreamInfo | None = None
        self._fps = 30.0
        self._container: av.container.OutputContainer | None = None
        self._stream = None
        self._first_t: float | None = None  # the open file's first frame, on the recording's clock
        self._last_pts = -1
        self._end_s = 0.0  # where the open file's last frame ends, from its first frame
        self._audio: AudioTrack | None = None
        self._live_sound: LiveSound | None = None

    @property
    def _live(self) -> bool:
        return self._info is not None and self._info.is_live

    def open(self, info: StreamInfo) -> None:
        suffix = self.path.suffix.lower()
        if suffix not in _CODECS:
            raise OutputError(f"--out {self.path}: unsupported extension (use {', '.join(_CODECS)})")
        if not self.path.parent.exists():
            raise OutputError(f"--out {self.path}: folder {self.path.parent} does not exist")
        if self.segment_s is None:  # (segments get stamped names of their own)
            check_writable_file(self.path, "--out")
        self._info = info
        self._fps = self.fps or info.fps or 30.0
        if self._kept is not None:
            self._kept.scan()
        self._open_file()

    def write(self, result: FrameResult) -> None:
        # the recording's clock: when the frame arrived (live), its time in the stream (file: a recording
        # whose frames come unevenly, or with gaps, keeps its timing, and its sound with it)
        t = result.frame.wallclock_s if self._live else result.frame.pts_s
        if self._resume_at is not None and t < self._resume_at:
            return
        try:
            self._write(result, t)
        except (OSError, av.error.FFmpegError, OutputError) as e:
            if self.segment_s is None and not self._live:
                raise  # a file's recording is whole or failed
            self._lose_segment(t, e)

    def _lose_segment(self, t: float, error: Exception) -> None:
        """The open file cannot be written: keep what it has, start a new one a little later."""
        self.lost_stretches += 1
        retry_s = min(SEGMENT_RETRY_S, self.segment_s or SEGMENT_RETRY_S)
        where = self.files[-1] if self.files and self._container is not None else self.path.parent
        again = "in a new segment" if self.segment_s is not None else f"as {self.path.name}, what it got moved aside,"
        log.error("--out %s: cannot write (%s): recording again %s in %g s", where, error, again, retry_s)
        try:
            self._close_file()
        except Exception as e:  # noqa: BLE001 - the disk that failed the write fails the close too
            log.debug("--out %s: closing the failed segment: %s", where, e)
        self._container, self._stream, self._audio, self._live_sound = None, None, None, None
        self._resume_at = t + retry_s

    def _write(self, result: FrameResult, t: float) -> None:
        if self._resume_at is not None:  # after a lost segment
            self._resume_at = None
            self._open_file()
        elif self.segment_s is not None and self._first_t is not None and t - self._first_t >= self.segment_s:
            self._close_file()
            self._open_file()
        if self._first_t is None:
            self._first_t = t
        assert self._container is not None and self._stream is not None
        frame = encoder_frame(result.annotated, self._stream.width, self._stream.height)
        frame.pts, frame.time_base = self._ticks(t - self._first_t), self._stream.codec_context.time_base
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1
        self._end_s = t - self._first_t + 1.0 / self._fps
        if self._live_sound is not None:
            self._live_sound.follow(result.frame.pts_s, float(frame.pts * frame.time_base))
        if self._audio is not None:  # the sound up to the end of this frame
            self._audio.write_until(self._end_s)

    def _ticks(self, since_first_s: float) -> int:
        """Stream ticks since the file's first frame, always after the last frame's."""
        self._last_pts = max(round(since_first_s / self._stream.codec_context.time_base), self._last_pts + 1)
        return self._last_pts

    def _stamped(self, wall_time: float) -> Path:
        """``path`` with a UTC time in its name (``rec_20261205T021530.123Z.mp4``), not yet taken."""
        name, _ = unused_name(self.path.parent, wall_time,
                              lambda t: f"{self.path.stem}_{utc_stamp(t)}{self.path.suffix}")
        return self.path.with_name(name)

    def _file_path(self) -> Path:
        if self.segment_s is not None:
            return self._stamped(time.time())
        if self._live and self.path.is_file() and self.path.stat().st_size > 0:
            # a monitor restarted after a crash must not overwrite what the killed run recorded
            aside = self._stamped(self.path.stat().st_mtime)
            self.path.rename(aside)
            log.warning("--out %s existed: the earlier recording is kept as %s", self.path, aside.name)
        return self.path

    def _open_file(self) -> None:
        assert self._info is not None
        suffix = self.path.suffix.lower()
        try:
            path = self._file_path()
        except OSError as e:
            raise OutputError(f"--out {self.path}: cannot move the earlier recording aside ({e.strerror or e})") from e
        rate = Fraction(self._fps).limit_denominator(1001)
        try:
            options = {**_CONTAINER_OPTIONS.get(suffix, {}), **(_WRITE_AS_YOU_GO[suffix] if self._live else {})}
            self._container = av.open(str(path), mode="w", options=options)
            stream = self._container.add_stream(_CODECS[suffix], rate=rate)
        except (av.error.FFmpegError, OSError) as e:
            raise OutputError(f"--out {path}: cannot create ({e})") from e
        self.files.append(path)
        if self._kept is not None:
            self._kept.add(path.stem)
        stream.width = self._info.width - self._info.width % 2
        stream.height = self._info.height - self._info.height % 2
        stream.pix_fmt = "yuv420p"
        code_as_bt709(stream)
        # frames are stamped in milliseconds of their own time; AVI has one fixed frame rate: they go to
        # the nearest tick of it
        stream.codec_context.time_base = 1 / rate if suffix == ".avi" else MS
        options = keyframe_every(LIVE_KEYFRAME_S, self._fps) if self._live else {}
        if _CODECS[suffix] == "libx264":
            options.update(h264_options(self.crf, self.preset, self.tune, self.threads))
        elif _CODECS[suffix] == "libvpx-vp9" and self._live:
            options.update(_LIVE_VP9)
        stream.options = options
        self._stream = stream
        self._first_t, self._last_pts, self._end_s = None, -1, 0.0
        if self.audio_from is not None and not self._live and self.segment_s is None:
            self._audio = AudioTrack.open(self.audio_from.url, self._container, suffix, self.audio_from.options,
                                          self.audio_from.format)
        if self.sound is not None:
            # the sound track starts with the pictures (silence until the first sound comes): a fragmented
            # MP4 or an AVI would otherwise move a later first sound to 0, ahead of its pictures
            first = AAC_PRIMING_SAMPLES if _WRITE_AS_YOU_GO.get(suffix) is FRAGMENTED_MP4 else 0
            self._live_sound = LiveSound(self._container, SOUND_CODECS[suffix], self.sound, first_sample=first)

    def close(self) -> None:
        self._close_file()
        if self.lost_stretches:
            raise OutputError(f"--out {self.path}: {self.lost_stretches} stretch(es) of the recording could not be "
                              "written (the errors are above)")

    def _close_file(self) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        audio, self._audio = self._audio, None
        live_sound, self._live_sound = self._live_sound, None
        try:
            if self._stream is not None:
                container.mux(self._stream.encode(None))
            if audio is not None:
                audio.finish(end_s=self._end_s)
            if live_sound is not None:
                live_sound.close()
        finally:
            container.close()
