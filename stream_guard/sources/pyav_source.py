"""Every real input (file, network stream, webcam, screen) read with PyAV."""
from __future__ import annotations

import errno
import logging
import os
import socket
import time
from itertools import chain
from typing import Callable, Iterator
from urllib.parse import urlsplit

import av
import numpy as np

from stream_guard.errors import (NotAVideoError, SourceEnded, SourceError, SourceNotFoundError,
                                 SourceUnreachableError, StillImageError)
from stream_guard.sources.base import OpensInWith
from stream_guard.sources.deinterlace import MODES as DEINTERLACE_MODES
from stream_guard.sources.deinterlace import Deinterlacer
from stream_guard.sources.display import DisplayTransform, stream_display
from stream_guard.sources.probe import DEFAULT_MAX_MEGAPIXELS, check_frame_size, iso_truncation
from stream_guard.sources.sound_decoder import SoundDecoder
from stream_guard.sources.spec import SourceSpec
from stream_guard.sources.tone_map import HDR_TRANSFERS, SdrPictures
from stream_guard.sources.video_stream_choice import (describe_video_streams, format_stream_id,
                                                       is_cover_picture, pick_video_stream, stream_ids)
from stream_guard.timeline import Timeline
from stream_guard.types import Frame, PendingImage, SoundChunk, StreamInfo

log = logging.getLogger(__name__)

# (open, read) timeouts in seconds for network sources.
NETWORK_TIMEOUT_S = (5.0, 5.0)
# FFmpeg demuxers that read one picture: a still image opened as a "video" of one frame.
_STILL_IMAGE_FORMATS = frozenset({"image2", "webp", "svg"})
# ISO base media files (the mov demuxer) whose major brand says "one picture": HEIF (ISO/IEC 23008-12:
# iPhones' HEIC) and AVIF; FFmpeg gives a tiled photo's tiles as separate streams
STILL_IMAGE_BRANDS = frozenset({"heic", "heix", "heim", "heis", "mif1", "mif2", "avif"})
# Animated pictures: never live, though FFmpeg gives them no duration over HTTP (it would have to read them).
_ANIMATION_FORMATS = frozenset({"gif", "apng"})
# How long a live stream joined between keyframes may send undecodable pictures before its first keyframe.
KEYFRAME_WAIT_S = 20.0
DAMAGED_RUN_LIMIT = 100  # undecodable packets in a row after which a file is taken as unreadable from there on
# A live MPEG-TS whose tables were not in the low-latency probe is opened again with this much (0.8 s of 20 Mbit/s).
TS_PROBE_AGAIN_BYTES = 2_000_000
# Demuxers whose stream IDs are MPEG-TS PIDs, written in hex.
_PID_FORMATS = frozenset({"mpegts", "mpegtsraw"})
# Files that do not say how long they are (FFmpeg finds an MPEG-TS's length by seeking to its end, which a web
# server without Range requests does not allow): served over HTTP with a length in bytes (Content-Length) such a
# file is a recording; a live stream over HTTP has none.
_UNTIMED_FILE_FORMATS = _PID_FORMATS | {"h264", "hevc"}
# Demuxers whose video streams are variants of one picture (HLS): the automatic choice is the right one.
_VARIANT_FORMATS = frozenset({"hls", "dash"})
# Demuxers that render text (ANSI art) as video: FFmpeg's fallback for plain text files.
_TEXT_FORMATS = frozenset({"tty", "bin", "xbin", "adf", "idf"})


