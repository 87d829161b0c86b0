"""Alert snapshots (``--snapshots DIR``): the evidence of what was flagged.

When a fake alert is raised, two JPEGs are written to DIR: the annotated frame on which it was
raised (boxes and scores drawn, for context) and the face itself, cut from the frame as it came
from the source (nothing drawn on it), with a quarter of the box's size around it. Every alert,
raised or cleared, is appended to ``DIR/alerts.jsonl`` (the webhook's payload plus the two file
names and their SHA-256 for a raised one, and the software, model and threshold that judged it), so
each picture can be traced to its alert, its clearing and the model behind it, and checked unaltered.

Files are named by the alert's UTC time, so they sort in time order, and only the newest ``keep``
alerts' pictures are kept (older runs' pictures in DIR count too; other files are never touched).
The sink runs on its own output thread, so encoding never slows the analysis.

An alert whose pictures the disk cannot take (it filled up) is logged without them (``pictures_lost``
says why) and the next alert is tried afresh, so the evidence comes back once there is room; a log line
that cannot be written is tried again with the next alert. The run is then told, at its end, how many
alerts lost their evidence.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from stream_guard.errors import ConfigError, OutputError
from stream_guard.model.provenance import Provenance
from stream_guard.outputs.alerts import RAISED, Alert, AlertOptions, AlertSink
from stream_guard.outputs.evidence import STEM_PATTERN, EvidenceLog, NewestKept, evidence_stem
from stream_guard.types import FrameResult, StreamInfo

ALERT_LOG = "alerts.jsonl"
FACE_MARGIN = 0.25  # of the box's width/height, added on each side of the face picture
JPEG_QUALITY = 90
SNAPSHOT_FILE = rf"^({STEM_PATTERN})(_frame|_face)\.jpg$"
log = logging.getLogger(__name__)


def face_crop(image: np.ndarray, box: tuple[float, float, float, float], margin: float = FACE_MARGIN) -> np.ndarray:
    """The box grown by ``margin`` of its size on each side, clipped to the image (at least one
    pixel, even for a box predicted off the frame)."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    h, w = image.shape[:2]
    left, top = int(np.clip(np.floor(x1 - dx), 0, w - 1)), int(np.clip(np.floor(y1 - dy), 0, h - 1))
    right, bottom = int(np.clip(np.ceil(x2 + dx), left + 1, w)), int(np.clip(np.ceil(y2 + dy), top + 1, h))
    return image[top:bottom, left:right]


def _write_jpeg(path: Path, rgb: np.ndarray) -> str:
    """Written under a temporary name and renamed, so a folder watcher never sees half a file;
    returns the file's SHA-256."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"could not encode {path.name}")
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data.tobytes())
    os.replace(partial, path)
    return hashlib.sha256(data).hexdigest()


class SnapshotSink(AlertSink):
    """Saves a frame and a face picture per raised fake alert and logs every alert in DIR."""

    name = "snapshots"

    def __init__(self, folder: Path, alerts: AlertOptions, keep: int, provenance: Provenance | None = None) -> None:
        super().__init__(alerts, provenance)  # each alert's record names what judged it
        if keep < 1:
            raise ConfigError("--snapshot-keep must be at least 1")
        self.folder = Path(folder)
        self._log = EvidenceLog(self.folder, ALERT_LOG, "--snapshots")
        self.lost = 0  # alerts whose pictures the disk did not take
        self._current: FrameResult | None = None
        self._kept = NewestKept(self.folder, SNAPSHOT_FILE, self._pictures, keep, self._log, "--snapshot-keep")

    def open(self, info: StreamInfo) -> None:
        self._log.open()
        self._kept.scan()

    def write(self, result: FrameResult) -> None:
        self._current = result  # the frame a raised alert refers to
        super().write(result)

    def on_alert(self, alert: Alert) -> None:
        record = alert.to_json()
        if alert.kind == RAISED and self._current is not None and alert.box is not None:
            stem = evidence_stem(alert.wall_time, alert.track_id)
            frame_path, face_path = self._pictures(stem)
            try:
                frame_sha256 = _write_jpeg(frame_path, self._current.annotated)
                face_sha256 = _write_jpeg(face_path, face_crop(self._current.frame.image, alert.box))
            except OSError as e:
                self.lost += 1
                for path in (frame_path, face_path):  # no picture without its log line (verify would flag it)
                    for leftover in (path, path.with_name(path.name + ".part")):
                        leftover.unlink(missing_ok=True)
                log.error("--snapshots %s: cannot save the pictures of face %d's alert (%s): it is logged without "
                          "them", self.folder, alert.track_id, e.strerror or e)
                record["pictures_lost"] = e.strerror or str(e)
            else:
                record.update(frame_image=frame_path.name, frame_sha256=frame_sha256, face_image=face_path.name,
                              face_sha256=face_sha256, keep=self._kept.keep)
                self._kept.add(stem)
        self._log.append(record)


    def _pictures(self, stem: str) -> tuple[Path, Path]:
        """The frame and face pictures of one alert (names as ``SNAPSHOT_FILE`` matches them)."""
        return self.folder / f"{stem}_frame.jpg", self.folder / f"{stem}_face.jpg"

    def close(self) -> None:
        self._log.close()
        lost = self.lost + self._log.lost
        if lost:
            raise OutputError(f"--snapshots {self.folder}: {lost} alert(s) or their pictures could not be "
                              "saved (the errors are above)")
