"""What an X11 display shows: its application windows and its monitors, read with python-xlib.

Windows are the window manager's list of application windows (``_NET_CLIENT_LIST``, EWMH) where
there is one, else the top-level windows; monitors are RandR 1.5's (what ``xrandr --listmonitors``
prints). stream_guard's own windows (the desktop app, ``--show``) are never listed: capturing
one would be a picture of itself.
"""
from __future__ import annotations

from dataclasses import dataclass

from stream_guard import WINDOW_TITLE
from stream_guard.errors import SourceError


@dataclass(frozen=True, slots=True)
class X11Window:
    """An application window: its id, title and size."""

    id: int
    title: str
    width: int
    height: int
    viewable: bool = True  # False: minimised or hidden
    on_screen: bool = True  # False: partly off the screen (x11grab cannot read it then)

    def __str__(self) -> str:
        return f'{self.id:#x} "{self.title}" {self.width}x{self.height}'


@dataclass(frozen=True, slots=True)
class X11Monitor:
    """A monitor: its number (as ``xrandr --listmonitors`` counts), name and place on the screen."""

    number: int
    name: str
    width: int
    height: int
    x: int
    y: int
    primary: bool = False

    @property
    def geometry(self) -> str:
        return f"{self.width}x{self.height}+{self.x}+{self.y}"

    def __str__(self) -> str:
        return f"{self.number} {self.name} {self.geometry}" + (" (primary)" if self.primary else "")


def is_own_window(title: str) -> bool:
    """Whether a window of this title is one that stream_guard opened (the desktop app, ``--show``)."""
    return title == WINDOW_TITLE or title.startswith(f"{WINDOW_TITLE} - ")


class XDisplay:
    """A connection to one X display (``name``, e.g. ``:0``); :class:`SourceError` when it fails."""

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

    def _lost(self, error: Exception) -> SourceError:
        return SourceError(f"X display {self.name} closed the connection ({error})")

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
        """The viewable application windows that have a title, top-level ones first; not this app's own."""
        from Xlib import error

        try:
            candidates = [self.window(window_id) for window_id in self._candidate_ids()]
        except error.ConnectionClosedError as e:
            raise self._lost(e) from e
        return [w for w in candidates if w is not None and w.viewable and w.title and not is_own_window(w.title)]

    def window(self, window_id: int) -> X11Window | None:
        """The window with this id, if it still exists."""
        from Xlib import X, error

        window = self.x.create_resource_object("window", window_id)
        try:
            geometry = window.get_geometry()
            viewable = window.get_attributes().map_state == X.IsViewable
            root = self.x.screen().root
            at = root.translate_coords(window, 0, 0)  # the window's top left corner on the screen
            screen = root.get_geometry()
            on_screen = (at.x >= 0 and at.y >= 0 and at.x + geometry.width <= screen.width
                         and at.y + geometry.height <= screen.height)
            return X11Window(window_id, self._title(window), geometry.width, geometry.height, viewable, on_screen)
        except error.XError:  # closed meanwhile
            return None
        except error.ConnectionClosedError as e:
            raise self._lost(e) from e

    def screen_size(self) -> tuple[int, int]:
        """The screen's size now (a round trip: it raises once the X server is gone)."""
        from Xlib import error

        try:
            geometry = self.x.screen().root.get_geometry()
        except error.ConnectionClosedError as e:
            raise self._lost(e) from e
        return geometry.width, geometry.height

    def monitors(self) -> list[X11Monitor]:
        """The active monitors, in RandR's order."""
        from Xlib import error

        try:
            if not self.x.has_extension("RANDR"):
                return []
            found = self.x.screen().root.xrandr_get_monitors().monitors
            return [X11Monitor(number, self.x.get_atom_name(m.name), m.width_in_pixels, m.height_in_pixels, m.x, m.y,
                               bool(m.primary)) for number, m in enumerate(found)]
        except error.ConnectionClosedError as e:
            raise self._lost(e) from e
        except error.XError:  # a server without RandR 1.5
            return []

    def close(self) -> None:
        from Xlib import error

        try:
            self.x.close()
        except (error.ConnectionClosedError, OSError):  # the X server went away: nothing left to close
            pass


def screen_contents(display: str) -> tuple[list[X11Monitor], list[X11Window]]:
    """The monitors and the application windows of X ``display`` (:class:`SourceError` if it cannot be read)."""
    x = XDisplay(display)
    try:
        return x.monitors(), x.windows()
    finally:
        x.close()
