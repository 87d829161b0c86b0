"""Running under systemd: the notify protocol (``sd_notify(3)``) and a watchdog fed by real progress.

Written here rather than taken from a package: the protocol is one datagram to a Unix socket, and the
PyPI clients are either unmaintained or build against libsystemd's headers.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Callable, Mapping

from stream_guard.sources.spec import redact_text
from stream_guard.types import FrameResult, Verdict

log = logging.getLogger(__name__)

STATUS_EVERY_S = 5.0  # how often the STATUS line (``systemctl status``) is refreshed while frames flow
PINGS_PER_TIMEOUT = 4  # WATCHDOG=1 at most this many times per watchdog timeout


def _socket_address(name: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as ``socket.connect`` takes it: a leading ``@`` means the abstract namespace."""
    return b"\0" + name[1:].encode() if name.startswith("@") else name


class SystemdNotifier:
    """Sends ``sd_notify(3)`` messages (``READY=1``, ``STATUS=...``...) to the socket systemd names.

    A message that cannot be sent is logged once and dropped: being supervised must never stop a run.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._warned = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> SystemdNotifier | None:
        """The notifier systemd asked for (``Type=notify``), or None when not started by systemd."""
        address = environ.get("NOTIFY_SOCKET", "")
        return cls(address) if address.startswith(("/", "@")) else None

    def send(self, **fields: Any) -> bool:
        """Send ``KEY=value`` lines in one datagram (``send(READY=1, STATUS="...")``)."""
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            self._sock.sendto(message, _socket_address(self.address))
            return True
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s: %s", self.address, e)
            return False

    def close(self) -> None:
        self._sock.close()


def watchdog_timeout_s(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> float | None:
    """The watchdog timeout systemd set for this process (``WatchdogSec=``), or None when there is none."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None  # the variables were meant for a parent process
    return int(usec) / 1e6


class ServiceHeartbeat:
    """What a run tells its service manager: ready once running, a one-line status, and watchdog pings.

    Every call comes from the analysis thread and only when something arrived from upstream (a frame,
    or a reconnect attempt of a dropped source). So the pings stop, and systemd restarts the service,
    when the run stops making progress: a reader stuck in the network stack, a hung detector, or an
    output that blocks the analysis. A camera that is down is not a hang: its reconnect attempts keep
    the pings going.
    """

    def __init__(self, notifier: SystemdNotifier, watchdog_s: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.notifier = notifier
        self.watchdog_s = watchdog_s
        self._clock = clock
        self._ping_every = None if watchdog_s is None else watchdog_s / PINGS_PER_TIMEOUT
        self._last_ping = -float("inf")
        self._last_status = -float("inf")
        self._source = ""
        self._blank_since: float | None = None  # wall time the live picture went blank, while it is

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> ServiceHeartbeat | None:
        notifier = SystemdNotifier.from_environment(environ)
        return None if notifier is None else cls(notifier, watchdog_timeout_s(environ))

    def ready(self, source: str) -> None:
        """The source is open, the model loaded and the outputs started."""
        self._source = source
        self._last_ping = self._last_status = self._clock()
        self.notifier.send(READY=1, STATUS=f"{source}: started")

    def frame(self, result: FrameResult) -> None:
        """A frame was analysed."""
        now = self._clock()
        if now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            text = f"{result.fps:.1f} fps, {_faces_text(result)}, {result.frames_dropped} frames dropped"
            if self._blank_since is not None:  # frames still flow, but the periodic line must not hide it
                text += f", picture blank since {_clock_text(self._blank_since)}"
            self.notifier.send(STATUS=f"{self._source}: {text}")
        self._progress(now)

    def source_event(self, record: dict[str, Any]) -> None:
        """The source dropped, is being reopened, or is back (the pipeline's ``source`` record)."""
        now = self._clock()
        state = record.get("state")
        if state == "blank":
            self._blank_since = record.get("wall_time", time.time())
        elif state in ("connected", "reconnecting", "failed"):
            self._blank_since = None  # a reopened source starts its blank watch anew
        if state == "reconnecting":
            text = f"reconnecting (attempt {record.get('attempt')}): {record.get('detail') or ''}".rstrip(": ")
        elif state == "failed":
            text = f"failed: {record.get('detail') or ''}".rstrip(": ")
        elif state == "blank":
            text = f"picture blank: {record.get('detail') or ''}".rstrip(": ")
        else:
            text = str(state)
        self._last_status = now
        self.notifier.send(STATUS=redact_text(f"{self._source}: {text}"))
        self._progress(now)

    def stopping(self) -> None:
        """The run is ending: outputs are being finalised."""
        self.notifier.send(STOPPING=1, STATUS=f"{self._source}: stopping, finalising outputs")

    def close(self) -> None:
        self.notifier.close()

    def _progress(self, now: float) -> None:
        if self._ping_every is not None and now - self._last_ping >= self._ping_every:
            self._last_ping = now
            self.notifier.send(WATCHDOG=1)


def _clock_text(wall_time: float) -> str:
    """``wall_time`` as the local time of day, with the date when it is not today."""
    moment = time.localtime(wall_time)
    same_day = time.localtime()[:3] == moment[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", moment)


def _faces_text(result: FrameResult) -> str:
    judged = [f for f in result.faces if f.not_judged is None]
    fake = sum(1 for f in judged if f.verdict is Verdict.FAKE)
    text = f"{len(result.faces)} face" + ("" if len(result.faces) == 1 else "s")
    return f"{text} ({fake} fake)" if fake else text
