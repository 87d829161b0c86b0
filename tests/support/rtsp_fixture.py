"""Run :mod:`tests.support.rtsp_server` as a subprocess for tests.

``RtspServerProcess`` starts the server on a free 127.0.0.1 port, waits for its
``listening on rtsp://...`` line, and can be stopped (SIGTERM), killed (SIGKILL) and
started again on the same port, for reconnect tests. The server exits on its own when
the test process dies: it watches its stdin, a pipe only this process holds.
"""
from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Deque, List, Optional, Sequence, Type, Union
from urllib.parse import quote

SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
READY_RE = re.compile(r"listening on rtsp://(?P<host>[^:/]+):(?P<port>\d+)(?P<path>/\S*)")


class RtspServerError(RuntimeError):
    """The server did not start (its last output lines are in the message)."""


class RtspServerProcess:
    """A test RTSP server in a subprocess.

    ``auth`` is ``"user:pass"``; ``refuse`` is an RTSP status code (e.g. ``503``) to
    answer every request with, or ``"close"`` to drop connections at once; ``live``
    makes clients join one shared timeline (mid-GOP) instead of starting at frame 0;
    ``session_timeout`` (s, default 60) is announced to clients, and UDP sessions with
    no request for that long are dropped.
    """

    def __init__(
        self,
        clip: Union[str, Path],
        *,
        path: str = "/live",
        auth: Optional[str] = None,
        auth_scheme: str = "any",
        refuse: Union[int, str, None] = None,
        live: bool = False,
        session_timeout: Optional[int] = None,
        port: int = 0,
        startup_timeout: float = 20.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.clip = Path(clip).resolve()
        self.path = path if path.startswith("/") else "/" + path
        self.auth = auth
        self.auth_scheme = auth_scheme
        self.refuse = refuse
        self.live = live
        self.session_timeout = session_timeout
        self.port = port
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.output: Deque[str] = collections.deque(maxlen=200)
        self._proc: Optional[subprocess.Popen[str]] = None
        self._reader: Optional[threading.Thread] = None
        self._ready = threading.Event()

    # ----------------------------------------------------------------- URLs

    @property
    def url(self) -> str:
        """``rtsp://127.0.0.1:PORT/PATH`` (no credentials)."""
        if not self.port:
            raise RuntimeError("server not started yet: no port")
        return f"rtsp://127.0.0.1:{self.port}{self.path}"

    def url_with_credentials(self, user: Optional[str] = None, password: Optional[str] = None) -> str:
        """The URL with ``user:password@`` (default: the server's own ``auth``)."""
        default_user, _, default_password = (self.auth or ":").partition(":")
        user = default_user if user is None else user
        password = default_password if password is None else password
        return self.url.replace("rtsp://", f"rtsp://{quote(user, safe='')}:{quote(password, safe='')}@", 1)

    # ----------------------------------------------------------------- life cycle

    @property
    def running(self) -> bool:
        """Whether the subprocess is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> List[str]:
        """The server command line."""
        cmd = [sys.executable, "-u", str(SERVER_SCRIPT), "--file", str(self.clip), "--host", "127.0.0.1",
               "--port", str(self.port), "--path", self.path, "--exit-on-stdin-eof"]
        if self.auth:
            cmd += ["--auth", self.auth, "--auth-scheme", self.auth_scheme]
        if self.refuse is not None:
            cmd += ["--refuse", str(self.refuse)]
        if self.live:
            cmd.append("--live")
        if self.session_timeout is not None:
            cmd += ["--session-timeout", str(self.session_timeout)]
        return cmd + self.extra_args

    def start(self) -> "RtspServerProcess":
        """Start the server (again on the same port after the first start) and wait
        for its ready line; raise :class:`RtspServerError` if it does not come."""
        if self.running:
            raise RuntimeError("server already running")
        self._ready.clear()
        self._proc = subprocess.Popen(
            self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = threading.Thread(target=self._read_output, args=(self._proc,), daemon=True)
        self._reader.start()
        if not self._ready.wait(self.startup_timeout) or not self.running:
            tail = "\n".join(list(self.output)[-20:])
            self._terminate(signal.SIGKILL)
            raise RtspServerError(f"RTSP server did not become ready:\n{tail}")
        return self

    def stop(self, timeout: float = 10.0) -> Optional[int]:
        """SIGTERM and wait (SIGKILL if it does not exit in ``timeout``); return its exit code."""
        return self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> Optional[int]:
        """SIGKILL at once: an abrupt server death, as for a crashed camera."""
        return self._terminate(signal.SIGKILL)

    def __enter__(self) -> "RtspServerProcess":
        return self.start()

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    # ----------------------------------------------------------------- internals

    def _terminate(self, signum: int, timeout: float = 10.0) -> Optional[int]:
        """Send ``signum``, wait, escalate to SIGKILL, close pipes, join the reader."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signum)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        if self._reader is not None:
            self._reader.join()
            self._reader = None
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def _read_output(self, proc: "subprocess.Popen[str]") -> None:
        """Keep the server's output (so its pipe never fills); flag the ready line,
        or EOF (the server died) so that :meth:`start` stops waiting either way."""
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            self.output.append(line)
            match = READY_RE.search(line)
            if match and not self._ready.is_set():
                self.port = int(match.group("port"))
                self._ready.set()
        self._ready.set()


def restart_on(server: RtspServerProcess, trigger: threading.Event, timeout: float = 30.0) -> threading.Event:
    """An outage off the caller's thread: once ``trigger`` is set (or after ``timeout``), kill
    ``server`` and start it again on the same port. The returned event is set once it is back."""
    restarted = threading.Event()

    def restart() -> None:
        trigger.wait(timeout)
        server.kill()
        server.start()
        restarted.set()

    threading.Thread(target=restart, name="rtsp-outage", daemon=True).start()
    return restarted