def unresolvable_host(url: str) -> str | None:
    """The host name of ``url`` if it does not resolve (the usual cause of FFmpeg's vague EIO)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return host
    except OSError:
        return None
    return None


_TCP_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "tcp": None}


def _refused(url: str) -> bool:
    """Whether the server of a TCP-based ``url`` refuses connections (nothing listens on its port):
    FFmpeg's http reader retries a refusal until our time-out ends it, which then says only that
    nothing came."""
    try:
        parts = urlsplit(url)
        port = parts.port or _TCP_PORTS.get(parts.scheme.lower())
    except ValueError:
        return False
    if not parts.hostname or port is None:
        return False
    try:
        socket.create_connection((parts.hostname, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def _http_reply(url: str) -> tuple[int, str, int | None] | None:
    """(status, content type, the whole file's length in bytes if said) of an http(s) server's answer to a
    request for the start of ``url`` (a Range request: a server that honours it answers 206), or None when it
    cannot be asked."""
    import urllib.error
    import urllib.request

    if urlsplit(url).scheme.lower() not in ("http", "https"):
        return None
    try:
        request = urllib.request.Request(url, headers={"Range": "bytes=0-1023"})
        with urllib.request.urlopen(request, timeout=NETWORK_TIMEOUT_S[0]) as reply:
            status, headers = reply.status, reply.headers
    except urllib.error.HTTPError as e:  # 416 (no byte 0 to send): an empty file
        status, headers = e.code, e.headers
    except (OSError, ValueError):
        return None
    whole = (headers.get("Content-Range") or "").rpartition("/")[2] if status in (206, 416) \
        else headers.get("Content-Length")
    return status, headers.get_content_type(), int(whole) if whole and whole.isdigit() else None


def _web_page(reply: tuple[int, str, int | None] | None) -> bool:
    """Whether an http(s) URL that FFmpeg could not read answers (:func:`_http_reply`) with a web page (HTML)."""
    return reply is not None and reply[0] < 400 and reply[1] in ("text/html", "application/xhtml+xml")


def _empty_file(reply: tuple[int, str, int | None] | None) -> bool:
    """Whether an http(s) URL that FFmpeg could not read answers (:func:`_http_reply`) with an empty file."""
    return reply is not None and reply[0] in (200, 206, 416) and reply[2] == 0


def _ignores_ranges(url: str) -> bool:
    """Whether an http(s) server sends the whole file to a request for part of it (no seeking)."""
    reply = _http_reply(url)
    return reply is not None and reply[0] == 200


def _wrap_open_error(spec: SourceSpec, e: Exception) -> SourceError:
    name = spec.display_name
    if isinstance(e, av.error.FileNotFoundError):
        return SourceNotFoundError(f"no such file or device: {name}")
    if isinstance(e, av.error.ProtocolNotFoundError):  # SRT: PyAV's wheels are built without libsrt
        scheme = spec.url.split("://", 1)[0]
        return SourceError(f"{name}: this FFmpeg build (PyAV's) cannot read {scheme}:// streams; relay the stream "
                           f"to udp:// (e.g. srt-live-transmit {scheme}://... udp://127.0.0.1:1234) and watch that")
    if spec.kind == "network" and not isinstance(e, (av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError)):
        host = unresolvable_host(spec.url)
        if host is not None:
            return SourceUnreachableError(f"{name}: cannot resolve host name '{host}'")
        if isinstance(e, (av.error.InvalidDataError, av.error.EOFError)):
            reply = _http_reply(spec.url)
            if _web_page(reply):
                return NotAVideoError(f"{name}: is a web page, not a video: give the address of the video itself "
                                      "(an .mp4, an .m3u8 playlist...); for a video site's page, a tool such as "
                                      "yt-dlp finds it (yt-dlp -g URL), or pipes it in (yt-dlp -o - URL | "
                                      "stream-guard watch -)")
            if _empty_file(reply):
                return NotAVideoError(f"{name}: the server sent an empty file (0 bytes)")
            return SourceUnreachableError(f"{name}: cannot open stream: the server closed the connection "
                                          f"or sent no valid reply ({_reason(e)})")
    if isinstance(e, (av.error.InvalidDataError, av.error.EOFError)) and spec.kind == "pipe":
        return NotAVideoError(f"{name}: no video FFmpeg can read from a pipe came ({_reason(e)}); an MP4 pipes "
                              "reliably only with its index at its start (-movflags +faststart), MPEG-TS and "
                              "Matroska always do (ffmpeg ... -f mpegts -)")
    if isinstance(e, (av.error.InvalidDataError, av.error.EOFError)):
        return NotAVideoError(f"{name}: not a video file FFmpeg can read ({_reason(e)})")
    network = spec.kind == "network"  # (a file's name may well contain "401")
    if isinstance(e, av.error.HTTPUnauthorizedError) or (network and "401" in _reason(e)):
        if "@" in spec.url.split("//", 1)[-1].split("/", 1)[0]:
            return SourceUnreachableError(f"{name}: the server rejected the credentials (401 Unauthorized)")
        return SourceUnreachableError(f"{name}: the server asks for credentials (401 Unauthorized): "
                                      "put them in the URL, scheme://user:password@host/...")
    if isinstance(e, av.error.HTTPForbiddenError) or (network and "403" in _reason(e)):
        return SourceUnreachableError(f"{name}: the server refused access (403 Forbidden)")
    if network and getattr(e, "errno", None) == errno.EIO and _ignores_ranges(spec.url):
        return SourceError(f"{name}: the server cannot send part of a file (it ignores HTTP Range requests), and "
                           "this one must be read out of order (an MP4 whose index is at its end): download it "
                           "first, or serve it from a server that supports ranges")
    if isinstance(e, (av.error.TimeoutError, TimeoutError)) or getattr(e, "errno", None) in (
        errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EIO
    ):
        return SourceUnreachableError(f"{name}: cannot connect ({_reason(e)})")
    if spec.kind == "network" and isinstance(e, av.error.ExitError):  # our time-out ended FFmpeg's wait
        if _refused(spec.url):
            return SourceUnreachableError(f"{name}: cannot connect (Connection refused)")
        return SourceUnreachableError(f"{name}: cannot open stream: nothing came in {NETWORK_TIMEOUT_S[0]:g} s")
    if spec.kind == "network":
        return SourceUnreachableError(f"{name}: cannot open stream ({_reason(e)})")
    if spec.region is not None:
        return SourceError(f"{name}: cannot capture this region ({_reason(e)}): is all of it inside the screen?")
    return SourceError(f"{name}: cannot open ({_reason(e)})")


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


# FFmpeg's flag for formats whose frames carry no timestamps (MJPEG over HTTP, a raw H.264 stream):
# it counts their frames at a guessed rate instead (25 fps for MJPEG), however fast the camera sends.
AVFMT_NOTIMESTAMPS = 0x0080


# Frame rates above this are taken as a timestamp's resolution, not a video's rate.
MAX_NOMINAL_FPS = 240.0


def stall_after_s(options: dict[str, str]) -> float:
    """How long a network read waits for data before the stream is taken as stalled: the protocol's own
    time-out where one is set (``rw_timeout``, in microseconds), else PyAV's."""
    try:
        return float(options["rw_timeout"]) / 1e6
    except (KeyError, ValueError):
        return NETWORK_TIMEOUT_S[1]


def nominal_fps(stream: av.video.stream.VideoStream) -> float | None:
    """The video's frame rate: its average (frames over duration), unless that is under half the rate
    its timestamps step at (FFmpeg's guess): then the recording has gaps (a camera recording on motion,
    a paused screen recorder) and the average says nothing of how fast its frames come."""
    average = float(stream.average_rate) if stream.average_rate else 0.0
    guessed = float(stream.guessed_rate) if stream.guessed_rate else 0.0
    coded = float(stream.codec_context.framerate or 0)  # the rate the codec's headers state (H.264's timing)
    if coded > MAX_NOMINAL_FPS:
        coded = 0.0
    if coded and (not average or guessed > MAX_NOMINAL_FPS):
        # a live stream probed briefly (too little of it for an average): FFmpeg's guess can be its time base
        # (MPEG-TS's 90 kHz) or twice the rate (H.264 counts fields), where the headers say the rate
        guessed = coded
    if guessed and guessed <= MAX_NOMINAL_FPS and (not average or average < guessed / 2):
        return guessed
    return average or None


class _StreamClock:
    """Stream time in seconds from 0, strictly increasing. Frames without a timestamp
    (RTSP's first frame has none) are placed one frame period after the previous one.
    Timestamps a little behind the previous one are clamped so trackers never see time
    reverse; where they start again (:class:`~stream_guard.timeline.Timeline`), time goes on
    one frame period later."""

    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self._base: float | None = None
        self._last: float | None = None
        self._timeline = Timeline()

    def pts_s(self, time_s: float | None) -> float:
        expected = 0.0 if self._last is None else self._last + self.period_s
        if time_s is None:
            t = expected
        else:
            if self._base is None:
                self._base = time_s - expected
            # a jump back is measured from the last frame, not from where the next was expected: a frame
            # period guessed too long (a recording with gaps averages under one frame a second) is no jump
            t, back = self._timeline.join(time_s - self._base, self._last, expected)
            if back:
                log.warning("the video's timestamps jumped back %.1f s at stream time %.2f s (joined recordings "
                            "or a restarted encoder?): time goes on from there", back, self._last)
        if self._last is not None and t <= self._last:
            t = self._last + 1e-6
        self._last = t
        return t

    def stream_s(self, time_s: float) -> float | None:
        """``time_s`` (another stream of the same container: the sound) on this clock, or None
        before the first frame set it. Not clamped: sound has its own order."""
        return None if self._base is None else time_s - self._base + self._timeline.offset_s


class PyAVSource(OpensInWith):
    """A :class:`FrameSource` over ``av.open``; decodes one video stream (:func:`pick_video_stream`)
    to RGB, as displayed.

    Interlaced frames are deinterlaced (``deinterlace``: ``auto`` = the frames the stream flags,
    ``always``, ``off``), then stretched to square pixels (the stream's sample aspect ratio) and
    turned as the first frame's display matrix says (a phone's portrait video is stored
    sideways), so :class:`StreamInfo` reports the displayed size. HDR frames (PQ or HLG) are
    tone-mapped to SDR (:class:`SdrPictures`) unless ``tone_map`` is False. ``open()`` decodes that first
    frame; a failure to decode it is raised by ``frames()``, as any later one would be.

    With ``sound``, the best audio stream of the analysed picture's program (HLS variant, MPEG-TS
    service) is decoded too, as it is demuxed, and each
    :class:`SoundChunk` is handed to ``sound`` on the reading thread; otherwise, as every stream
    other than the one analysed, it is not even fetched.
    """

    def __init__(self, spec: SourceSpec, deinterlace: str = "auto",
                 max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                 sound: Callable[[SoundChunk], None] | None = None, tone_map: bool = True,
                 video_stream: int | None = None) -> None:
        if deinterlace not in DEINTERLACE_MODES:
            raise ValueError(f"deinterlace must be one of {DEINTERLACE_MODES}, not {deinterlace!r}")
        self.spec = spec
        self.deinterlace = deinterlace
        self.max_megapixels = max_megapixels  # picks among several video streams (HLS variants)
        self.video_stream = video_stream  # the ID of the one to analyse (--video-stream), if the user chose
        self._streams_told = False
        self.source_id = spec.display_name
        self._container: av.container.InputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._info: StreamInfo | None = None
        self._truncated: str | None = None  # why the file looks cut short, if it does
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._clock = _StreamClock(1.0 / 30.0)
        self._arrival_times = False  # set at open: time frames as they arrive (a live stream without timestamps)
        self._live = spec.is_live  # at open, False for a recording served over HTTP
        self._opened_live = False  # a live stream that is a finished recording when reopened has ended
        self._display = DisplayTransform()
        self._size_checked: tuple[int, int] | None = None  # the last frame size held to --max-megapixels
        self._first: av.VideoFrame | None = None  # decoded by open(), yielded first by frames()
        self._first_error: Exception | None = None  # raised by frames()
        self._deinterlacer: Deinterlacer | None = None
        self._pictures = SdrPictures(tone_map)
        self._transfer: int | None = None  # the last frame's, to say when it changes (kept over reconnects)
        self._hdr_warned = False
        self._sound_out = sound
        self._sound: SoundDecoder | None = None
        self.damaged_packets = 0  # a recording's video packets that could not be decoded and were skipped
        self._damaged_run = 0
        # when the read that the time-out ended began: the data released by it came before (see _demuxed_pictures)
        self._stalled_since: float | None = None
        self._stall_after_s = stall_after_s(spec.options)

    def _check_file(self) -> None:
        """Fail early, with a precise reason, on an empty file; note a truncated MP4/MOV."""
        try:
            size = os.path.getsize(self.spec.url)
        except OSError as e:
            raise SourceNotFoundError(f"no such file: {self.spec.display_name}") from e
        if size == 0:
            raise NotAVideoError(f"{self.spec.display_name}: is empty (0 bytes), not a video")
        self._truncated = iso_truncation(self.spec.url)

    def open(self) -> StreamInfo:
        if self.spec.kind == "file":
            self._check_file()
        if self.spec.kind == "pipe" and os.isatty(0):  # FFmpeg would wait for a video typed in, for ever
            raise SourceError("stdin: is the terminal, not a video: pipe one in, e.g. yt-dlp -o - URL | "
                              "stream-guard watch -")
        # metadata that is not UTF-8 (damaged or foreign files) must not stop us: replace bad bytes
        kwargs: dict = {"options": dict(self.spec.options), "metadata_errors": "replace"}
        if self.spec.format:
            kwargs["format"] = self.spec.format
        if self.spec.kind == "network":
            # with a protocol time-out of its own (rw_timeout), PyAV's is the backstop, after it
            kwargs["timeout"] = (NETWORK_TIMEOUT_S[0], NETWORK_TIMEOUT_S[1] + (
                self._stall_after_s if "rw_timeout" in self.spec.options else 0.0))
        self._container = self._open_container(kwargs)
        videos = list(self._container.streams.video)
        if self._tables_missed(videos, kwargs["options"]):
            log.info("%s: the first %s bytes of this MPEG-TS lacked its video's tables: probing %d bytes",
                     self.source_id, kwargs["options"].get("probesize", "?"), TS_PROBE_AGAIN_BYTES)
            self.close()
            kwargs["options"]["probesize"] = str(TS_PROBE_AGAIN_BYTES)
            self._container = self._open_container(kwargs)
            videos = list(self._container.streams.video)
        if not videos:
            others = sorted({s.type for s in self._container.streams})
            self.close()
            raise NotAVideoError(f"{self.spec.display_name}: has no video stream"
                                 + (f" (only {', '.join(others)})" if others else ""))
        fmt = self._container.format.name
        if self.spec.kind in ("file", "pipe") and fmt in _TEXT_FORMATS:
            self.close()
            raise NotAVideoError(f"{self.spec.display_name}: not a video file FFmpeg can read (it is text)")
        brand = self._container.metadata.get("major_brand", "") if fmt.startswith("mov,") else ""
        if (self.spec.kind in ("file", "pipe") or self._over_http()) and (
                fmt.endswith("_pipe") or fmt in _STILL_IMAGE_FORMATS or brand in STILL_IMAGE_BRANDS):
            self.close()
            kind = brand if brand in STILL_IMAGE_BRANDS else fmt.removesuffix("_pipe")
            raise StillImageError(f"{self.spec.display_name}: is a still image ({kind}), "
                                  "not a video (stream-guard scan judges pictures)")
        hex_ids = fmt in _PID_FORMATS
        try:
            stream = pick_video_stream(videos, self.max_megapixels, self.video_stream, self.source_id, hex_ids)
        except SourceError:
            self.close()
            raise
        self._tell_streams(videos, stream, hex_ids, fmt in _VARIANT_FORMATS)
        # the sound of the same program (HLS variant, MPEG-TS service) as the pictures
        audio = self._container.streams.best("audio", related=stream) if self._sound_out is not None else None
        for other in self._container.streams:
            if other is not stream and other is not audio:  # not even fetched: costs no bandwidth
                other.discard = av.stream.Discard.all
        # A live stream joined between keyframes has no picture size yet (it comes with the next
        # keyframe): decoding waits for that keyframe. A file's stream without one has no picture.
        if not stream.codec_context or (stream.codec_context.width <= 0 and not self.spec.is_live):
            self.close()
            raise NotAVideoError(f"{self.spec.display_name}: video stream has no decodable picture")
        self._stream = stream
        on_demand = self.spec.is_live and self._on_demand()
        if on_demand and self._opened_live:  # reopened after its end: the live event is over, not to be replayed
            self.close()
            raise SourceEnded(f"{self.source_id}: the live stream has ended (it is a finished recording now)")
        if on_demand:
            length = f" of {self._container.duration / 1e6:.1f} s" if self._container.duration else ""
            log.info("%s: a recording%s, not a live stream: read to its end, every frame", self.source_id, length)
        self._live = self.spec.is_live and not on_demand
        self._opened_live = self._opened_live or self._live
        frames = int(stream.frames) if stream.frames and not self._live else None
        self._clock = _StreamClock(1.0 / 30.0)  # its rate once the first frame is decoded (below)
        # live and without timestamps: a frame's time is when it came, or stream time runs at the guessed rate
        self._arrival_times = self._live and bool(self._container.format.flags & AVFMT_NOTIMESTAMPS)
        if self._arrival_times:
            log.info("%s: the %s stream carries no timestamps: frames are timed as they arrive",
                     self.source_id, self._container.format.name)
        self._sound = None if audio is None or self._sound_out is None else SoundDecoder(
            audio, self._sound_out, self._clock.stream_s)
        self._decode_first_frame()
        fps = nominal_fps(stream)
        self._clock.period_s = 1.0 / (fps or 30.0)
        if self._first is not None:
            stored_width, stored_height = self._first.width, self._first.height
        else:
            stored_width, stored_height = stream.codec_context.width, stream.codec_context.height
        if stored_width <= 0:  # a live stream that ended or failed before its first picture
            error = self._first_error
            self.close()
            raise NotAVideoError(f"{self.spec.display_name}: video stream has no decodable picture"
                                 + (f" ({_reason(error)})" if error is not None else "")) from error
        width, height = self._display.display_size(stored_width, stored_height)
        self._info = StreamInfo(
            source_id=self.source_id,
            width=width,
            height=height,
            fps=fps,
            frame_count=frames,
            is_live=self._live,
            has_sound=self._sound is not None,
        )
        return self._info

    def _on_demand(self) -> bool:
        """A recording served over HTTP (an MP4, an MPEG-TS file, a finished HLS playlist): it has a length,
        the reader pulls it at its own pace and it ends. It is read as a file is, every frame to its end, not
        as a stream that drops frames to keep up and reconnects when it ends (which replayed it forever)."""
        assert self._container is not None
        duration = self._container.duration
        name = self._container.format.name
        recording = ((bool(duration) and duration > 0) or name in _ANIMATION_FORMATS
                     or (name in _UNTIMED_FILE_FORMATS and self._container.size > 0))
        return self._over_http() and recording

    def _over_http(self) -> bool:
        return urlsplit(self.spec.url).scheme.lower() in ("http", "https")

    def _open_container(self, kwargs: dict) -> av.container.InputContainer:
        try:
            return av.open(self.spec.url, mode="r", **kwargs)
        except (av.error.FFmpegError, OSError, ValueError) as e:  # ValueError: PyAV's own checks
            if self._truncated:
                raise NotAVideoError(f"{self.spec.display_name}: truncated ({self._truncated}): "
                                     "no frame can be decoded") from e
            raise _wrap_open_error(self.spec, e) from e

    def _tables_missed(self, videos: list[av.video.stream.VideoStream], options: dict[str, str]) -> bool:
        """True when a live MPEG-TS was probed too briefly to see the program table (PMT) of its video,
        or of the video stream asked for: a fast stream sends its tables every 100 ms or so, and 32 KB
        of a 20 Mbit/s stream is 13 ms of it."""
        assert self._container is not None
        if not self.spec.is_live or self._container.format.name not in _PID_FORMATS:
            return False
        try:
            if int(options.get("probesize", 0)) >= TS_PROBE_AGAIN_BYTES:
                return False
        except ValueError:
            return False
        return not videos or (self.video_stream is not None and self.video_stream not in stream_ids(videos))

    def _tell_streams(self, videos: list[av.video.stream.VideoStream], chosen: av.video.stream.VideoStream,
                      hex_ids: bool, variants: bool) -> None:
        """Say which of several moving video streams is analysed: a warning (once) where they may be
        different pictures (an MPEG-TS with several programs) and the user did not choose."""
        moving = sum(not is_cover_picture(s) for s in videos)
        if moving < 2:
            return
        chosen_id = format_stream_id(stream_ids(videos)[videos.index(chosen)], hex_ids)
        message = (f"%s: %d video streams (%s); analysing {chosen_id}"
                   + ("" if variants or self.video_stream is not None else ": choose another with --video-stream ID"))
        quiet = variants or self.video_stream is not None or self._streams_told
        log.log(logging.INFO if quiet else logging.WARNING, message, self.source_id, moving,
                describe_video_streams(videos, hex_ids))
        self._streams_told = True

    def _decode_first_frame(self) -> None:
        """Decode frame 0 now, for its display matrix; keep it (or its error) for ``frames()``."""
        self._decoder = self._demuxed_pictures()
        self._first, self._first_error, self._deinterlacer = None, None, None
        try:
            self._first = next(self._decoder, None)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            self._first_error = e
        self._display = stream_display(self._stream, self._first)
        if not self._display.is_identity:
            log.info("%s: frames are %s, as players show them", self.source_id, self._display.describe())
        if self.deinterlace == "always":
            self._start_deinterlacing("every frame (--deinterlace always)")

    def _demuxed_pictures(self) -> Iterator[av.VideoFrame]:
        """The video stream's decoded frames, the sound's packets (if any) going to its decoder on the way.

        A live stream joined between keyframes starts with packets that cannot be decoded (H.264
        without its parameter sets): they are skipped until the first picture, for at most
        :data:`KEYFRAME_WAIT_S`. After it, a decoding error is the live stream's failure (it is
        reopened). A recording's damaged packet (a download with a few bad bytes) is skipped and said,
        and the frames after it are read: only :data:`DAMAGED_RUN_LIMIT` of them in a row fail it."""
        assert self._container is not None and self._stream is not None
        sound = self._sound
        streams = (self._stream,) if sound is None else (self._stream, sound.stream)
        waiting_since = time.monotonic() if self._live else None
        read = 0  # the video packets that came (the demuxer's flush packets aside)
        self._stalled_since = None
        packets = self._container.demux(*streams)
        while True:
            asked = time.monotonic()
            packet = next(packets, None)
            if packet is None:
                break
            if self._live and self.spec.kind == "network" and time.monotonic() - asked >= self._stall_after_s:
                # The read time-out fired: the demuxer gave up the data it held back (MPEG-TS and RTP wait for
                # the next packet to end a picture). It came before the stall, so its frames are timed from
                # then; and the stall is the drop, now, where FFmpeg's next read would fail only later
                # (RTSP: after another time-out). Taken as the last frames, they counted the outage 5 s short.
                self._stalled_since = asked
            if sound is not None and packet.stream is sound.stream:
                sound.push(packet)
                pictures = []
            else:
                read += packet.size > 0
                try:
                    pictures = packet.decode()
                except av.error.InvalidDataError as e:
                    if self._live and self._stalled_since is None and (
                            waiting_since is None or time.monotonic() - waiting_since > KEYFRAME_WAIT_S):
                        raise
                    if not self._live:
                        self._skip_damaged(e)
                    pictures = []
            if pictures:
                waiting_since = None
                self._damaged_run = 0
            yield from pictures
            if self._stalled_since is not None:
                raise av.error.ExitError(errno.ETIMEDOUT, "the read timed out")
        self._note_short_of_index(read)
        if self.damaged_packets > 1:
            log.warning("%s: %d damaged video packets were skipped in all", self.source_id, self.damaged_packets)

    def _note_short_of_index(self, read: int) -> None:
        """An MP4 whose data ended before the frames its index lists: truncated. A file on disk is checked
        by its boxes before it is read (:func:`iso_truncation`); a pipe or a download only shows it here."""
        assert self._container is not None and self._stream is not None
        listed = self._stream.frames
        if (self._truncated is None and not self._live and listed and read < listed
                and "mp4" in self._container.format.name.split(",")):
            self._truncated = f"its index lists {listed} frames, the data ended after {read}"

    def _skip_damaged(self, error: av.error.InvalidDataError) -> None:
        """A recording's packet that cannot be decoded: counted and skipped (said the first time and every
        hundredth), unless the packets have been undecodable for :data:`DAMAGED_RUN_LIMIT` in a row."""
        if self._truncated is not None:  # its last packet is cut: the end of what there is, said as such
            raise error
        self.damaged_packets += 1
        self._damaged_run += 1
        if self._damaged_run > DAMAGED_RUN_LIMIT:
            raise error
        if self.damaged_packets == 1 or self.damaged_packets % 100 == 0:
            log.warning("%s: %d damaged video packet(s) could not be decoded (%s): skipped, the frames they "
                        "held are missing", self.source_id, self.damaged_packets, _reason(error))

    def _start_deinterlacing(self, why: str) -> None:
        self._deinterlacer = Deinterlacer(self._stream.time_base, every_frame=self.deinterlace == "always")
        log.info("%s: deinterlacing %s", self.source_id, why)

    def _decoded_frames(self) -> Iterator[av.VideoFrame]:
        """Decoded frames in order, the one ``open()`` decoded first, deinterlaced where needed.
        Whatever the deinterlacer still holds comes out before the stream's end or error."""
        if self._first_error is not None:
            error, self._first_error = self._first_error, None
            raise error
        first, self._first = self._first, None
        try:
            for raw in chain([first] if first is not None else [], self._decoder):
                if self._deinterlacer is None and self.deinterlace == "auto" and raw.interlaced_frame:
                    self._start_deinterlacing("the frames the stream flags as interlaced")
                if self._deinterlacer is None:
                    yield raw
                else:
                    yield from self._deinterlacer.push(raw)
        except (av.error.FFmpegError, OSError, ValueError):
            if self._deinterlacer is not None:
                yield from self._deinterlacer.flush()
            raise
        if self._deinterlacer is not None:
            yield from self._deinterlacer.flush()

    def _note_transfer(self, raw: av.VideoFrame, index: int) -> None:
        """Says when the video is HDR, and when it turns HDR or back to SDR after its first frame."""
        before, self._transfer = self._transfer, raw.color_trc
        if raw.color_trc == before:
            return
        hdr = HDR_TRANSFERS.get(raw.color_trc)
        since = "" if before is None else f" from frame {index} on"
        if hdr is None:
            if before in HDR_TRANSFERS:
                log.info("%s: SDR video%s: read as it is", self.source_id, since)
        elif self._pictures.tone_map:
            log.info("%s: HDR video (%s transfer)%s: tone-mapped to SDR for analysis", self.source_id, hdr, since)
        elif not self._hdr_warned:
            self._hdr_warned = True
            log.warning("%s: HDR video (%s transfer)%s read without tone mapping (--tone-map off): frames look "
                        "dim and flat, and scores on them are not validated", self.source_id, hdr, since)

    def _to_frame(self, raw: av.VideoFrame, index: int, started: float) -> Frame:
        self._note_transfer(raw, index)
        decode_ms = (time.perf_counter() - started) * 1e3
        display, pictures, source_id = self._display, self._pictures, self.source_id

        def convert() -> np.ndarray:
            try:
                return display.apply(pictures.rgb(raw))
            except (av.error.FFmpegError, ValueError) as e:
                raise SourceError(f"{source_id}: frame {index} cannot be converted to RGB ({_reason(e)})") from e

        width, height = display.display_size(raw.width, raw.height)
        if (width, height) != self._size_checked:  # the run checks the first; a stream may change size later
            check_frame_size(f"{source_id} at frame {index}", width, height, self.max_megapixels)
            self._size_checked = (width, height)
        pixels = PendingImage((height, width, 3), convert)
        if index == 0:  # a picture that cannot be converted at all fails the open, not a later thread
            pixels.get()
        now = time.monotonic()
        received = now if self._stalled_since is None else self._stalled_since
        pts_s = self._clock.pts_s(received if self._arrival_times else raw.time)
        return Frame(pixels, index, pts_s, received, self.source_id, decode_ms, time.time() - (now - received))

    @property
    def display(self) -> DisplayTransform:
        """How stored frames become displayed ones (valid after ``open()``)."""
        return self._display

    def frames(self) -> Iterator[Frame]:
        if self._container is None or self._stream is None or self._decoder is None:
            raise SourceError(f"{self.source_id}: frames() before open()")
        index = 0
        try:
            started = time.perf_counter()
            for raw in self._decoded_frames():
                yield self._to_frame(raw, index, started)
                index += 1
                started = time.perf_counter()  # the consumer's time (queue waits) is not decode time
        except av.error.EOFError:
            pass
        except (av.error.FFmpegError, OSError, ValueError) as e:
            if self._truncated:
                raise SourceError(f"{self.source_id}: truncated: decoded {index} frames then the data ended "
                                  f"({self._truncated})") from e
            if index == 0:
                raise _wrap_open_error(self.spec, e) from e
            timed_out = isinstance(e, av.error.ExitError) or getattr(e, "errno", None) == errno.ETIMEDOUT
            why = (f"no data came for {self._stall_after_s:g} s" if timed_out and self.spec.kind == "network"
                   else _reason(e))  # FFmpeg says "Immediate exit requested" or "Connection timed out"
            raise SourceError(f"{self.source_id}: stream failed after {index} frames ({why})") from e
        if self._truncated:
            raise SourceError(f"{self.source_id}: truncated: decoded {index} frames then the data ended "
                              f"({self._truncated})")

    def close(self) -> None:
        self._decoder, self._first, self._first_error, self._deinterlacer = None, None, None, None
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except (av.error.FFmpegError, OSError):
                pass
