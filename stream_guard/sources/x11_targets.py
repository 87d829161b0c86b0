"""What ``window:TITLE``, ``screen@MONITOR`` and ``screen`` name on an X display, and how x11grab reads it.

A target is found when the source opens (and again at each reopen), and watched while it is read:
its geometry may change (a window resized, a monitor's resolution or place changed), which x11grab
does not follow by itself (:mod:`stream_guard.sources.x11_capture`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from stream_guard.errors import SourceError, SourceNotFoundError
from stream_guard.sources.spec import ScreenRegion, SourceSpec
from stream_guard.sources.x11_display import X11Monitor, X11Window, XDisplay, screen_contents

_MAX_LISTED = 8
_WINDOW_ID = re.compile(r"0x[0-9a-fA-F]+|\d+")


@dataclass(frozen=True, slots=True)
class Capture:
    """How x11grab reads a target now: its input (``url``) and options, the geometry that is
    watched for a change, and the target in words (for the log)."""

    url: str
    options: dict[str, str]
    geometry: tuple[int, ...]
    description: str


class X11Target(Protocol):
    """A window, monitor or screen of an X display, as
    :class:`~stream_guard.sources.x11_capture.X11CaptureSource` reads it."""

    def locate(self, display: XDisplay) -> Capture:
        """Find the target (raises :class:`SourceNotFoundError` naming what there is)."""

    def geometry(self, display: XDisplay) -> tuple[int, ...] | None:
        """The located target's geometry now, in :attr:`Capture.geometry`'s terms; None if it is gone."""

    def changed(self, geometry: tuple[int, ...]) -> str:
        """In words: the target now has ``geometry``, and is read again so."""

    def why_failed(self, display: XDisplay, read_at: tuple[int, ...]) -> str | None:
        """In words, what happened to the target when x11grab failed to read it (None: nothing known)."""


def _listing(items: list) -> str:
    shown = "; ".join(str(i) for i in items[:_MAX_LISTED])
    return shown + (f"; and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


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


def window_sources(windows: list[X11Window]) -> list[str]:
    """``window:TITLE`` for each window (``window:0xID`` where two share a title)."""
    titles = [w.title for w in windows]
    return [f"window:{w.title}" if titles.count(w.title) == 1 else f"window:{w.id:#x}" for w in windows]


class WindowTarget:
    """``window:TITLE`` (or ``window:0xID``): captured by its id, so it is followed when moved.
    Reopened, it is the same window while that is still there, whatever its title has become (a
    browser's follows its tab); else the window the user named is looked for again."""

    def __init__(self, wanted: str) -> None:
        self.wanted = wanted
        self._id: int | None = None

    def _current(self, display: XDisplay) -> X11Window | None:
        """The window located last, as it is now (None before the first, or once it is closed)."""
        return display.window(self._id) if self._id is not None else None

    def _find(self, display: XDisplay) -> X11Window:
        again = self._current(display)
        if again is not None and again.viewable:
            return again
        if _WINDOW_ID.fullmatch(self.wanted):
            window_id = int(self.wanted, 16) if self.wanted.lower().startswith("0x") else int(self.wanted)
            window = display.window(window_id)
            if window is not None:
                return window
            # no window has that id: a title that is a number ("2024", as the app's list offers it)
            titled = [w for w in display.windows() if self.wanted in w.title]
            if not titled:
                raise SourceNotFoundError(f"no window {self.wanted} on X display {display.name}")
            return choose_window(titled, self.wanted, display.name)
        return choose_window(display.windows(), self.wanted, display.name)

    def locate(self, display: XDisplay) -> Capture:
        window = self._find(display)
        self._id = window.id
        return Capture(display.name, {"window_id": f"{window.id:#x}"}, (window.width, window.height), f"window {window}")

    def geometry(self, display: XDisplay) -> tuple[int, ...] | None:
        window = self._current(display)
        return (window.width, window.height) if window is not None and window.viewable else None

    def changed(self, geometry: tuple[int, ...]) -> str:
        return f"the window is now {geometry[0]}x{geometry[1]}: reading it again at that size"

    def why_failed(self, display: XDisplay, read_at: tuple[int, ...]) -> str | None:
        window = self._current(display)
        if window is None:
            return "the window was closed"
        if not window.viewable:
            return "the window was minimised or hidden"
        if not window.on_screen:
            return "the window is partly off the screen, which x11grab cannot read: move it all onto the screen"
        if window.width < read_at[0] or window.height < read_at[1]:
            return f"the window shrank to {window.width}x{window.height}: reading it again at that size"
        return None


def choose_monitor(monitors: list[X11Monitor], wanted: str, display: str) -> X11Monitor:
    """The monitor named ``wanted`` (any case), numbered so (0 is the first), or the primary one
    for ``primary`` (the first where none is marked primary, as a desktop without the setting
    shows its panel there). Raises :class:`SourceNotFoundError` naming the monitors there are."""
    fold = wanted.casefold()
    for monitor in monitors:
        if (monitor.name.casefold() == fold or (wanted.isdigit() and monitor.number == int(wanted))
                or (fold == "primary" and monitor.primary)):
            return monitor
    if fold == "primary" and monitors:
        return monitors[0]
    there = f"its monitors: {_listing(monitors)}" if monitors else "it reports no monitors (no RandR 1.5)"
    raise SourceNotFoundError(f"no monitor '{wanted}' on X display {display}; {there}")


def monitor_sources(monitors: list[X11Monitor]) -> list[str]:
    """``screen@NAME`` for each monitor, where there are several (with one, ``screen`` is the same)."""
    return [f"screen@{m.name}" for m in monitors] if len(monitors) > 1 else []


def one_monitor_hint(spec: SourceSpec) -> str:
    """For a whole X11 screen of several monitors: how to capture just one ("" otherwise)."""
    if spec.format != "x11grab" or spec.region is not None or spec.monitor is not None or spec.window is not None:
        return ""
    try:
        monitors, _ = screen_contents(spec.url)
    except SourceError:
        return ""
    return f"capture one monitor: {', '.join(monitor_sources(monitors))}" if len(monitors) > 1 else ""


class MonitorTarget:
    """``screen@NAME``: the part of the screen one monitor shows, found again at each reopen."""

    def __init__(self, wanted: str) -> None:
        self.wanted = wanted
        self._name: str | None = None

    def locate(self, display: XDisplay) -> Capture:
        monitor = choose_monitor(display.monitors(), self.wanted, display.name)
        self._name = monitor.name
        return Capture(f"{display.name}+{monitor.x},{monitor.y}", {"video_size": f"{monitor.width}x{monitor.height}"},
                       (monitor.width, monitor.height, monitor.x, monitor.y), f"monitor {monitor}")

    def geometry(self, display: XDisplay) -> tuple[int, ...] | None:
        # () while it is unplugged: x11grab need not fail then (the screen may not shrink), so a
        # monitor gone for a second is a change like any other, and the run looks for it again
        monitor = next((m for m in display.monitors() if m.name == self._name), None)
        return (monitor.width, monitor.height, monitor.x, monitor.y) if monitor is not None else ()

    def changed(self, geometry: tuple[int, ...]) -> str:
        if not geometry:
            return f"monitor {self._name} was disconnected"
        width, height, x, y = geometry
        return f"monitor {self._name} is now {width}x{height}+{x}+{y}: reading it again there"

    def why_failed(self, display: XDisplay, read_at: tuple[int, ...]) -> str | None:
        geometry = self.geometry(display)
        return self.changed(geometry) if geometry != read_at else None


class ScreenTarget:
    """``screen`` (the whole screen) or ``screen@WxH+X+Y`` (a fixed rectangle of it). x11grab reads a whole
    screen at the size it had when opened, and when the X server goes away it hands over its last picture
    for ever (shared memory): watched like a window, the screen is read again at its new size, and a server
    that is gone fails the source."""

    def __init__(self, url: str, region: ScreenRegion | None) -> None:
        self.url, self.region = url, region

    def locate(self, display: XDisplay) -> Capture:
        size = display.screen_size()
        if self.region is None:
            return Capture(self.url, {}, size, f"the whole screen, {size[0]}x{size[1]}")
        return Capture(self.url, {}, (), f"the rectangle {self.region} of the {size[0]}x{size[1]} screen")

    def geometry(self, display: XDisplay) -> tuple[int, ...] | None:
        size = display.screen_size()  # asked for a region too: it raises once the server is gone
        return size if self.region is None else ()

    def changed(self, geometry: tuple[int, ...]) -> str:
        return f"the screen is now {geometry[0]}x{geometry[1]}: reading it again at that size"

    def why_failed(self, display: XDisplay, read_at: tuple[int, ...]) -> str | None:
        width, height = display.screen_size()
        if self.region is not None and (self.region.x + self.region.width > width
                                        or self.region.y + self.region.height > height):
            return f"the screen is now {width}x{height}: the rectangle {self.region} is no longer all on it"
        return self.changed((width, height)) if self.region is None and (width, height) != read_at else None
