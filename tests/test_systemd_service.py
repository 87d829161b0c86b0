"""Running under systemd: the notify protocol spoken to a real socket, a watchdog that pings only on
progress (through a camera outage, not through a blocked output), and a unit file systemd accepts."""
from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from stream_guard.config import ModelOptions, RunConfig, SourceOptions
from stream_guard.pipeline import Pipeline
from stream_guard.service import ServiceHeartbeat, SystemdNotifier, watchdog_timeout_s
from stream_guard.systemd_unit import unit_text, unreadable_by_others, write_unit
from stream_guard.types import Frame, FrameResult, StreamInfo
from tests.conftest import REPO, run_cli
from tests.support.faces import two_faces_passing
from tests.support.rtsp_fixture import RtspServerProcess
from tests.support.synth_video import make_test_clip

WAIT_S = 60.0  # only a broken run gets near it


class NotifyListener:
    """The service manager's end of ``$NOTIFY_SOCKET``: records every message with its arrival time."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify.sock"  # short: a Unix socket path has at most 107 bytes
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)
        self.cond = threading.Condition()
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self.cond:
                self.messages.append((time.monotonic(), fields))
                self.cond.notify_all()

    def wait_for(self, predicate: Callable[[list[tuple[float, dict[str, str]]]], bool], what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.messages), WAIT_S), f"timed out waiting for {what}"

    def times(self, key: str, since: float = 0.0) -> list[float]:
        with self.cond:
            return [t for t, m in self.messages if key in m and t >= since]

    def statuses(self) -> list[str]:
        with self.cond:
            return [m["STATUS"] for _, m in self.messages if "STATUS" in m]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    folder = Path(tempfile.mkdtemp(prefix="sg-notify-", dir="/tmp"))
    notify = NotifyListener(folder)
    yield notify
    notify.close()
    shutil.rmtree(folder, ignore_errors=True)


def _count(key: str, n: int, since: float = 0.0) -> Callable[[list], bool]:
    return lambda messages: sum(1 for t, m in messages if key in m and t >= since) >= n


def _max_gap(times: list[float]) -> float:
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def test_watch_under_notify_socket_reports_ready_status_pings_and_stopping(listener: NotifyListener,
                                                                         placeholder_model: Path,
                                                                         tmp_path: Path) -> None:
    """What systemd sees of a real ``stream-guard watch`` run started with ``Type=notify`` and
    ``WatchdogSec=4``: READY once running, a status line, a ping at least every second while
    frames flow, and STOPPING then exit 130 (the unit's success status) on SIGTERM."""
    clip = make_test_clip(tmp_path / "long.mp4", seconds=12.0, width=640, height=360, fps=30,
                          draw=two_faces_passing(n_frames=360))
    env = {**os.environ, "NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "4000000"}
    proc = subprocess.Popen([sys.executable, "-m", "stream_guard", "watch", str(clip), "--realtime",
                             "--model", str(placeholder_model)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        listener.wait_for(_count("READY", 1), "READY=1")
        ready = listener.times("READY")[0]
        listener.wait_for(_count("WATCHDOG", 4, since=ready), "four watchdog pings")
        listener.wait_for(lambda ms: any("fps" in m.get("STATUS", "") for _, m in ms), "a status line with fps")
        assert proc.poll() is None, proc.communicate()[1]
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    pings = listener.times("WATCHDOG")
    assert min(pings) > ready
    assert _max_gap([ready, *pings]) < 4.0, pings  # never as long as the timeout: systemd would have killed it
    stopping = listener.times("STOPPING")
    assert len(stopping) == 1 and stopping[0] >= signalled
    status = listener.statuses()
    assert status[0] == f"{clip}: started"
    assert any(s.startswith(f"{clip}: ") and " fps, " in s and "frames dropped" in s for s in status), status
    assert status[-1].endswith("stopping, finalising outputs")


def test_a_camera_that_is_down_keeps_the_watchdog_fed(listener: NotifyListener, two_faces_clip: Path,
                                                      placeholder_model: Path) -> None:
    """A dropped RTSP camera is being reconnected, not hung: the reconnect attempts keep the pings
    going (at most 1 s apart with a 4 s watchdog) and the status line says what is happening."""
    heartbeat = ServiceHeartbeat(SystemdNotifier(str(listener.path)), watchdog_s=4.0)
    with RtspServerProcess(two_faces_clip) as server:
        config = RunConfig(source=SourceOptions(server.url), model=ModelOptions(model_dir=placeholder_model))
        pipeline = Pipeline(config, service=heartbeat)
        runner = threading.Thread(target=pipeline.run, name="pipeline")
        runner.start()
        try:
            listener.wait_for(_count("READY", 1), "READY=1")
            listener.wait_for(lambda ms: any("fps" in m.get("STATUS", "") for _, m in ms), "frames")
            server.kill()
            listener.wait_for(lambda ms: any("reconnecting (attempt 2)" in m.get("STATUS", "") for _, m in ms),
                              "a second reconnect attempt")
            down = listener.times("STATUS")[-1]
            time.sleep(5.0)  # longer than the watchdog timeout
            pings = listener.times("WATCHDOG", since=down)
        finally:
            pipeline.stop()
            runner.join(30)
    heartbeat.close()
    assert not runner.is_alive()
    assert len(pings) >= 3, pings
    assert _max_gap([down, *pings, time.monotonic()]) < 4.0
    down_status = [s for s in listener.statuses() if "reconnecting" in s]
    assert down_status and all(s.startswith(f"{server.url}: reconnecting (attempt ") for s in down_status)


class BlockingSink:
    """A lossless output that hangs after a few frames (a recording on a dead network share)."""

    name = "hangs"
    lossless = True

    def __init__(self, after: int) -> None:
        self.after = after
        self.frames = 0
        self.blocked = threading.Event()
        self.release = threading.Event()

    def open(self, info: StreamInfo) -> None:
        pass

    def write(self, result: FrameResult) -> None:
        self.frames += 1
        if self.frames == self.after:
            self.blocked.set()
            self.release.wait(WAIT_S)

    def close(self) -> None:
        pass


def test_a_blocked_output_starves_the_watchdog(listener: NotifyListener, two_faces_clip: Path,
                                               placeholder_model: Path) -> None:
    """When an output blocks, the analysis thread waits on it, so the pings stop and systemd would
    restart the service; once the output moves again, so do the pings, and nothing was lost."""
    heartbeat = ServiceHeartbeat(SystemdNotifier(str(listener.path)), watchdog_s=1.0)
    sink = BlockingSink(after=5)
    config = RunConfig(source=SourceOptions(str(two_faces_clip)), model=ModelOptions(model_dir=placeholder_model))
    pipeline = Pipeline(config, extra_sinks=[sink], service=heartbeat)
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("summary", pipeline.run()), name="pipeline")
    runner.start()
    try:
        assert sink.blocked.wait(WAIT_S)
        time.sleep(1.0)  # the sink's queue fills and the analysis thread waits on it
        hung = time.monotonic()
        time.sleep(2.0)  # twice the watchdog timeout
        silent = listener.times("WATCHDOG", since=hung)
    finally:
        sink.release.set()
        runner.join(60)
    heartbeat.close()
    assert silent == [], f"pinged while the output was blocked: {silent}"
    assert listener.times("WATCHDOG", since=hung + 2.0), "no pings once the output moved again"
    assert outcome["summary"].frames_processed == sink.frames == 90


class RecordingNotifier(SystemdNotifier):
    """Keeps what would be sent to systemd in ``sent``."""

    def __init__(self, sent: list[dict]) -> None:
        super().__init__("/nowhere")
        self.sent = sent

    def send(self, **fields: object) -> bool:
        self.sent.append(fields)
        return True


def test_heartbeat_pings_at_most_four_times_a_timeout_and_only_on_progress() -> None:
    sent: list[dict] = []
    now = [100.0]
    beat = ServiceHeartbeat(RecordingNotifier(sent), watchdog_s=2.0, clock=lambda: now[0])
    beat.ready("rtsp://***@cam/stream")
    record = {"state": "reconnecting", "attempt": 3, "detail": "cannot connect (Connection refused)"}
    for _ in range(20):  # 20 events in 0.4 s: one ping at most
        now[0] += 0.02
        beat.source_event(record)
    now[0] += 10.0  # nothing arrives: no ping, however long
    pings = [m for m in sent if "WATCHDOG" in m]
    assert len(pings) == 0
    beat.source_event(record)
    assert [m for m in sent if "WATCHDOG" in m] == [{"WATCHDOG": 1}]
    assert sent[0] == {"READY": 1, "STATUS": "rtsp://***@cam/stream: started"}
    assert sent[1]["STATUS"] == "rtsp://***@cam/stream: reconnecting (attempt 3): cannot connect (Connection refused)"


def test_status_line_keeps_saying_the_picture_is_blank_until_it_is_back() -> None:
    sent: list[dict] = []
    now = [100.0]
    beat = ServiceHeartbeat(RecordingNotifier(sent), watchdog_s=None, clock=lambda: now[0])
    beat.ready("door")
    frame = Frame(pixels=np.zeros((8, 8, 3), np.uint8), index=0, pts_s=0.0, wallclock_s=0.0, source_id="door")
    result = FrameResult(frame=frame, annotated=frame.image, faces=(), detected=False, latency_ms=1.0, fps=25.0)
    went_blank = time.time()
    beat.source_event({"state": "blank", "wall_time": went_blank, "detail": "one flat colour for 5 s"})
    since = time.strftime("%H:%M:%S", time.localtime(went_blank))
    assert sent[-1]["STATUS"] == "door: picture blank: one flat colour for 5 s"
    for _ in range(3):  # frames keep coming; every periodic line still says so
        now[0] += 6.0
        beat.frame(result)
        assert sent[-1]["STATUS"] == f"door: 25.0 fps, 0 faces, 0 frames dropped, picture blank since {since}"
    beat.source_event({"state": "connected", "detail": "the picture is back", "wall_time": time.time()})
    now[0] += 6.0
    beat.frame(result)
    assert sent[-1]["STATUS"] == "door: 25.0 fps, 0 faces, 0 frames dropped"


def test_notifier_environment() -> None:
    assert SystemdNotifier.from_environment({}) is None
    assert SystemdNotifier.from_environment({"NOTIFY_SOCKET": "relative"}) is None
    assert SystemdNotifier.from_environment({"NOTIFY_SOCKET": "@abstract"}) is not None
    assert watchdog_timeout_s({}) is None
    assert watchdog_timeout_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_timeout_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=2) is None  # a parent's
    assert watchdog_timeout_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "2"}, pid=2) == 30.0


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"stream-guard-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(b"\0" + name.encode())
    server.settimeout(5)
    try:
        notifier = SystemdNotifier(f"@{name}")
        assert notifier.send(READY=1, STATUS="up")
        assert server.recv(4096) == b"READY=1\nSTATUS=up"
        notifier.close()
    finally:
        server.close()


