"""Turn what the user typed (a path, a URL, ``webcam:0``, ``screen``, ``screen@1280x720+0+0``, ``demo``) into
the arguments PyAV needs to open it on this platform."""
from __future__ import annotations

import dataclasses
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from stream_guard.errors import ConfigError, SourceNotFoundError, StreamGuardError
from stream_guard.sources.screencast_portal import wayland_session

NETWORK_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp"})
# Low-latency demuxer options for live network streams: tiny probe so the stream opens
# fast; nobuffer is left out on purpose (it delays the first frame to the next keyframe).
_LIVE_OPTIONS = {"probesize": "32768", "analyzeduration": "0", "flags": "low_delay"}
# A recording over HTTP whose connection drops is resumed where it stopped (FFmpeg asks for the rest with
# a Range request). FFmpeg resumes only what has a length: a live stream's drop still ends the stream,
# and the capture thread reconnects it. A connection that stalls (open, no data) is ended by the protocol's
# own time-out (rw_timeout, in microseconds), so that it is resumed as a dropped one is: PyAV's read time-out,
# which FFmpeg takes as "stop now", never resumes.
HTTP_STALL_S = 5.0
_HTTP_RESUME_OPTIONS = {"reconnect": "1", "reconnect_on_network_error": "1", "reconnect_delay_max": "10",
                        "rw_timeout": str(round(HTTP_STALL_S * 1e6))}
# Schemes that carry MPEG-TS, read as such: FFmpeg guesses a format from the first 2 KB it gets, and a
# stream joined a few packets into a keyframe (SEI, SPS, PPS, IDR slice) looks to it like raw H.264
# (tests/test_udp_join.py). ``--input-option format=NAME`` reads another format; ``format=auto`` guesses.
_MPEG_TS_SCHEMES = frozenset({"udp", "srt"})
FORMAT_OPTION = "format"


# WxH+X+Y, X11's geometry notation (what `xwininfo` prints after -geometry)
_REGION = re.compile(r"^(\d+)x(\d+)\+(\d+)\+(\d+)$")
MIN_REGION_SIDE = 32
# The screen shared through xdg-desktop-portal and read from PipeWire (Wayland desktops): the
# "format" of its SourceSpec, and the FFmpeg-like options it takes (x11grab's names).
PORTAL_FORMAT = "xdg-desktop-portal"
PORTAL_OPTIONS = frozenset({"framerate", "draw_mouse"})


@dataclass(frozen=True, slots=True)
class ScreenRegion:
    """A rectangle of the screen to capture, in screen pixels."""

    width: int
    height: int
    x: int
    y: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}+{self.x}+{self.y}"


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """How to open one source with ``av.open``."""

    kind: str  # "file" | "network" | "webcam" | "screen" | "demo" | "pipe" (standard input)
    url: str
    display_name: str
    format: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    region: ScreenRegion | None = None  # a screen source's captured rectangle (None: the whole screen)
    window: str | None = None  # the title (or part of it, or the id) of the one window captured, if any
    monitor: str | None = None  # the name (or number) of the one monitor captured, if any

    @property
    def is_live(self) -> bool:
        return self.kind in ("network", "webcam", "screen")


# scheme://USERINFO@ : everything up to the last "@" before the path (an unescaped "@" in a password included)
# A password typed with a raw # ? / or @ (which a URL should carry percent-encoded) is hidden too: after
# "user:", everything up to the last @ (this may hide more than the password of a URL whose path has an @).
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/?#:@]+:.*|[^/?#@]*)@")


def redact_url(url: str) -> str:
    """Hide the password (and user) of ``scheme://user:pass@host`` so it never reaches logs or events.
    Textual, so it never fails, whatever the port or host look like."""
    return _USERINFO.sub(r"\1***@", url, count=1)


# scheme://USERINFO@ anywhere in a text (an error message can quote a URL)
_URL_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/\s?#:@]+:\S*|[^/\s?#@]*)@")


def redact_text(text: str) -> str:
    """Mask the user and password of every ``scheme://user:pass@host`` in ``text``."""
    return _URL_USERINFO.sub(r"\1***@", text)


