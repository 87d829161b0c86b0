"""Run the command line on a real pseudo-terminal, as a user's shell does."""
from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_on_a_terminal(args: list[str], timeout: float = 300) -> tuple[int, str]:
    """Run ``python -m stream_guard ARGS`` on a real pseudo-terminal of 120 columns; its exit code and all
    it wrote there."""
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "stream_guard", *args], stdin=terminal, stdout=terminal,
                            stderr=terminal, cwd=REPO)
    os.close(terminal)
    out = bytearray()
    try:
        while select.select([controller], [], [], timeout)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed: the program has ended
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(timeout=30), out.decode("utf-8", "replace")
    finally:
        proc.kill()
        os.close(controller)
