"""Source choices offered by the desktop app (the field also takes any path or URL)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

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


def source_choices(platform: str = sys.platform, dev: Path = Path("/dev")) -> list[str]:
    """What the source drop-down lists: webcams, the screen, the embedded demo."""
    return [*list_webcams(platform, dev), "screen", "demo"]