def _webcam_spec(device: str, platform: str) -> SourceSpec:
    if platform.startswith("linux"):
        path = device if device.startswith("/dev/") else f"/dev/video{device}"
        if not os.path.exists(path):
            raise SourceNotFoundError(f"webcam {path} does not exist (no such video device on this machine)")
        return SourceSpec("webcam", path, path, "v4l2", {"input_format": "mjpeg"})
    if platform == "darwin":
        return SourceSpec("webcam", f"{device}:none", f"webcam {device}", "avfoundation", {"framerate": "30"})
    if platform.startswith("win"):
        # dshow opens devices by name ("webcam:Integrated Camera"); list them with `stream-guard doctor`.
        return SourceSpec("webcam", f"video={device}", f"webcam {device}", "dshow", {})
    raise ConfigError(f"webcam capture is not supported on platform {platform!r}")


def parse_region(text: str) -> ScreenRegion:
    """``WxH+X+Y`` -> :class:`ScreenRegion`; anything else is a :class:`ConfigError`."""
    match = _REGION.match(text)
    if match is None:
        raise ConfigError(f"screen region '{text}' is not WIDTHxHEIGHT+X+Y (e.g. screen@1280x720+0+0)")
    region = ScreenRegion(*(int(v) for v in match.groups()))
    if min(region.width, region.height) < MIN_REGION_SIDE:
        raise ConfigError(f"screen region {region}: too small (at least {MIN_REGION_SIDE} pixels a side)")
    return region


def _is_monitor_name(text: str) -> bool:
    """``HDMI-1``, ``1``, ``primary``: not a region (``1280x720+0+0``, or a mistyped one such as ``1280x720``)."""
    return bool(text) and "+" not in text and not re.match(r"\d+x", text)


def _screen_spec(text: str, platform: str) -> SourceSpec:
    """``[DISPLAY][@WxH+X+Y|@MONITOR]``: which display (or screen) and, optionally, which part of it."""
    display, at, region_text = text.partition("@")
    monitor = region_text if at and _is_monitor_name(region_text) else None
    if monitor is not None and (not platform.startswith("linux") or display == "portal"
                                or (not display and wayland_session())):
        raise ConfigError(f"screen@{monitor}: a monitor is chosen by name on Linux with X11 only: elsewhere give its "
                          "rectangle (screen@WxH+X+Y), or on Wayland pick it in the desktop's share dialog")
    region = parse_region(region_text) if at and monitor is None else None
    name = "screen" if region is None else f"screen {region}"
    if platform.startswith("linux"):
        if display == "portal" or (not display and wayland_session()):
            # X11 capture of a Wayland desktop sees only black: the portal asks the user to share instead
            if region is not None:
                raise ConfigError("a screen region cannot be captured through the desktop portal (Wayland): "
                                  "share just the window you want in the desktop's dialog instead")
            return SourceSpec("screen", PORTAL_FORMAT, "screen (shared through the desktop portal)", PORTAL_FORMAT,
                              {"framerate": "30"})
        display = display or os.environ.get("DISPLAY", "")
        if not display:
            raise ConfigError("screen capture needs an X display: use screen:DISPLAY (e.g. screen::0) or set DISPLAY")
        options = {"framerate": "30", "draw_mouse": "0"}
        if monitor is not None:
            return SourceSpec("screen", display, f"screen {display} monitor {monitor}", "x11grab", options,
                              monitor=monitor)
        if region is None:
            return SourceSpec("screen", display, f"screen {display}", "x11grab", options)
        return SourceSpec("screen", f"{display}+{region.x},{region.y}", f"screen {display} {region}", "x11grab",
                          {**options, "video_size": f"{region.width}x{region.height}"}, region)
    if platform == "darwin":
        if region is not None:
            raise ConfigError("a screen region is not supported on macOS (avfoundation captures whole screens)")
        return SourceSpec("screen", f"{display or 'Capture screen 0'}:none", name, "avfoundation", {"framerate": "30"})
    if platform.startswith("win"):
        options = {"framerate": "30"}
        if region is not None:
            options |= {"offset_x": str(region.x), "offset_y": str(region.y),
                        "video_size": f"{region.width}x{region.height}"}
        return SourceSpec("screen", display or "desktop", name, "gdigrab", options, region)
    raise ConfigError(f"screen capture is not supported on platform {platform!r}")


def _window_spec(wanted: str, platform: str) -> SourceSpec:
    """``window:TITLE``: one application window, by (part of) its title, or ``window:0xID``."""
    if not wanted:
        raise ConfigError("window: needs the window's title, or part of it (window:TITLE), or its id (window:0x...)")
    name = f"window '{wanted}'"
    options = {"framerate": "30", "draw_mouse": "0"}
    if platform.startswith("linux"):
        if wayland_session():
            raise ConfigError("on Wayland, X11 cannot see other applications' windows: use `screen` and pick the "
                              "window in the desktop's share dialog")
        display = os.environ.get("DISPLAY", "")
        if not display:
            raise ConfigError("window capture needs an X display: set DISPLAY (e.g. DISPLAY=:0)")
        return SourceSpec("screen", display, name, "x11grab", options, window=wanted)
    if platform.startswith("win"):  # gdigrab finds the window by its whole title itself
        return SourceSpec("screen", f"title={wanted}", name, "gdigrab", {"framerate": "30"})
    raise ConfigError(f"window capture is not supported on platform {platform!r} (macOS: use screen)")


