"""One application window of an X11 desktop (a video call's, say), found by its title and
captured wherever it is moved.

FFmpeg's x11grab captures a window by its id (``window_id``): the window's own pixels, so moving
it changes nothing. What it cannot follow:

- **enlarged**, the window is still captured at its first size (the new area is not recorded):
  its size is watched, and once a new size has held for a second (:class:`ResizeWatch`) the
  source fails saying so and the run reopens it at the new size;
- **shrunk** below the captured size, **minimised** or **closed**, FFmpeg fails: the run reopens
  the source, which takes the same window while it is still there, whatever its title has become,
  else looks for the window by its title again (an application that makes a new window gets a
  new id), for as long as a live source is retried.

Windows are listed with python-xlib: the window manager's list of application windows
(``_NET_CLIENT_LIST``, EWMH) where there is one, else the top-level windows.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, replace
from typing import Iterator

from stream_guard import WINDOW_TITLE
from stream_guard.errors import SourceError, SourceNotFoundError
from stream_guard.sources.pyav_source import PyAVSource
from stream_guard.sources.resize_watch import ResizeWatch
from stream_guard.sources.spec import SourceSpec
from stream_guard.types import Frame, StreamInfo

log = logging.getLogger(__name__)

SIZE_CHECKS_PER_S = 4
_MAX_LISTED = 8
_WINDOW_ID = re.compile(r"0x[0-9a-fA-F]+|\d+")


@dataclass(frozen=True, slots=True)
class X11Window:
    """A viewable application window: its id, title and size."""

    id: int
    title: str
    width: int
    height: int
    viewable: bool = True  # False: minimised or hidden

    def __str__(self) -> str:
        return f'{self.id:#x} "{self.title}" {self.width}x{self.height}'


def is_own_window(title: str) -> bool:
    """Whether a window of this title is one that stream_guard opened (the desktop app, ``--show``)."""
    return title == WINDOW_TITLE or title.startswith(f"{WINDOW_TITLE} - ")


class _Display:
    """A connection to one X display, for listing windows and reading their sizes."""

    def __init__(self, name: str) -> None:
        from Xlib import display, error  # Linux only: imported where it is used

        try:
            self.x = display.Display(name)
        except (error.DisplayError, error.ConnectionClosedError, OSError) as e:
            raise SourceError(f"cannot open X display {name} ({e})") from e
        self.name = name
        self._net_client_list = self.x.intern_atom("_NET_CLIENT_LIST")
        self._net_wm_name = self.x.intern_atom("_NET_WM_NAME")
        self._utf8 = self.x.intern_atom("UTF8_STRING")

    def _title(self, window) -> str:  # noqa: ANN001 - an Xlib window
        name = window.get_full_property(self._net_wm_name, self._utf8)
        if name is not None and name.value:
            return name.value.decode("utf-8", "replace")
        legacy = window.get_wm_name()
        return legacy.decode("latin-1") if isinstance(legacy, bytes) else (legacy or "")

    def _candidate_ids(self) -> list[int]:
        root = self.x.screen().root
        clients = root.get_full_property(self._net_client_list, 0)  # 0: AnyPropertyType
        if clients is not None and len(clients.value):
            return [int(w) for w in clients.value]
        tops = root.query_tree().children
        return [w.id for w in tops] + [child.id for top in tops for child in top.query_tree().children]  # framed

    def windows(self) -> list[X11Window]:
        """The viewable application windows that have a title, top-level ones first; not this app's
        own (``--show``'s is titled after the source: capturing it would be a loop)."""
        from Xlib import error

        try:
            candidates = [self.window(window_id) for window_id in self._candidate_ids()]
        except error.ConnectionClosedError as e:
            raise SourceError(f"X display {self.name} closed the connection ({e})") from e
        return [w for w in candidates if w is not None and w.viewable and w.title and not is_own_window(w.title)]

    def window(self, window_id: int) -> X11Window | None:
        """The window with this id, if it still exists."""
        from Xlib import X, error

        window = self.x.create_resource_object("window", window_id)
        try:
            geometry = window.get_geometry()
            viewable = window.get_attributes().map_state == X.IsViewable
            return X11Window(window_id, self._title(window), geometry.width, geometry.height, viewable)
        except error.XError:  # closed meanwhile
            return None
        except error.ConnectionClosedError as e:
            raise SourceError(f"X display {self.name} closed the connection ({e})") from e

    def close(self) -> None:
        self.x.close()


def list_windows(display: str) -> list[X11Window]:
    """The viewable application windows of X ``display`` that have a title."""
    x = _Display(display)
    try:
        return x.windows()
    finally:
        x.close()


def window_sources(windows: list[X11Window]) -> list[str]:
    """``window:TITLE`` for each window (``window:0xID`` where two share a title)."""
    titles = [w.title for w in windows]
    return [f"window:{w.title}" if titles.count(w.title) == 1 else f"window:{w.id:#x}" for w in windows]


def _listing(windows: list[X11Window]) -> str:
    shown = "; ".join(str(w) for w in windows[:_MAX_LISTED])
    return shown + (f"; and {len(windows) - _MAX_LISTED} more" if len(windows) > _MAX_LISTED else "")


def choose_window(windows: list[X11Window], wanted: str, display: str) -> X11Window:
    """The one window whose title is ``wanted`` or contains it (either case), the exact title first.
    Raises :class:`SourceNotFoundError` naming the windows there are when none or several fit."""
    fold = wanted.casefold()
    exact = [w for w in windows if w.title.casefold() == fold]
    if len(exact) == 1:
        return exact[0]
    partial = exact or [w for w in windows if fold in w.title.casefold()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        there = f"windows there: {_listing(windows)}" if windows else "it shows no application window"
        raise SourceNotFoundError(f"no window titled like '{wanted}' on X display {display}; {there}")
    raise SourceNotFoundError(f"{len(partial)} windows titled like '{wanted}' on X display {display}: "
                              f"{_listing(partial)}: give more of the title, or the window's id (window:0x...)")


class X11WindowSource:
    """A :class:`FrameSource` for ``window:TITLE`` (or ``window:0xID``) on an X11 desktop."""

    def __init__(self, spec: SourceSpec, **pyav_options: object) -> None:
        assert spec.window is not None
        self.spec = spec
        self.source_id = spec.display_name
        self._pyav_options = pyav_options
        self._display: _Display | None = None
        self._reader: PyAVSource | None = None
        self._window: X11Window | None = None
        self._resize: ResizeWatch | None = None
        self._fps = 30.0

    def _find(self, display: _Display) -> X11Window:
        """The window captured before, while it is still there (its title may have changed since: a
        browser's follows its tab); else the window the user named."""
        if self._window is not None:
            again = display.window(self._window.id)
            if again is not None and again.viewable:
                return again
        wanted = self.spec.window or ""
        if _WINDOW_ID.fullmatch(wanted):
            window = display.window(int(wanted, 16) if wanted.lower().startswith("0x") else int(wanted))
            if window is None:
                raise SourceNotFoundError(f"no window {wanted} on X display {display.name}")
            return window
        return choose_window(display.windows(), wanted, display.name)

    def open(self) -> StreamInfo:
        self._close_reader()
        if self._display is None:
            self._display = _Display(self.spec.url)
        window = self._find(self._display)
        if window != self._window:
            log.info("%s: capturing window %s", self.source_id, window)
        options = {**self.spec.options, "window_id": f"{window.id:#x}"}
        self._reader = PyAVSource(replace(self.spec, options=options, window=None), **self._pyav_options)
        info = self._reader.open()
        self._window, self._fps = window, info.fps
        self._resize = ResizeWatch((info.width, info.height))
        return info

    def frames(self) -> Iterator[Frame]:
        if self._reader is None or self._window is None:
            raise SourceError(f"{self.source_id}: frames() before open()")
        every = max(1, round(self._fps / SIZE_CHECKS_PER_S))
        try:
            for frame in self._reader.frames():
                yield frame
                if frame.index % every == every - 1:
                    self._check_size()
        except SourceError as e:
            why = self._why_capture_failed()
            if why is None:
                raise
            raise SourceError(f"{self.source_id}: {why}") from e

    def _why_capture_failed(self) -> str | None:
        """What happened to the window, in words, when FFmpeg failed to capture it."""
        assert self._display is not None and self._window is not None and self._resize is not None
        try:
            current = self._display.window(self._window.id)
        except SourceError as e:
            return str(e)
        if current is None:
            return "the window was closed"
        if not current.viewable:
            return "the window was minimised or hidden"
        width, height = self._resize.read_at
        if current.width < width or current.height < height:
            return f"the window shrank to {current.width}x{current.height}: reading it again at that size"
        return None

    def _check_size(self) -> None:
        """Fail (so the run reopens the window) once it has settled at another size."""
        assert self._display is not None and self._window is not None and self._resize is not None
        try:
            current = self._display.window(self._window.id)
        except SourceError:
            return  # the X server went away: FFmpeg fails by itself
        if current is None:
            return  # closed: FFmpeg fails by itself
        now = time.monotonic()
        self._resize.note((current.width, current.height), now)
        size = self._resize.settled_size(now)
        if size is not None:
            raise SourceError(f"{self.source_id}: the window is now {size[0]}x{size[1]}: reading it again at that size")

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def close(self) -> None:
        self._close_reader()
        display, self._display = self._display, None
        if display is not None:
            display.close()

    def __enter__(self) -> "X11WindowSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
