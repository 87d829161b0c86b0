"""Alert snapshots (``--snapshots DIR``): the evidence of what was flagged.

When a fake alert is raised, two JPEGs are written to DIR: the annotated frame on which it was
raised (boxes and scores drawn, for context) and the face itself, cut from the frame as it came
from the source (nothing drawn on it), with a quarter of the box's size around it. Every alert,
raised or cleared, is appended to ``DIR/alerts.jsonl`` (the webhook's payload plus the two file
names for a raised one), so each picture can be traced to its alert and its clearing.

Files are named by the alert's UTC time, so they sort in time order, and only the newest ``keep``
alerts' pictures are kept (older runs' pictures in DIR count too; other files are never touched).
The sink runs on its own output thread, so encoding never slows the analysis.
"""
from __future__ import annotations

import json
import os
import re
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import cv2
import numpy as np

from stream_guard.errors import ConfigError, OutputError
from stream_guard.outputs.alerts import RAISED, Alert, AlertOptions, AlertSink
from stream_guard.types import FrameResult, StreamInfo

ALERT_LOG = "alerts.jsonl"
FACE_MARGIN = 0.25  # of the box's width/height, added on each side of the face picture
JPEG_QUALITY = 90
_SNAPSHOT = re.compile(r"^(\d{8}T\d{6}\.\d{3}Z_face\d+)(_frame|_face)\.jpg$")


def snapshot_stem(alert: Alert) -> str:
    """``20261204T232741.123Z_face3``: the alert's UTC time (sortable) and its face."""
    stamp = datetime.fromtimestamp(alert.wall_time, timezone.utc)
    return f"{stamp:%Y%m%dT%H%M%S}.{stamp.microsecond // 1000:03d}Z_face{alert.track_id}"


def face_crop(image: np.ndarray, box: tuple[float, float, float, float], margin: float = FACE_MARGIN) -> np.ndarray:
    """The box grown by ``margin`` of its size on each side, clipped to the image (at least one
    pixel, even for a box predicted off the frame)."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    h, w = image.shape[:2]
    left, top = int(np.clip(np.floor(x1 - dx), 0, w - 1)), int(np.clip(np.floor(y1 - dy), 0, h - 1))
    right, bottom = int(np.clip(np.ceil(x2 + dx), left + 1, w)), int(np.clip(np.ceil(y2 + dy), top + 1, h))
    return image[top:bottom, left:right]


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Written under a temporary name and renamed, so a folder watcher never sees half a file."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"could not encode {path.name}")
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data.tobytes())
    os.replace(partial, path)


class SnapshotSink(AlertSink):
    """Saves a frame and a face picture per raised fake alert and logs every alert in DIR."""

    name = "snapshots"

    def __init__(self, folder: Path, alerts: AlertOptions, keep: int) -> None:
        super().__init__(alerts)
        if keep < 1:
            raise ConfigError("--snapshot-keep must be at least 1")
        self.folder = Path(folder)
        self.keep = keep
        self._log: IO[str] | None = None
        self._current: FrameResult | None = None
        self._stems: deque[str] = deque()  # snapshot stems in DIR, oldest first

    def open(self, info: StreamInfo) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._log = (self.folder / ALERT_LOG).open("a", encoding="utf-8")
        except OSError as e:
            raise OutputError(f"--snapshots {self.folder}: cannot write there ({e.strerror or e})") from e
        stems = {m.group(1) for p in self.folder.iterdir() if (m := _SNAPSHOT.match(p.name))}
        self._stems.extend(sorted(stems))

    def write(self, result: FrameResult) -> None:
        self._current = result  # the frame a raised alert refers to
        super().write(result)

    def on_alert(self, alert: Alert) -> None:
        record = alert.to_json()
        if alert.kind == RAISED and self._current is not None and alert.box is not None:
            stem = snapshot_stem(alert)
            frame_path, face_path = self._pictures(stem)
            _write_jpeg(frame_path, self._current.annotated)
            _write_jpeg(face_path, face_crop(self._current.frame.image, alert.box))
            record["frame_image"], record["face_image"] = frame_path.name, face_path.name
            self._stems.append(stem)
            self._prune()
        assert self._log is not None
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()

    def _pictures(self, stem: str) -> tuple[Path, Path]:
        """The frame and face pictures of one alert (names as ``_SNAPSHOT`` matches them)."""
        return self.folder / f"{stem}_frame.jpg", self.folder / f"{stem}_face.jpg"

    def _prune(self) -> None:
        while len(self._stems) > self.keep:
            for path in self._pictures(self._stems.popleft()):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            log.close()
