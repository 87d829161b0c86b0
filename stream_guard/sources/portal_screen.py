"""A Wayland desktop's screen (or one window), shared by the user through the desktop portal and
read from PipeWire.

GStreamer's ``pipewiresrc`` (the desktop's own PipeWire plugin, so it speaks whatever that
PipeWire version speaks) reads the shared stream in a child process, paces it to a steady frame
rate and writes it to a pipe as YUV4MPEG, a raw format that describes itself; PyAV reads the
pipe as it reads any other source. A static screen still yields frames: ``keepalive-time``
repeats the last picture when the compositor sends none.
"""
from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
from fractions import Fraction
from typing import IO, Iterator

from stream_guard.errors import ConfigError, SourceEnded, SourceError
from stream_guard.sources.pyav_source import PyAVSource
from stream_guard.sources.screencast_portal import ScreenCastPortal, SharedStream
from stream_guard.sources.spec import SourceSpec
from stream_guard.types import Frame, StreamInfo

GST_LAUNCH = "gst-launch-1.0"
GST_PACKAGES = "Debian/Ubuntu: sudo apt install gstreamer1.0-tools gstreamer1.0-pipewire gstreamer1.0-plugins-good"
FIRST_PICTURE_TIMEOUT_S = 10.0
KEEPALIVE_MS = 100  # a static screen is repeated this often (the compositor sends frames only on change)


def _frame_rate(text: str) -> Fraction:
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError) as e:
        raise ConfigError(f"framerate={text}: not a frame rate (e.g. 30 or 30000/1001)") from e
    if not 0 < rate <= 240:
        raise ConfigError(f"framerate={text}: must be above 0 and at most 240")
    return rate


def gstreamer_command(stream: SharedStream, rate: Fraction, out_fd: int) -> list[str]:
    """The ``gst-launch-1.0`` pipeline that reads ``stream`` and writes YUV4MPEG at ``rate`` to ``out_fd``."""
    return [GST_LAUNCH, "-q",
            "pipewiresrc", f"fd={stream.fd}", f"path={stream.node_id}", "do-timestamp=true", "always-copy=true",
            f"keepalive-time={KEEPALIVE_MS}",
            "!", "videorate", "!", f"video/x-raw,framerate={rate.numerator}/{rate.denominator}",
            "!", "videoconvert", "!", "video/x-raw,format=I420",
            "!", "y4menc", "!", "fdsink", f"fd={out_fd}", "sync=false"]


def portal_readiness() -> tuple[bool, str]:
    """Whether screen capture through the desktop portal can work here, and what it would use or lacks."""
    portal = ScreenCastPortal()
    try:
        version = portal.version()
    except SourceError as e:
        return False, str(e)
    finally:
        portal.close()
    if shutil.which(GST_LAUNCH) is None:
        return False, f"screen-cast portal v{version}, but no {GST_LAUNCH} ({GST_PACKAGES})"
    probe = subprocess.run(["gst-inspect-1.0", "pipewiresrc"], capture_output=True, timeout=20)
    if probe.returncode != 0:
        return False, f"screen-cast portal v{version}, but GStreamer has no pipewiresrc ({GST_PACKAGES})"
    return True, f"through the desktop portal (screen-cast v{version}) and GStreamer's pipewiresrc"


class PortalScreenSource:
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
        self._read_fd: int | None = None
        self._reader: PyAVSource | None = None

    def open(self) -> StreamInfo:
        self._stop_reading()
        if shutil.which(GST_LAUNCH) is None:
            raise SourceError(f"screen capture through the desktop portal needs GStreamer's {GST_LAUNCH} "
                              f"and its PipeWire plugin ({GST_PACKAGES})")
        stream = self._portal.start()
        try:
            self._start_gstreamer(stream)
        finally:
            os.close(stream.fd)  # the child holds its own copy
        self._wait_for_first_picture()
        self._reader = PyAVSource(SourceSpec("screen", f"pipe:{self._read_fd}", self.source_id, "yuv4mpegpipe"),
                                  **self._pyav_options)
        try:
            return self._reader.open()
        except SourceError as e:
            raise SourceError(f"{self.source_id}: {self._child_failure() or e}") from e

    def _start_gstreamer(self, stream: SharedStream) -> None:
        read_fd, write_fd = os.pipe()
        self._errors = tempfile.TemporaryFile()
        try:
            self._process = subprocess.Popen(gstreamer_command(stream, self.rate, write_fd),
                                             pass_fds=(stream.fd, write_fd), stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=self._errors)
        except OSError as e:
            os.close(read_fd)
            raise SourceError(f"{self.source_id}: cannot start {GST_LAUNCH} ({e})") from e
        finally:
            os.close(write_fd)
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
        except SourceEnded:
            raise
        except SourceError as e:  # the child stopped mid-picture
            self._raise_why_it_ended(e)
            raise
        self._raise_why_it_ended(None)

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
            process.terminate()
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if reader is not None:
            reader.close()
        read_fd, self._read_fd = self._read_fd, None
        if read_fd is not None:
            os.close(read_fd)  # FFmpeg's pipe: protocol leaves it open
        errors, self._errors = self._errors, None
        if errors is not None:
            errors.close()

    def close(self) -> None:
        self._stop_reading()
        self._portal.close()

    def __enter__(self) -> "PortalScreenSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
