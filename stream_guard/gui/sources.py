"""Source choices offered by the desktop app (the field also takes any path or URL)."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from stream_guard.errors import SourceError
from stream_guard.sources.screencast_portal import wayland_session

VIDEO_DEVICE = re.compile(r"video(\d+)")


def list_webcams(platform: str = sys.platform, dev: Path = Path("/dev")) -> list[str]:
    """``webcam:N`` for each ``/dev/videoN`` on Linux, sorted by N; elsewhere ``webcam:0`` as a
    hint (macOS takes an index, Windows a device name typed as ``webcam:NAME``)."""
    if not platform.startswith("linux"):
        return ["webcam:0"]
    try:
        names = [p.name for p in dev.iterdir()]
    except OSError:
        return []
    numbers = sorted(int(m.group(1)) for n in names if (m := VIDEO_DEVICE.fullmatch(n)))
    return [f"webcam:{n}" for n in numbers]


def list_window_sources(platform: str = sys.platform) -> list[str]:
    """``screen@MONITOR`` for each monitor (where there are several) and ``window:TITLE`` for each
    application window of the X display (Linux with X11; none elsewhere, nor on Wayland, where
    ``screen`` lets the user pick a monitor or a window)."""
    if not platform.startswith("linux") or wayland_session() or not os.environ.get("DISPLAY"):
        return []
    from stream_guard.sources.x11_display import screen_contents
    from stream_guard.sources.x11_targets import monitor_sources, window_sources

    try:
        monitors, windows = screen_contents(os.environ["DISPLAY"])
    except SourceError:
        return []
    return monitor_sources(monitors) + window_sources(windows)


def source_choices(platform: str = sys.platform, dev: Path = Path("/dev")) -> list[str]:
    """What the source drop-down lists: webcams, the screen, the embedded demo, then the monitors
    and the open windows."""
    return [*list_webcams(platform, dev), "screen", "demo", *list_window_sources(platform)]