def with_input_options(spec: SourceSpec, options: Sequence[tuple[str, str]]) -> SourceSpec:
    """``spec`` opened with the user's FFmpeg ``options`` too (``--input-option``), which win over
    ours; the demo is not opened by FFmpeg, so it takes none. ``format=NAME`` is FFmpeg's ``-f``: the
    demuxer to read with (``auto``: FFmpeg guesses)."""
    if not options:
        return spec
    if spec.kind == "demo":
        raise ConfigError("--input-option does not apply to the demo (FFmpeg does not open it)")
    if spec.format == PORTAL_FORMAT and not {key for key, _ in options} <= PORTAL_OPTIONS:
        raise ConfigError("a screen shared through the desktop portal takes only --input-option framerate=N "
                          "and draw_mouse=1")
    import av  # here, not at import: parsing a source must stay cheap

    chosen = dict(options)
    demuxer = chosen.pop(FORMAT_OPTION, None)
    if demuxer is not None and demuxer != "auto":
        try:
            if not av.format.ContainerFormat(demuxer).is_input:
                raise ValueError(demuxer)
        except ValueError:
            raise ConfigError(f"--input-option format={demuxer}: FFmpeg has no such input format "
                              "(e.g. mpegts, h264, flv; auto lets FFmpeg guess)") from None
    fmt = spec.format if demuxer is None else (None if demuxer == "auto" else demuxer)
    return dataclasses.replace(spec, format=fmt, options={**spec.options, **chosen})


# A host (an IPv4 address or a dotted name) with a port or a path: a camera's or a site's address typed
# without its scheme (192.168.1.20:554/stream1, www.example.com/live.m3u8).
_ADDRESS = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}(:\d+)?(/|$)|[\w-]+(\.[\w-]+)*\.[a-zA-Z]{2,}(:\d+)?/|[\w.-]+:\d+(/|$))")


def url_scheme(text: str) -> str | None:
    """The scheme of a URL (``https`` for ``HTTPS://...``), lower-cased; None if ``text`` is not a URL."""
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", text.strip())
    return scheme.group(1).lower() if scheme and len(scheme.group(1)) > 1 else None  # one letter: a Windows drive


def file_url_path(url: str, platform: str = sys.platform) -> str:
    """The path a ``file://`` URL names, as a browser's address bar or a file manager writes it:
    percent-escapes decoded (``My%20clip.mp4``), ``localhost`` allowed as its host, and a Windows
    drive's leading slash dropped (``file:///C:/Videos/a.mp4``). A URL naming another host is a
    :class:`ConfigError`."""
    try:
        parts = urlsplit(url.strip())
    except ValueError as e:  # file://[ : an unclosed IPv6 host
        raise ConfigError(f"{url}: not a valid file:// URL ({e})") from None
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"{url}: a file:// URL on another computer ({parts.netloc}) cannot be read; "
                          "mount its folder and give the path")
    if platform == "win32":
        path = unquote(parts.path)
        return path[1:] if re.match(r"^/[A-Za-z]:", path) else path
    return os.fsdecode(unquote_to_bytes(parts.path))  # a name that is not UTF-8 (%E9 in Latin-1) stays that name


def file_source_text(path: Path) -> str:
    """A source text that :func:`parse_source` reads as the file at ``path`` and as nothing else: the path
    itself where it reads back so, else its ``file://`` URL. A folder being scanned can hold a file named
    ``demo``, ``-``, ``screen@2x.png`` or `` a.mp4`` (a leading space), each a file there, not a source name."""
    text = str(path)
    try:
        spec = parse_source(text)
        if spec.kind == "file" and spec.url == text:
            return text
    except StreamGuardError:
        pass
    return path.absolute().as_uri()


