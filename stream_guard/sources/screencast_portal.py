"""The xdg-desktop-portal ScreenCast handshake: on a Wayland desktop an application may see the
screen only through it. The desktop (GNOME, KDE, wlroots) asks the user which screen or window
to share, then hands over a PipeWire connection that can read that one stream.

The D-Bus calls follow the portal's documented protocol: ``CreateSession``, ``SelectSources``,
``Start`` (each answered later by a ``Response`` signal on a request object whose path the
caller can predict), then ``OpenPipeWireRemote``. Used from one thread at a time.
"""
from __future__ import annotations

import logging
import os
import secrets
import time
import weakref
from collections import deque
from dataclasses import dataclass

from stream_guard.errors import SourceEnded, SourceError

log = logging.getLogger(__name__)

PORTAL_BUS = "org.freedesktop.portal.Desktop"
PORTAL_PATH = "/org/freedesktop/portal/desktop"
SCREENCAST = "org.freedesktop.portal.ScreenCast"
MONITOR, WINDOW = 1, 2  # source types
CURSOR_HIDDEN, CURSOR_EMBEDDED = 1, 2
PERSIST_WHILE_RUNNING = 1  # the share may be restored without asking again while we run
CHOICE_TIMEOUT_S = 180.0  # how long the user may take to pick a screen in the dialog
CALL_TIMEOUT_S = 10.0
_RESPONSE_CANCELLED = 1
_NEEDS = ("xdg-desktop-portal with the desktop's backend (xdg-desktop-portal-gnome, -kde or -wlr) "
          "and PipeWire running in this session")
_NO_PORTAL = f"no screen-cast portal on this desktop's D-Bus: screen capture through it needs {_NEEDS}"


@dataclass(frozen=True, slots=True)
class SharedStream:
    """One PipeWire stream the user shared: its node, and a connection (``fd``, ours to close)
    that may read it."""

    node_id: int
    fd: int
    source_type: int  # MONITOR or WINDOW
    size: tuple[int, int] | None  # as the portal reports it (logical pixels), if it does


def wayland_session() -> bool:
    """Whether this process runs in a Wayland desktop session (where X11 capture sees nothing)."""
    return bool(os.environ.get("WAYLAND_DISPLAY")) or os.environ.get("XDG_SESSION_TYPE") == "wayland"