def test_notifier_without_a_listener_warns_once_and_carries_on(caplog: pytest.LogCaptureFixture,
                                                               tmp_path: Path) -> None:
    notifier = SystemdNotifier(str(tmp_path / "gone.sock"))
    assert notifier.send(WATCHDOG=1) is False
    assert notifier.send(WATCHDOG=1) is False
    assert len([r for r in caplog.records if "cannot notify systemd" in r.getMessage()]) == 1
    notifier.close()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_is_accepted_by_systemd_analyze(tmp_path: Path) -> None:
    """``stream-guard systemd-unit`` prints a template unit that systemd parses without a warning,
    whose command is this installation's Python."""
    result = run_cli("systemd-unit")
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "stream-guard@door.service"  # verify needs an instance name
    unit.write_text(result.stdout)
    assert f"ExecStart={sys.executable} -m stream_guard @%d/args" in result.stdout
    assert "LoadCredential=args:/etc/stream-guard/%i.args" in result.stdout
    check = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0 and check.stderr.strip() == "", check.stderr
    # and it rejects a broken one, so the check above means something
    unit.write_text(result.stdout.replace("WatchdogSec=30", "WatchdogSec=thirty"))
    broken = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert "WatchdogSec" not in check.stderr and "thirty" in broken.stderr