def missing_file(text: str, path: Path) -> SourceNotFoundError:
    """The error for ``path`` (typed as ``text``) that is not a file to read: a folder or a named pipe says
    so, a broken link says where it points."""
    if path.is_dir():
        return SourceNotFoundError(f"{text} is a folder, not a video file")
    if path.exists():
        return SourceNotFoundError(f"{text}: is not a regular file (a named pipe or a device): give a video file, "
                                   "or pipe the video into stream-guard watch -")
    if path.is_symlink():
        return SourceNotFoundError(f"{text}: is a broken link (to {os.readlink(path)}, which does not exist)")
    typo = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)(//|:/)(?=[^/])", text)  # rtsp//host, rtsp:/host
    if typo and typo.group(1).lower() in NETWORK_SCHEMES:
        return SourceNotFoundError(f"no such file: {text}; did you mean {typo.group(1)}://{text[typo.end():]} ?")
    hint = "; a network address needs its scheme: rtsp://..., https://..." if _ADDRESS.match(text) else ""
    return SourceNotFoundError(f"no such file: {text}{hint}")


def parse_source(text: str, platform: str = sys.platform) -> SourceSpec:
    """Parse a source argument; raise a :class:`StreamGuardError` naming the problem. Quotes around
    it (Windows' "Copy as path", a file dragged into a terminal) are not part of it."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if not text:
        raise ConfigError("empty source: give a file, a URL, webcam:N, screen, window:TITLE or demo")
    if text == "demo":
        return SourceSpec("demo", "demo", "demo")
    if text == "-":  # another program's output: yt-dlp -o - URL | stream-guard watch -
        return SourceSpec("pipe", "pipe:0", "stdin")
    if text == "screen" or text.startswith(("screen:", "screen@")):
        return _screen_spec(text[len("screen:"):] if text.startswith("screen:") else text[len("screen"):], platform)
    if text.startswith("window:"):
        return _window_spec(text[len("window:"):].strip(), platform)
    if text.startswith("webcam:") or re.fullmatch(r"/dev/video\d+", text):
        return _webcam_spec(text.split(":", 1)[1] if text.startswith("webcam:") else text, platform)
    name = url_scheme(text)
    if name is not None:
        if name == "file":  # its path as it is: a name may end in a space (%20)
            path = file_url_path(text, platform)
            return _webcam_spec(path, platform) if re.fullmatch(r"/dev/video\d+", path) else _path_spec(path)
        if name not in NETWORK_SCHEMES:
            raise ConfigError(f"unknown URL scheme '{name}://' in {redact_url(text)} "
                              f"(supported: {', '.join(sorted(NETWORK_SCHEMES))})")
        try:
            port = urlsplit(text).port
        except ValueError:
            if redact_url(text) != text and re.search(r"[/?#@]", _USERINFO.match(text).group(0)[len(name) + 3:-1]):
                raise ConfigError(f"{redact_url(text)}: the password holds a character a URL cannot carry as it is "
                                  "(# ? / @): write it percent-encoded (%23 for #, %3F for ?, %2F for /, %40 for @)"
                                  ) from None
            raise ConfigError(f"{redact_url(text)}: the port is not a number from 0 to 65535") from None
        if name in ("udp", "srt") and port is None:
            raise ConfigError(f"{redact_url(text)}: {name}:// needs the port the stream comes to: {name}://HOST:PORT "
                              f"(e.g. {name}://0.0.0.0:1234)")
        options = dict(_LIVE_OPTIONS)
        if name in ("rtsp", "rtsps"):
            options["rtsp_transport"] = "tcp"
        if name in ("http", "https"):
            options.update(_HTTP_RESUME_OPTIONS)
        if name == "udp":
            # A reader that falls behind (a 4K stream on two cores) overruns FFmpeg's receive buffer, which
            # by default fails the stream (a reconnect every few seconds); losing the overrun, as a lost
            # datagram is lost, keeps it going (tests/test_udp_join.py).
            options["overrun_nonfatal"] = "1"
        return SourceSpec("network", text, redact_url(text), "mpegts" if name in _MPEG_TS_SCHEMES else None, options)
    return _path_spec(text)


def _path_spec(text: str) -> SourceSpec:
    """The file at the path ``text`` (``~`` expanded)."""
    try:
        path = Path(text).expanduser()
    except (RuntimeError, ValueError):  # "~user" with no such user (or a NUL in the name): take it literally
        path = Path(text)
    try:
        exists, folder = path.exists(), path.is_dir()
    except OSError as e:  # a name the file system cannot hold (too long, say)
        raise SourceNotFoundError(f"no such file: {text} ({e.strerror or e})") from None
    if not exists:
        raise missing_file(text, path)
    if folder:
        raise SourceNotFoundError(f"{text} is a folder, not a video file")
    return SourceSpec("file", str(path), str(path))