class ScreenCastPortal:
    """Asks the desktop to share a screen or window (:meth:`start`) and ends the share (:meth:`close`).

    The first :meth:`start` shows the desktop's dialog; later ones (a reconnect) pass the restore
    token the portal gave, so the same screen comes back without asking while we run. The portal
    keeps that token for the D-Bus connection it gave it to (xdg-desktop-portal keys transient
    tokens by sender), so the connection lasts as long as this object, not just one share. A share
    the user ended from the desktop (:meth:`ended_by_user`) is not restarted."""

    def __init__(self, cursor: bool = False, choice_timeout_s: float = CHOICE_TIMEOUT_S) -> None:
        self.cursor = cursor
        self.choice_timeout_s = choice_timeout_s
        self._conn = None
        self._session: str | None = None
        self._closed_signals: deque = deque(maxlen=1)
        self._closed_filter = None
        self._restore_token: str | None = None
        self._disconnect: weakref.finalize | None = None

    def _connect(self):
        from jeepney.io.blocking import open_dbus_connection  # Linux only: imported where it is used

        if self._conn is None:
            try:
                self._conn = open_dbus_connection(bus="SESSION", enable_fds=True)
            except KeyError as e:
                raise SourceError("screen capture through the desktop portal needs this desktop session's D-Bus, "
                                  "and DBUS_SESSION_BUS_ADDRESS is not set (run stream-guard inside the session)"
                                  ) from e
            except (OSError, TimeoutError, ValueError) as e:
                raise SourceError(f"cannot reach this desktop session's D-Bus ({e or type(e).__name__}): screen "
                                  f"capture through the desktop portal needs {_NEEDS}") from e
            self._disconnect = weakref.finalize(self, self._conn.close)
        return self._conn

    def _call(self, method: str, signature: str, *args: object) -> tuple:
        from jeepney import DBusAddress, new_method_call
        from jeepney.wrappers import DBusErrorResponse, unwrap_msg

        address = DBusAddress(PORTAL_PATH, bus_name=PORTAL_BUS, interface=SCREENCAST)
        try:
            return unwrap_msg(self._connect().send_and_get_reply(
                new_method_call(address, method, signature, args), timeout=CALL_TIMEOUT_S))
        except DBusErrorResponse as e:
            if e.name in ("org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.UnknownMethod",
                          "org.freedesktop.DBus.Error.UnknownInterface", "org.freedesktop.DBus.Error.UnknownObject"):
                raise SourceError(_NO_PORTAL) from e
            raise SourceError(f"the screen-cast portal refused {method}: {e.name}: {' '.join(map(str, e.data))}") from e
        except (TimeoutError, OSError) as e:
            raise SourceError(f"the screen-cast portal did not answer {method} ({e or type(e).__name__})") from e

    def _property(self, name: str) -> object:
        from jeepney import DBusAddress, Properties
        from jeepney.wrappers import DBusErrorResponse, unwrap_msg

        address = DBusAddress(PORTAL_PATH, bus_name=PORTAL_BUS, interface=SCREENCAST)
        try:
            return unwrap_msg(self._connect().send_and_get_reply(Properties(address).get(name),
                                                                 timeout=CALL_TIMEOUT_S))[0][1]
        except DBusErrorResponse:
            return None  # an older portal without this property
        except (TimeoutError, OSError) as e:
            raise SourceError(f"the screen-cast portal did not answer ({e or type(e).__name__})") from e

    def version(self) -> int:
        """The portal's ScreenCast interface version (raises :class:`SourceError` without a portal)."""
        version = self._property("version")
        if version is None:
            raise SourceError(_NO_PORTAL)
        return int(version)

    def _request(self, method: str, signature: str, *args: object, options: dict,
                 timeout_s: float = CALL_TIMEOUT_S) -> dict:
        """Call a portal method that answers with a Response signal; its results, or an error."""
        from jeepney import MatchRule, message_bus
        from jeepney.io.blocking import Proxy

        conn = self._connect()
        token = "stream_guard_" + secrets.token_hex(6)
        sender = conn.unique_name.lstrip(":").replace(".", "_")
        rule = MatchRule(type="signal", interface="org.freedesktop.portal.Request", member="Response",
                         path=f"{PORTAL_PATH}/request/{sender}/{token}")
        Proxy(message_bus, conn).AddMatch(rule)  # before the call: the answer may come at once
        with conn.filter(rule) as responses:
            self._call(method, signature, *args, {**options, "handle_token": ("s", token)})
            try:
                code, results = conn.recv_until_filtered(responses, timeout=timeout_s).body
            except TimeoutError as e:
                raise SourceError(f"no answer from the screen-cast portal to {method} within {timeout_s:.0f} s"
                                  + (" (nothing was chosen in the share dialog)" if method == "Start" else "")
                                  ) from e
        if code == _RESPONSE_CANCELLED:
            raise SourceEnded("screen sharing was cancelled in the desktop's share dialog")
        if code != 0:
            raise SourceError(f"the screen-cast portal failed at {method} (response {code}): its backend's "
                              "log (journalctl --user -u xdg-desktop-portal*) says why")
        return results

    def start(self) -> SharedStream:
        """Share a screen or window (the desktop asks the user, unless a share is being restored)."""
        from jeepney import MatchRule, message_bus
        from jeepney.io.blocking import Proxy

        self.close_session()
        version = self._property("version") or 1
        available = int(self._property("AvailableSourceTypes") or MONITOR)
        cursors = int(self._property("AvailableCursorModes") or CURSOR_HIDDEN)
        results = self._request("CreateSession", "a{sv}",
                                options={"session_handle_token": ("s", "stream_guard_" + secrets.token_hex(6))})
        self._session = str(results["session_handle"][1])
        self._closed_signals.clear()
        closed = MatchRule(type="signal", interface="org.freedesktop.portal.Session", member="Closed",
                           path=self._session)
        Proxy(message_bus, self._conn).AddMatch(closed)
        self._closed_filter = self._conn.filter(closed, queue=self._closed_signals)
        cursor = CURSOR_EMBEDDED if self.cursor and cursors & CURSOR_EMBEDDED else CURSOR_HIDDEN
        options = {"types": ("u", available & (MONITOR | WINDOW) or MONITOR), "multiple": ("b", False)}
        if cursors & cursor:
            options["cursor_mode"] = ("u", cursor)
        if int(version) >= 4:
            options["persist_mode"] = ("u", PERSIST_WHILE_RUNNING)
            if self._restore_token:
                options["restore_token"] = ("s", self._restore_token)
        self._request("SelectSources", "oa{sv}", self._session, options=options)
        results = self._request("Start", "osa{sv}", self._session, "", options={}, timeout_s=self.choice_timeout_s)
        if "restore_token" in results:
            self._restore_token = str(results["restore_token"][1])
        streams = results.get("streams", ("a(ua{sv})", []))[1]
        if not streams:
            raise SourceError("the screen-cast portal started a share with no stream in it")
        node_id, properties = streams[0]
        size = properties.get("size", (None, None))[1]
        source_type = properties.get("source_type", ("u", MONITOR))[1]
        fd = self.open_remote()
        log.info("screen cast: sharing %s %s as PipeWire node %d", "a window" if source_type == WINDOW else "a screen",
                 f"{size[0]}x{size[1]}" if size else "", node_id)
        return SharedStream(int(node_id), fd, int(source_type), tuple(size) if size else None)

    def open_remote(self) -> int:
        """A new PipeWire connection (a file descriptor, the caller's to close) that may read the
        current share: each reader of the stream needs its own."""
        if self._session is None:
            raise SourceError("no screen share to read: start() one first")
        (remote,) = self._call("OpenPipeWireRemote", "oa{sv}", self._session, {})
        return remote.to_raw_fd()

    @property
    def restorable(self) -> bool:
        """Whether the next :meth:`start` restores the share without asking (portal version 4 and later)."""
        return self._restore_token is not None

    def ended_by_user(self, wait_s: float = 0.3) -> bool:
        """Whether the desktop closed the share (the user pressed its stop button), as far as the
        signals that arrive within ``wait_s`` say."""
        if self._conn is None or self._session is None:
            return False
        deadline = time.monotonic() + wait_s
        try:
            while not self._closed_signals:
                self._conn.recv_messages(timeout=max(0.0, deadline - time.monotonic()))
        except (TimeoutError, OSError):
            pass
        return bool(self._closed_signals)

    def close_session(self) -> None:
        """End the current share, if any (the desktop's sharing indicator goes away)."""
        session, self._session = self._session, None
        if self._closed_filter is not None:
            self._closed_filter.close()
            self._closed_filter = None
        if session is None or self._conn is None:
            return
        from jeepney import DBusAddress, new_method_call

        try:
            self._conn.send(new_method_call(DBusAddress(session, bus_name=PORTAL_BUS,
                                                        interface="org.freedesktop.portal.Session"), "Close"))
        except OSError:
            pass

    def close(self) -> None:
        """End the share. The D-Bus connection stays, so that a later :meth:`start` can restore the
        share without asking; it closes with this object, or at :meth:`disconnect`."""
        self.close_session()

    def disconnect(self) -> None:
        """End the share and the D-Bus connection (a restore token is then worthless)."""
        self.close_session()
        self._conn, disconnect, self._disconnect = None, self._disconnect, None
        self._restore_token = None
        if disconnect is not None:
            disconnect()