def test_unit_args_dir_and_its_errors() -> None:
    assert "LoadCredential=args:/srv/sg/%i.args" in unit_text(Path("/opt/sg/bin/python"), Path("/srv/sg"))
    at_root = unit_text(Path("/opt/sg/bin/python"), Path("/"))  # was args://%i.args, which systemd refuses
    assert "LoadCredential=args:/%i.args" in at_root and "#   /NAME.args   the options" in at_root
    assert "ExecStart='/opt/my sg/bin/python' -m stream_guard" in unit_text(Path("/opt/my sg/bin/python"))
    assert "ExecStart='/opt/100%%/$$HOME/python' -m" in unit_text(Path("/opt/100%/$HOME/python"))
    result = run_cli("systemd-unit", "--args-dir", "relative/dir")
    assert result.returncode == 2
    assert result.stderr_lines == ["stream-guard: error: --args-dir relative/dir: must be an absolute path "
                                     "(systemd needs one)"]


def test_installation_closed_to_other_users_is_named() -> None:
    top = Path(tempfile.mkdtemp(prefix="sg-unit-", dir="/tmp"))  # /tmp is open to all; pytest's folders are not
    closed = top / "home"
    python = closed / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    top.chmod(0o755)
    closed.chmod(0o700)
    try:
        assert unreadable_by_others(python) == closed
        closed.chmod(0o755)
        assert unreadable_by_others(python) is None
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_venv_whose_python_links_into_a_closed_folder_is_warned_about() -> None:
    """A venv in /opt is readable, but its python may link into /root (pyenv): the warning names the link."""
    top = Path(tempfile.mkdtemp(prefix="sg-unit-", dir="/tmp"))
    real = top / "home" / "pyenv" / "python3.11"
    venv_python = top / "opt" / "venv" / "bin" / "python3"
    real.parent.mkdir(parents=True)
    real.touch()
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(real)
    top.chmod(0o755)
    (top / "home").chmod(0o700)
    try:
        out, warn = io.StringIO(), io.StringIO()
        write_unit(out, python=venv_python, warn=warn)
        assert f"ExecStart={venv_python} -m stream_guard" in out.getvalue()
        assert warn.getvalue() == (f"stream-guard: warning: {top / 'home'} is closed to other users, so the "
                                   f"service's own user cannot run {venv_python} (a link to {real}): install "
                                   f"stream_guard and its Python somewhere readable, such as /opt/stream-guard\n")
        (top / "home").chmod(0o755)
        warn = io.StringIO()
        write_unit(io.StringIO(), python=venv_python, warn=warn)
        assert warn.getvalue() == ""
    finally:
        shutil.rmtree(top, ignore_errors=True)
