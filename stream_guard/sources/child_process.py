"""Ending the child processes that some sources read from (GStreamer pipelines)."""
from __future__ import annotations

import subprocess


def end_child(process: subprocess.Popen, wait_s: float) -> None:
    """Ask ``process`` to stop (SIGTERM), kill it if it is still there after ``wait_s``, and reap it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
