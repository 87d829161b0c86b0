"""A Wayland desktop's screen (or one window), shared by the user through the desktop portal and
read from PipeWire.

GStreamer's ``pipewiresrc`` (the desktop's own PipeWire plugin, so it speaks whatever that
PipeWire version speaks) reads the shared stream in a child process, paces it to a steady frame
rate and writes it to a pipe as YUV4MPEG, a raw format that describes itself; PyAV reads the
pipe as it reads any other source. A static screen still yields frames: ``keepalive-time``
repeats the last picture when the compositor sends none.

**A shared window changes size** when the user resizes it, and the compositor then sends pictures
of the new size. YUV4MPEG states the picture size once, in its header, so the reader would cut
the new pictures at the old size: garbage. So the pictures are always scaled (keeping their
shape, black borders around) to one fixed size, that of the first picture, which a short first
look at the stream finds. The child reports every size the stream takes (``gst-launch -v``); once
a new size has held for a second (:class:`ResizeWatch`), the source fails with a message saying so
and the run reopens it, as it does any broken live source: the share is restored without asking
and read at its new size. A portal that cannot restore a share (before version 4) would ask
the user again, so there the picture stays scaled into the first size.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from fractions import Fraction
from typing import IO, Iterator, Sequence

from stream_guard.errors import ConfigError, SourceEnded, SourceError
from stream_guard.sources.base import OpensInWith
from stream_guard.sources.child_process import end_child
from stream_guard.sources.pyav_source import PyAVSource
from stream_guard.sources.resize_watch import ResizeWatch
from stream_guard.sources.screencast_portal import ScreenCastPortal, SharedStream
from stream_guard.sources.spec import SourceSpec
from stream_guard.types import Frame, StreamInfo

GST_LAUNCH = "gst-launch-1.0"
GST_PACKAGES = "Debian/Ubuntu: sudo apt install gstreamer1.0-tools gstreamer1.0-pipewire gstreamer1.0-plugins-good"
FIRST_PICTURE_TIMEOUT_S = 10.0
KEEPALIVE_MS = 100  # a static screen is repeated this often (the compositor sends frames only on change)
_PACER = "pace"  # the first element after the source: its input caps are the shared stream's
_STREAM_CAPS = re.compile(rb":" + _PACER.encode() + rb"\.GstPad:sink: caps = (video/x-raw.*)")
_WIDTH, _HEIGHT = re.compile(rb"\bwidth=\(int\)(\d+)"), re.compile(rb"\bheight=\(int\)(\d+)")

log = logging.getLogger(__name__)


def _frame_rate(text: str) -> Fraction:
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError) as e:
        raise ConfigError(f"framerate={text}: not a frame rate (e.g. 30 or 30000/1001)") from e
    if not 0 < rate <= 240:
        raise ConfigError(f"framerate={text}: must be above 0 and at most 240")
    return rate


def pipewire_elements(stream: SharedStream) -> list[str]:
    """The GStreamer source element that reads ``stream`` from PipeWire (its connection, ``stream.fd``,
    must be passed to the child)."""
    return ["pipewiresrc", f"fd={stream.fd}", f"path={stream.node_id}", "do-timestamp=true", "always-copy=true",
            f"keepalive-time={KEEPALIVE_MS}"]


def gstreamer_command(source: Sequence[str], rate: Fraction, out_fd: int,
                      size: tuple[int, int] | None) -> list[str]:
    """The ``gst-launch-1.0`` pipeline that reads the ``source`` elements and writes YUV4MPEG at
    ``rate`` to ``out_fd``: scaled into ``size`` (black borders keep the picture's shape), printing
    each size the source takes (:func:`stream_sizes` reads them); or, with ``size`` None, at the
    source's own size, which is only safe for a first look (the header states one size)."""
    fixed = f",width={size[0]},height={size[1]},pixel-aspect-ratio=1/1" if size else ""
    return [GST_LAUNCH, "-v" if size else "-q", *source,
            "!", "videorate", f"name={_PACER}", "!",
            f"video/x-raw,framerate={rate.numerator}/{rate.denominator}",
            "!", "videoconvert", "!", "videoscale", "add-borders=true", "!", f"video/x-raw,format=I420{fixed}",
            "!", "y4menc", "!", "fdsink", f"fd={out_fd}", "sync=false"]


def stream_sizes(verbose_output: bytes) -> list[tuple[int, int]]:
    """The sizes, in order, that the source of a :func:`gstreamer_command` pipeline took, from
    what ``gst-launch -v`` printed."""
    sizes = []
    for caps in _STREAM_CAPS.findall(verbose_output):
        width, height = _WIDTH.search(caps), _HEIGHT.search(caps)
        if width and height:
            sizes.append((int(width[1]), int(height[1])))
    return sizes


def y4m_picture_size(header: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a YUV4MPEG stream header line, or None if it is not one."""
    fields = header.split()
    if not fields or fields[0] != b"YUV4MPEG2":
        return None
    sizes = {f[:1]: f[1:] for f in fields[1:] if f[:1] in (b"W", b"H")}
    try:
        return int(sizes[b"W"]), int(sizes[b"H"])
    except (KeyError, ValueError):
        return None


def portal_readiness() -> tuple[bool, str]:
    """Whether screen capture through the desktop portal can work here, and what it would use or lacks."""
    portal = ScreenCastPortal()
    try:
        version = portal.version()
    except SourceError as e:
        return False, str(e)
    finally:
        portal.disconnect()
    if shutil.which(GST_LAUNCH) is None:
        return False, f"screen-cast portal v{version}, but no {GST_LAUNCH} ({GST_PACKAGES})"
    probe = subprocess.run(["gst-inspect-1.0", "pipewiresrc"], capture_output=True, timeout=20)
    if probe.returncode != 0:
        return False, f"screen-cast portal v{version}, but GStreamer has no pipewiresrc ({GST_PACKAGES})"
    return True, f"through the desktop portal (screen-cast v{version}) and GStreamer's pipewiresrc"


class PortalScreenSource(OpensInWith):
    """A :class:`FrameSource` for ``screen`` on Wayland (or ``screen:portal``): :meth:`open` asks
    the desktop to share a screen or window (its dialog, the first time), :meth:`close` ends the
    share. When the user stops sharing from the desktop, :meth:`frames` raises
    :class:`SourceEnded` and the run ends; any other break is reopened as for every live source,
    restoring the same share without asking again."""

    def __init__(self, spec: SourceSpec, **pyav_options: object) -> None:
        self.spec = spec
        self.source_id = spec.display_name
        self.rate = _frame_rate(spec.options.get("framerate", "30"))
        self._portal = ScreenCastPortal(cursor=spec.options.get("draw_mouse", "0") not in ("0", ""))
        self._pyav_options = pyav_options
        self._process: subprocess.Popen[bytes] | None = None
        self._errors: IO[bytes] | None = None  # the child's stderr, read when it fails
        self._sizes: IO[bytes] | None = None  # the child's stdout: the sizes the stream takes
        self._sizes_read, self._sizes_line = 0, b""  # how much of it was read; an unfinished line
        self._read_fd: int | None = None
        self._reader: PyAVSource | None = None
        self._resize: ResizeWatch | None = None
        self._resize_told: tuple[int, int] | None = None

    def open(self) -> StreamInfo:
        self._stop_reading()
        if shutil.which(GST_LAUNCH) is None:
            raise SourceError(f"screen capture through the desktop portal needs GStreamer's {GST_LAUNCH} "
                              f"and its PipeWire plugin ({GST_PACKAGES})")
        stream = self._portal.start()
        self._launch(stream, size=None)  # a first look, for the picture's size
        size = self._first_picture_size()
        self._stop_reading()
        self._launch(dataclasses.replace(stream, fd=self._portal.open_remote()), size)
        self._wait_for_first_picture()
        self._resize = ResizeWatch(size)
        self._reader = PyAVSource(SourceSpec("screen", f"pipe:{self._read_fd}", self.source_id, "yuv4mpegpipe"),
                                  **self._pyav_options)
        try:
            return self._reader.open()
        except SourceError as e:
            raise SourceError(f"{self.source_id}: {self._child_failure() or e}") from e

    def _launch(self, stream: SharedStream, size: tuple[int, int] | None) -> None:
        """Start the GStreamer child reading ``stream`` (its connection is closed here: the child has its own)."""
        read_fd, write_fd = os.pipe()
        self._errors = tempfile.TemporaryFile()
        self._sizes, self._sizes_read, self._sizes_line = tempfile.TemporaryFile(), 0, b""
        try:
            self._process = subprocess.Popen(gstreamer_command(pipewire_elements(stream), self.rate, write_fd, size),
                                             pass_fds=(stream.fd, write_fd), stdin=subprocess.DEVNULL,
                                             stdout=self._sizes, stderr=self._errors)
        except OSError as e:
            os.close(read_fd)
            raise SourceError(f"{self.source_id}: cannot start {GST_LAUNCH} ({e})") from e
        finally:
            os.close(write_fd)
            os.close(stream.fd)
        self._read_fd = read_fd

    def _wait_for_first_picture(self) -> None:
        """Fail with the child's own words if it dies or sends nothing (av.open would wait forever)."""
        assert self._read_fd is not None
        ready, _, _ = select.select([self._read_fd], [], [], FIRST_PICTURE_TIMEOUT_S)
        failure = self._child_failure()
        if failure:
            raise SourceError(f"{self.source_id}: {failure}")
        if not ready:
            raise SourceError(f"{self.source_id}: no picture from the shared screen within "
                              f"{FIRST_PICTURE_TIMEOUT_S:.0f} s (PipeWire sent nothing)")

    def _first_picture_size(self) -> tuple[int, int]:
        """The size of the first picture, from the header the child writes with it."""
        assert self._read_fd is not None
        header = b""
        while not header.endswith(b"\n") and len(header) < 256:
            self._wait_for_first_picture()
            chunk = os.read(self._read_fd, 1)
            if not chunk:
                break
            header += chunk
        size = y4m_picture_size(header)
        if size is None:
            raise SourceError(f"{self.source_id}: {self._child_failure() or 'no picture size from the shared screen'}")
        return size

    def _child_failure(self) -> str | None:
        """Why the GStreamer child ended, if it did: its last error line, or its exit status."""
        if self._process is None or self._process.poll() is None:
            return None
        assert self._errors is not None
        self._errors.seek(0)
        lines = [line.strip() for line in self._errors.read().decode(errors="replace").splitlines() if line.strip()]
        missing = next((line for line in lines if "no element" in line), None)
        if missing:
            return f"GStreamer lacks an element: {missing} ({GST_PACKAGES})"
        errors = [line for line in lines if line.startswith("ERROR") or "error" in line.lower()]
        detail = (errors or lines or [f"exit status {self._process.returncode}"])[-1]
        return f"reading the shared screen from PipeWire failed: {detail}"

    def frames(self) -> Iterator[Frame]:
        if self._reader is None:
            raise SourceError(f"{self.source_id}: frames() before open()")
        every = max(1, round(self.rate))  # look for the desktop's "stopped" about once a second
        try:
            for frame in self._reader.frames():
                yield frame
                if frame.index % every == every - 1 and self._portal.ended_by_user(wait_s=0):
                    raise SourceEnded("screen sharing was stopped from the desktop")
                self._check_size()
        except SourceEnded:
            raise
        except SourceError as e:  # the child stopped mid-picture
            self._raise_why_it_ended(e)
            raise
        self._raise_why_it_ended(None)

    def _check_size(self) -> None:
        """Fail (so the run reopens the share) once the stream has settled at another size."""
        assert self._sizes is not None and self._resize is not None
        self._sizes.seek(self._sizes_read)
        printed = self._sizes.read()
        self._sizes_read += len(printed)
        lines, _, self._sizes_line = (self._sizes_line + printed).rpartition(b"\n")
        now = time.monotonic()
        for size in stream_sizes(lines):
            self._resize.note(size, now)
        new_size = self._resize.settled_size(now)
        if new_size is None or new_size == self._resize_told:
            return
        what = f"the shared picture is now {new_size[0]}x{new_size[1]}"
        if self._portal.restorable:
            raise SourceError(f"{self.source_id}: {what}: reading it again at that size")
        self._resize_told = new_size
        log.info("%s: %s; it stays scaled into %dx%d (this desktop's portal would ask again to reopen it)",
                 self.source_id, what, *self._resize.read_at)

    def _raise_why_it_ended(self, error: SourceError | None) -> None:
        if self._portal.ended_by_user():
            raise SourceEnded("screen sharing was stopped from the desktop") from error
        failure = self._child_failure()
        if failure:
            raise SourceError(f"{self.source_id}: {failure}") from error

    def _stop_reading(self) -> None:
        reader, self._reader = self._reader, None
        process, self._process = self._process, None
        if process is not None:  # first, so a read blocked on the pipe sees its end
            end_child(process, wait_s=2)
        if reader is not None:
            reader.close()
        read_fd, self._read_fd = self._read_fd, None
        if read_fd is not None:
            os.close(read_fd)  # FFmpeg's pipe: protocol leaves it open
        for output in (self._errors, self._sizes):
            if output is not None:
                output.close()
        self._errors, self._sizes = None, None

    def close(self) -> None:
        self._stop_reading()
        self._portal.close()
