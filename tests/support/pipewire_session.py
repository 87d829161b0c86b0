"""A private desktop session's plumbing for screen-cast tests: a D-Bus session bus, PipeWire and
WirePlumber (real daemons, started here), a PipeWire video stream showing a picture (GStreamer's
pipewiresink, the way a compositor offers a shared screen), and :class:`StandInPortal`.

The stand-in portal is the one part that is not the real thing: a screen-cast portal backend needs
a compositor that can hand PipeWire DMA-BUF frames (xdg-desktop-portal-wlr 0.7 refuses to start a
cast without them, and this machine has no GPU). It speaks the portal's documented D-Bus protocol
(request objects, Response signals, a PipeWire connection passed as a file descriptor) on the real
bus, and lets a test play the user: share, cancel, or stop sharing.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from jeepney import DBusAddress, HeaderFields, MessageType, new_error, new_method_return, new_signal
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import Proxy, open_dbus_connection

PROGRAMS = ("dbus-daemon", "pipewire", "wireplumber", "gst-launch-1.0", "pw-dump")
PORTAL_PATH = "/org/freedesktop/portal/desktop"


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None]


def _wait_for(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Session:
    """The running session: ``env`` reaches its bus and PipeWire."""

    runtime_dir: Path
    env: dict[str, str]
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def bus_address(self) -> str:
        return self.env["DBUS_SESSION_BUS_ADDRESS"]

    @property
    def pipewire_socket(self) -> Path:
        return self.runtime_dir / "pipewire-0"

    def node_id(self, name: str) -> int | None:
        dump = subprocess.run(["pw-dump"], env=self.env, capture_output=True, text=True, timeout=10).stdout
        for item in json.loads(dump or "[]"):
            props = (item.get("info") or {}).get("props") or {}
            if item.get("type", "").endswith(":Node") and props.get("node.name") == name:
                return int(item["id"])
        return None


def _bus_config(folder: Path, socket_path: Path) -> Path:
    """A session bus without service activation: no portal installed on this machine may start
    itself on it and answer in the stand-in's place."""
    config = folder / "session-bus.conf"
    config.write_text(f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket_path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
""")
    return config


@contextlib.contextmanager
def pipewire_session(folder: Path) -> Iterator[Session]:
    """Start a D-Bus session bus, PipeWire and WirePlumber in ``folder``; stop them after."""
    runtime = folder / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus",
           "HOME": str(folder), "PIPEWIRE_DEBUG": "1"}
    session = Session(runtime, env)
    try:
        for argv, ready in (
            (["dbus-daemon", f"--config-file={_bus_config(folder, runtime / 'bus')}", "--nofork", "--nopidfile"],
             lambda: (runtime / "bus").exists()),
            (["pipewire"], lambda: session.pipewire_socket.exists()),
            (["wireplumber"], lambda: True),
        ):
            log = (folder / f"{argv[0]}.log").open("wb")
            session.processes.append(subprocess.Popen(argv, env=env, stdout=log, stderr=log,
                                                      stdin=subprocess.DEVNULL))
            _wait_for(ready, 10, argv[0])
        yield session
    finally:
        for proc in reversed(session.processes):
            proc.terminate()
        for proc in session.processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def shared_picture(session: Session, picture: np.ndarray, size: tuple[int, int], at: tuple[int, int],
                   name: str = "stream-guard-test-screen", fps: int = 15) -> Iterator[int]:
    """A PipeWire video source node of ``size`` (grey 90) showing ``picture`` (RGB) with its top
    left corner at ``at``, over and over; yields its node id. (videotestsrc drives it: PipeWire
    never linked the stream when a decoded or frozen still image did.)"""
    path = session.runtime_dir / f"{name}.png"
    cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    argv = ["gst-launch-1.0", "-q", "videotestsrc", "pattern=solid-color", "foreground-color=0xff5a5a5a", "!",
            f"video/x-raw,format=BGRx,width={size[0]},height={size[1]},framerate={fps}/1", "!",
            "gdkpixbufoverlay", f"location={path}", f"offset-x={at[0]}", f"offset-y={at[1]}", "!",
            "videoconvert", "!", "video/x-raw,format=BGRx", "!",
            "pipewiresink", "mode=provide", f"stream-properties=props,media.class=Video/Source,node.name={name}"]
    proc = subprocess.Popen(argv, env=session.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        node: list[int | None] = [None]
        _wait_for(lambda: (node.__setitem__(0, session.node_id(name)), node[0])[1] is not None, 15,
                  f"PipeWire node {name}")
        yield int(node[0])
    finally:
        proc.terminate()
        proc.wait(timeout=5)


class StandInPortal(threading.Thread):
    """``org.freedesktop.portal.ScreenCast`` on the session bus, answering as a desktop whose
    user shares ``node`` (``answer="share"``) or cancels the dialog (``"cancel"``). Records the
    options of each ``SelectSources``, the sessions closed and how often the user was asked
    (``dialogs``); :meth:`stop_sharing` does what the desktop's stop button does.

    Restore tokens work as xdg-desktop-portal's transient ones do (``persist_mode`` 1): kept per
    D-Bus *sender*, so only the connection that was given one can restore the share without a
    dialog; a new connection is asked again."""

    def __init__(self, session: Session, node: int, size: tuple[int, int], answer: str = "share") -> None:
        super().__init__(name="stand-in-portal", daemon=True)
        self.session, self.node, self.size, self.answer = session, node, size, answer
        self.select_options: list[dict] = []
        self.closed_sessions: list[str] = []
        self.starts = 0
        self.dialogs = 0
        self._tokens: dict[str, str] = {}  # restore token -> the sender it was given to
        self._restoring: set[str] = set()  # sessions whose SelectSources brought a valid token
        self._open_sessions: list[str] = []
        self._halt = threading.Event()
        self._conn = open_dbus_connection(session.bus_address, enable_fds=True)
        reply = Proxy(message_bus, self._conn).RequestName("org.freedesktop.portal.Desktop", 4)
        assert reply == (1,), reply  # primary owner
        self._lock = threading.Lock()

    def __enter__(self) -> "StandInPortal":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self.join(timeout=5)
        self._conn.close()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                msg = self._conn.receive(timeout=0.1)
            except TimeoutError:
                continue
            except OSError:
                return
            if msg.header.message_type == MessageType.method_call:
                with self._lock:
                    self._handle(msg)

    def _respond(self, request: str, code: int, results: dict) -> None:
        self._conn.send(new_signal(DBusAddress(request, interface="org.freedesktop.portal.Request"),
                                   "Response", "ua{sv}", (code, results)))

    def _handle(self, msg) -> None:  # noqa: ANN001
        fields = msg.header.fields
        member, path = fields[HeaderFields.member], fields[HeaderFields.path]
        sender = fields[HeaderFields.sender].lstrip(":").replace(".", "_")
        if member == "Get":
            values = {"version": ("u", 4), "AvailableSourceTypes": ("u", 3), "AvailableCursorModes": ("u", 3)}
            self._conn.send(new_method_return(msg, "v", (values[msg.body[1]],)))
            return
        if member == "Close":  # org.freedesktop.portal.Session
            self.closed_sessions.append(path)
            self._conn.send(new_method_return(msg))
            return
        if member == "OpenPipeWireRemote":
            remote = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            remote.connect(str(self.session.pipewire_socket))
            self._conn.send(new_method_return(msg, "h", (remote,)))
            remote.close()
            return
        if member not in ("CreateSession", "SelectSources", "Start"):
            self._conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))
            return
        options = msg.body[-1]
        request = f"{PORTAL_PATH}/request/{sender}/{options['handle_token'][1]}"
        self._conn.send(new_method_return(msg, "o", (request,)))
        if member == "CreateSession":
            handle = f"{PORTAL_PATH}/session/{sender}/{options['session_handle_token'][1]}"
            self._open_sessions.append(handle)
            self._respond(request, 0, {"session_handle": ("s", handle)})
        elif member == "SelectSources":
            self.select_options.append({key: value[1] for key, value in options.items() if key != "handle_token"})
            token = options.get("restore_token", ("s", ""))[1]
            if self._tokens.get(token) == sender:
                self._restoring.add(msg.body[0])
            self._respond(request, 0, {})
        elif member == "Start":
            self.starts += 1
            if msg.body[0] not in self._restoring:
                self.dialogs += 1  # the desktop shows its share dialog
            if self.answer == "cancel":
                self._respond(request, 1, {})
                return
            stream = (self.node, {"size": ("(ii)", self.size), "source_type": ("u", 1)})
            self._tokens[f"restore-{self.starts}"] = sender
            self._respond(request, 0, {"streams": ("a(ua{sv})", [stream]),
                                       "restore_token": ("s", f"restore-{self.starts}")})

    def stop_sharing(self) -> None:
        """The user pressed the desktop's "stop sharing": the session is closed."""
        with self._lock:
            for handle in self._open_sessions:
                self._conn.send(new_signal(DBusAddress(handle, interface="org.freedesktop.portal.Session"),
                                           "Closed", "a{sv}", ({},)))
