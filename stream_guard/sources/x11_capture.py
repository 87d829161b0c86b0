"""One window, one monitor or the screen of an X11 desktop, read by FFmpeg's x11grab and followed as it changes.

x11grab reads a window by its id (``window_id``), wherever it is moved, or a rectangle of the
screen. What it cannot follow, this source does:

- the target **grew or moved** (a window enlarged: x11grab keeps its first size; a monitor's
  resolution or place changed: the rectangle is stale): its geometry is checked a few times a
  second, and once a new one has held for a second (:class:`ResizeWatch`) the source fails
  saying so, and the run reopens it, which finds the target again at its new geometry;
- x11grab **failed** (a window shrunk below its captured size, minimised or closed; a monitor
  unplugged): the failure says what happened, and the run reopens the source for as long as a
  live source is retried;
- the **X server went away** (the user logged out, a remote desktop closed): x11grab goes on handing
  over its last picture, so the check of the geometry, which needs the server, fails the source.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Iterator

from stream_guard.errors import SourceError
from stream_guard.sources.base import OpensInWith
from stream_guard.sources.pyav_source import PyAVSource
from stream_guard.sources.resize_watch import ResizeWatch
from stream_guard.sources.spec import SourceSpec
from stream_guard.sources.x11_display import XDisplay
from stream_guard.sources.x11_targets import MonitorTarget, ScreenTarget, WindowTarget, X11Target
from stream_guard.types import Frame, StreamInfo

log = logging.getLogger(__name__)

GEOMETRY_CHECKS_PER_S = 4


def x11_target(spec: SourceSpec) -> X11Target:
    """The window, monitor or screen an x11grab spec names."""
    if spec.window is not None:
        return WindowTarget(spec.window)
    if spec.monitor is not None:
        return MonitorTarget(spec.monitor)
    return ScreenTarget(spec.url, spec.region)


class X11CaptureSource(OpensInWith):
    """A :class:`FrameSource` for ``window:TITLE``, ``screen@MONITOR``, ``screen`` and ``screen@WxH+X+Y`` on an
    X11 desktop."""

    def __init__(self, spec: SourceSpec, **pyav_options: object) -> None:
        self.spec = spec
        self.source_id = spec.display_name
        self.target = x11_target(spec)
        self._pyav_options = pyav_options
        self._display: XDisplay | None = None
        self._reader: PyAVSource | None = None
        self._watch: ResizeWatch | None = None
        self._told = ""
        self._fps = 30.0

    def open(self) -> StreamInfo:
        self._close_reader()
        if self._display is None:
            # a region's url is DISPLAY+X,Y (x11grab's form): the display is what comes before the +
            self._display = XDisplay(self.spec.url if self.spec.region is None else self.spec.url.rpartition("+")[0])
        capture = self.target.locate(self._display)
        if capture.description != self._told:
            log.info("%s: capturing %s", self.source_id, capture.description)
            self._told = capture.description
        spec = replace(self.spec, url=capture.url, options={**self.spec.options, **capture.options},
                       window=None, monitor=None)
        self._reader = PyAVSource(spec, **self._pyav_options)
        info = self._reader.open()
        self._fps = info.fps
        self._watch = ResizeWatch(capture.geometry)
        return info

    def frames(self) -> Iterator[Frame]:
        if self._reader is None or self._display is None or self._watch is None:
            raise SourceError(f"{self.source_id}: frames() before open()")
        every = max(1, round(self._fps / GEOMETRY_CHECKS_PER_S))
        try:
            for frame in self._reader.frames():
                yield frame
                if frame.index % every == every - 1:
                    self._check_geometry()
        except SourceError as e:
            try:
                why = self.target.why_failed(self._display, self._watch.read_at)
            except SourceError as lost:  # the X server went away
                why = str(lost)
            if why is None:
                raise
            raise SourceError(f"{self.source_id}: {why}") from e

    def _check_geometry(self) -> None:
        """Fail (so the run reopens the target) once it has settled at another geometry."""
        assert self._display is not None and self._watch is not None
        try:
            geometry = self.target.geometry(self._display)
        except SourceError as e:  # the X server went away: x11grab (shared memory) goes on with the last picture
            raise SourceError(f"{self.source_id}: {e}") from e
        if geometry is None:
            return  # gone: x11grab fails by itself
        now = time.monotonic()
        self._watch.note(geometry, now)
        settled = self._watch.settled_size(now)
        if settled is not None:
            raise SourceError(f"{self.source_id}: {self.target.changed(settled)}")

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def close(self) -> None:
        self._close_reader()
        display, self._display = self._display, None
        if display is not None:
            display.close()
