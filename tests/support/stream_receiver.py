"""A streaming server's receiving end for tests: FFmpeg's own listen modes (RTMP publish, RTSP
RECORD, MPEG-TS over UDP) through PyAV, in a subprocess that prints one line per decoded frame,
so a test can kill it like a server that goes away."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

_RECEIVER = """
import sys, av
url, fmt = sys.argv[1], sys.argv[2]
options = {"flv": {"listen": "1"}, "rtsp": {"rtsp_flags": "listen", "listen_timeout": "60"}}.get(fmt, {})
print("ready", flush=True)  # what is left before it listens is av.open binding its socket
container = av.open(url, format=fmt, options=options, timeout=60)
try:
    for frame in container.decode(video=0):
        print(frame.width, frame.height, "nan" if frame.time is None else frame.time, flush=True)
except av.error.FFmpegError as e:  # a publisher that closes its connection ends the stream so
    print("ended", e, flush=True)
"""

# scheme -> the muxer FFmpeg reads it with
FORMATS = {"rtmp": "flv", "rtsp": "rtsp", "udp": "mpegts"}


@dataclass(frozen=True)
class ReceivedFrame:
    width: int
    height: int
    time_s: float  # NaN where the frame came without a timestamp (RTSP's first)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamReceiver:
    """Receives ``scheme://127.0.0.1:port/live`` until killed; ``frames`` grows as they arrive."""

    def __init__(self, scheme: str, port: int) -> None:
        self.url = f"{scheme}://127.0.0.1:{port}" + ("" if scheme == "udp" else "/live")
        self.frames: list[ReceivedFrame] = []
        self.lines: list[str] = []
        self._proc = subprocess.Popen([sys.executable, "-c", _RECEIVER, self.url, FORMATS[scheme]],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(30):
            self.kill()
            raise RuntimeError(f"the receiver for {self.url} did not start")
        time.sleep(0.2)  # av.open binds and listens

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line.strip())
            if line.startswith("ready"):
                self._ready.set()
            parts = line.split()
            if len(parts) == 3 and parts[0].isdigit():
                self.frames.append(ReceivedFrame(int(parts[0]), int(parts[1]), float(parts[2])))

    def wait_for(self, n: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.frames) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.frames) >= n

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._reader.join(5)

    def __enter__(self) -> "StreamReceiver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
