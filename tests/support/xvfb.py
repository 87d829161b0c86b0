"""A private Xvfb X server for tests that need a display."""
from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

SCREEN = (1600, 1000)


@contextlib.contextmanager
def running_xvfb(log: Path, screen: tuple[int, int] = SCREEN,
                 started: Callable[[subprocess.Popen[bytes]], None] = lambda _proc: None) -> Iterator[int]:
    """Start Xvfb; yield its display number once it accepts clients (``started`` is given its process,
    for a test that kills it). Raises FileNotFoundError if Xvfb is not installed."""
    exe = shutil.which("Xvfb")
    if exe is None:
        raise FileNotFoundError("Xvfb is not installed (Debian/Ubuntu: apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    with log.open("wb") as err:
        # -displayfd: the server picks a free display number itself (no race with other
        # X servers on the machine) and writes it to the pipe once it accepts clients.
        proc = subprocess.Popen(
            [exe, "-displayfd", str(write_fd), "-screen", "0", f"{screen[0]}x{screen[1]}x24", "-nolisten", "tcp"],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    os.close(write_fd)
    try:
        started(proc)
        number = _read_display_number(read_fd, proc, log, timeout=15.0)
        _wait_for_socket(Path(f"/tmp/.X11-unix/X{number}"), proc, timeout=5.0)
        yield number
    finally:
        os.close(read_fd)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_display_number(fd: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            raise RuntimeError(f"Xvfb did not start: {log.read_text(errors='replace')[-500:]}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 64)
            if not chunk:
                raise RuntimeError(f"Xvfb closed its display pipe: {log.read_text(errors='replace')[-500:]}")
            data += chunk
    return int(data.strip())


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"Xvfb socket {path} did not appear")
        try:
            proc.wait(timeout=0.02)  # returns early only if the server dies
        except subprocess.TimeoutExpired:
            pass
