"""Alert clips (``--clips DIR``): the annotated video around each fake alert, as an MP4.

A clip starts ``pad`` seconds before a fake alert is raised (those frames come from a pre-roll
buffer that always holds the last ``pad`` seconds, as JPEGs to keep its memory small) and ends
``pad`` seconds after the last open alert is cleared, so alerts that overlap or follow closely
share one clip. A clip longer than ``max_s`` is closed and, while an alert is open, continued in
a new one. A live source that drops closes the clip at once (its alerts are cleared with the
faces); stream time that goes back closes it too and, while an alert is open, starts a new one:
the frames after the gap belong to another stretch of video.

Frames keep their own stream times (a variable-rate MP4, milliseconds), so a live source that
skipped frames plays back at the right speed. Clips are named by the UTC time and face of the
alert that opened them, written under a temporary name and renamed when complete, and each is
logged in ``DIR/clips.jsonl`` as it opens and, with its SHA-256, as it ends, each line naming the
software, model and threshold behind the alert. Only the newest ``keep`` clips are kept. From a
live source a clip is written as it goes, so the ``NAME.mp4.part`` that a killed run leaves behind
still plays.

Given the source's sound (a :class:`SoundFeed`), clips carry it as AAC, the pre-roll's included:
the sink keeps the last ``pad`` seconds of sound as it keeps the pictures.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import av
import cv2
import numpy as np

from stream_guard.errors import ConfigError, OutputError
from stream_guard.model.provenance import Provenance, file_sha256
from stream_guard.outputs.alerts import RAISED, Alert, AlertOptions, AlertSink
from stream_guard.outputs.evidence import STEM_PATTERN, EvidenceLog, NewestKept, evidence_stem, unused_name
from stream_guard.outputs.live_sound import LEAD_S, LiveSound
from stream_guard.outputs.video_file import (FRAGMENTED_MP4, LIVE_KEYFRAME_S, MS, add_timed_h264_stream,
                                            keyframe_every, mux_at_ms)
from stream_guard.sound_bus import FEED_SECONDS, SoundFeed
from stream_guard.types import FrameResult, SoundChunk, StreamInfo

log = logging.getLogger(__name__)

CLIP_LOG = "clips.jsonl"
_DISK_ERRORS = (OSError, av.error.FFmpegError)  # a clip the disk refuses (it filled up)
MAX_PAD_S = 60.0  # the pre-roll holds this much video at most (720p30 like the demo's: about 230 MB)
MAX_CLIP_S = 300.0  # a clip longer than this is continued in a new file
PREROLL_JPEG_QUALITY = 85
_PREROLL_MAX_FPS = 120  # bounds the pre-roll's frame count whatever the stream times say
CLIP_FILE = rf"^({STEM_PATTERN})\.mp4$"

# why a clip ended (the ``ended`` field of its log record)
END_CLEARED = "cleared"  # pad seconds after the last open alert cleared
END_MAX_LENGTH = "max_length"  # continued in the next clip
END_SOURCE_RESET = "source_reset"  # a live source dropped
END_TIME_RESET = "time_reset"  # stream time went back
END_OF_STREAM = "end_of_stream"


class PrerollBuffer:
    """The last ``seconds`` of stream time of annotated frames. The newest frame is kept as it is
    (a clip that starts on it gets it at full quality); older ones are JPEG-compressed, so with
    ``seconds`` 0 no frame is ever compressed."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._frames: deque[tuple[float, np.ndarray]] = deque(maxlen=int(seconds * _PREROLL_MAX_FPS) + 2)
        self._newest: tuple[float, np.ndarray] | None = None

    def push(self, pts_s: float, rgb: np.ndarray) -> None:
        """Add the newest frame (the buffer holds a reference: the caller must not change it)."""
        if self._newest is not None and self._newest[0] >= pts_s - self.seconds:
            self._frames.append((self._newest[0], _compressed(self._newest[1])))
        self._newest = (pts_s, rgb)
        while self._frames and self._frames[0][0] < pts_s - self.seconds:
            self._frames.popleft()

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """The buffered frames, oldest first, as RGB."""
        for pts_s, data in self._frames:
            yield pts_s, cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        if self._newest is not None:
            yield self._newest

    def clear(self) -> None:
        self._frames.clear()
        self._newest = None


def _compressed(rgb: np.ndarray) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, PREROLL_JPEG_QUALITY])
    if not ok:
        raise OSError("could not compress a frame for the clip pre-roll")
    return data


class PrerollSound:
    """The last ``seconds`` of sound before the newest picture, for a clip's pre-roll."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._chunks: deque[SoundChunk] = deque()

    def push(self, chunk: SoundChunk, now_s: float) -> None:
        self._chunks.append(chunk)
        while self._chunks and self._chunks[0].pts_s + self._chunks[0].duration_s < now_s - self.seconds - LEAD_S:
            self._chunks.popleft()

    def feed(self, name: str) -> SoundFeed:
        """A new feed that starts with the buffered sound."""
        feed = SoundFeed(name, max_seconds=self.seconds + FEED_SECONDS)
        for chunk in self._chunks:
            feed.put(chunk)
        return feed

    def clear(self) -> None:
        self._chunks.clear()


class ClipWriter:
    """One H.264 MP4 whose frames carry their stream times, written as ``NAME.part`` and renamed
    to ``path`` by :meth:`close`. Frames of another size are scaled to the clip's. A ``live``
    clip is written as it goes (fragmented, a keyframe every ``LIVE_KEYFRAME_S``), as ``--out``
    is, so the ``.part`` of a run that was killed plays up to its last fragment. With ``sound``
    the clip carries it (AAC) on the pictures' clock."""

    def __init__(self, path: Path, width: int, height: int, fps: float | None, live: bool = False,
                 sound: SoundFeed | None = None) -> None:
        self.path = path
        self.first_s: float | None = None
        self.last_s: float | None = None
        self.frames = 0
        self._last_ms = -1
        self._partial = path.with_name(path.name + ".part")
        self._container = av.open(str(self._partial), mode="w", format="mp4", options=FRAGMENTED_MP4 if live else {})
        keyframes = keyframe_every(LIVE_KEYFRAME_S, fps or 30.0) if live else {}
        self._stream = add_timed_h264_stream(self._container, fps or 30.0, width, height, **keyframes)
        self._stream.time_base = MS
        self.sound = sound
        self._live_sound = None if sound is None else LiveSound(self._container, "aac", sound)

    def add(self, rgb: np.ndarray, pts_s: float) -> None:
        """Append a frame; one that would not advance the clip's millisecond clock is skipped."""
        if self.first_s is None:
            self.first_s = pts_s
        ms = round((pts_s - self.first_s) * 1000)
        if ms <= self._last_ms:
            return
        mux_at_ms(self._container, self._stream, rgb, ms)
        if self._live_sound is not None:
            self._live_sound.follow(pts_s, ms / 1000)
        self._last_ms, self.last_s = ms, pts_s
        self.frames += 1

    def abandon(self) -> None:
        """Give the clip up (the disk refused it): close what can be closed and delete the partial file."""
        with contextlib.suppress(Exception):  # the disk that refused a frame may refuse the closing too
            self._container.close()
        self._partial.unlink(missing_ok=True)

    def close(self) -> bool:
        """Flush the encoder, finish the file and give it its final name; a clip that never got a
        frame is deleted instead (returns False)."""
        if self.frames == 0:
            self._container.close()
            self._partial.unlink(missing_ok=True)
            return False
        try:
            self._container.mux(self._stream.encode(None))
            if self._live_sound is not None:
                self._live_sound.close()
        finally:
            self._container.close()
        os.replace(self._partial, self.path)
        return True


@dataclass(slots=True)
class _OpenClip:
    writer: ClipWriter
    source: str
    wall_time: float
    track_ids: list[int] = field(default_factory=list)
    end_at_s: float | None = None  # set once no alert is open: pad seconds after the last clearing


class ClipSink(AlertSink):
    """Writes an MP4 of the annotated video around each fake alert and logs each clip in DIR."""

    name = "clips"

    def __init__(self, folder: Path, alerts: AlertOptions, pad_s: float, keep: int,
                 max_s: float = MAX_CLIP_S, sound: SoundFeed | None = None,
                 provenance: Provenance | None = None) -> None:
        super().__init__(alerts)
        self.provenance = provenance
        if keep < 1:
            raise ConfigError("--clip-keep must be at least 1")
        if not 0.0 <= pad_s <= MAX_PAD_S:
            raise ConfigError(f"--clip-pad must be between 0 and {MAX_PAD_S:g} seconds")
        self.folder = Path(folder)
        self.pad_s = pad_s
        self.max_s = max_s
        self._preroll = PrerollBuffer(pad_s)
        self.sound = sound
        self._preroll_sound = PrerollSound(pad_s)
        self._log = EvidenceLog(self.folder, CLIP_LOG, "--clips")
        self._kept = NewestKept(self.folder, CLIP_FILE, lambda stem: (self.folder / f"{stem}.mp4",), keep, self._log,
                                "--clip-keep")
        self.lost = 0  # clips the disk refused
        self._info: StreamInfo | None = None
        self._clip: _OpenClip | None = None
        self._current: FrameResult | None = None
        self._started_on_current = False
        self._last_s: float | None = None

    def open(self, info: StreamInfo) -> None:
        self._info = info
        self._log.open()
        self._kept.scan()

    def write(self, result: FrameResult) -> None:
        try:
            self._write(result)
        except _DISK_ERRORS as e:
            self._lose_clip(e)

    def _lose_clip(self, error: Exception) -> None:
        """The open clip cannot be written (a full disk): give it up; the next alert opens a clip of its own."""
        clip, self._clip = self._clip, None
        if clip is None:
            raise error  # not a clip's failure
        self.lost += 1
        clip.writer.abandon()
        log.error("--clips %s: cannot write the clip of face %s's alert (%s): it is given up; the next alert gets "
                  "a clip of its own", self.folder, clip.track_ids[0], error)
        self._log.append({"type": "clip_lost", "clip": clip.writer.path.name, "source": clip.source,
                          "wall_time": clip.wall_time, "track_ids": clip.track_ids, "error": str(error)},
                         self.provenance)

    def _write(self, result: FrameResult) -> None:
        now = result.frame.pts_s
        self._current, self._started_on_current = result, False
        go_on_with: list[int] = []
        if self._last_s is not None and now < self._last_s:
            go_on_with = self._alerting_tracks()
            self._finish(END_TIME_RESET)
            self._preroll.clear()
            self._preroll_sound.clear()
        self._last_s = now
        self._preroll.push(now, result.annotated)
        self._take_sound(now)
        if go_on_with:
            self._start(go_on_with, time.time(), preroll=True)
        super().write(result)  # a raised alert opens a clip from the pre-roll, this frame included
        clip = self._clip
        if clip is None:
            return
        if not self._started_on_current:
            clip.writer.add(result.annotated, now)
        if clip.end_at_s is not None and now >= clip.end_at_s:
            self._finish(END_CLEARED)
        elif clip.writer.first_s is not None and now - clip.writer.first_s >= self.max_s:
            go_on_with = self._alerting_tracks()
            self._finish(END_MAX_LENGTH)
            if go_on_with:
                self._start(go_on_with, time.time(), preroll=False)

    def on_alert(self, alert: Alert) -> None:
        if alert.kind == RAISED:
            if self._clip is None:
                self._start([alert.track_id], alert.wall_time, preroll=True)
            assert self._clip is not None
            self._clip.end_at_s = None
            if alert.track_id not in self._clip.track_ids:
                self._clip.track_ids.append(alert.track_id)
        elif self._clip is not None and not self.machine.open_tracks:
            self._clip.end_at_s = alert.stream_time_s + self.pad_s

    def event(self, record: dict[str, Any]) -> None:
        try:
            super().event(record)
            if record.get("type") == "source" and record.get("state") in ("reconnecting", "failed"):
                self._finish(END_SOURCE_RESET)
                self._preroll.clear()
                self._preroll_sound.clear()
                self._last_s = None
        except _DISK_ERRORS as e:
            self._lose_clip(e)

    def close(self) -> None:
        try:
            self._finish(END_OF_STREAM)
        except _DISK_ERRORS as e:
            self._lose_clip(e)
        finally:
            self._log.close()
        lost = self.lost + self._log.lost
        if lost:
            raise OutputError(f"--clips {self.folder}: {lost} clip(s) or their log lines could not be written "
                              "(the errors are above)")

    def _take_sound(self, now: float) -> None:
        """Move the sound up to just past this picture into the pre-roll and the open clip."""
        if self.sound is None:
            return
        clip_sound = self._clip.writer.sound if self._clip is not None else None
        for chunk in self.sound.take_until(now + LEAD_S):
            self._preroll_sound.push(chunk, now)
            if clip_sound is not None:
                clip_sound.put(chunk)

    def _alerting_tracks(self) -> list[int]:
        """The faces whose alerts keep the open clip going (none once it is only waiting out the pad)."""
        if self._clip is None or self._clip.end_at_s is not None:
            return []
        return self.machine.open_tracks

    def _start(self, track_ids: list[int], wall_time: float, preroll: bool) -> None:
        """Open a clip named after the first of ``track_ids``; with ``preroll`` it begins with the
        buffered frames (the current one included), otherwise with the next frame."""
        assert self._info is not None and self._current is not None
        file_name, wall_time = unused_name(self.folder, wall_time, lambda t: f"{evidence_stem(t, track_ids[0])}.mp4")
        image = self._current.annotated
        writer = ClipWriter(self.folder / file_name, image.shape[1], image.shape[0], self._info.fps,
                            live=self._info.is_live,
                            sound=None if self.sound is None else self._preroll_sound.feed(file_name))
        self._clip = _OpenClip(writer, self._current.frame.source_id, wall_time, list(track_ids))
        # logged as it opens too, so a clip that a killed run leaves unfinished is still known as ours
        self._log.append({"type": "clip_started", "clip": file_name, "source": self._clip.source,
                          "wall_time": wall_time, "track_ids": self._clip.track_ids, "keep": self._kept.keep},
                         self.provenance)
        if preroll:
            for pts_s, rgb in self._preroll.frames():
                writer.add(rgb, pts_s)
        self._started_on_current = True

    def _finish(self, reason: str) -> None:
        clip = self._clip
        if clip is None:
            return
        writer = clip.writer
        closed = writer.close()  # a disk that refuses it raises here, the clip still open for _lose_clip
        self._clip = None
        if not closed:
            return
        digest = file_sha256(writer.path)
        self._kept.add(writer.path.stem)
        record = {"type": "clip", "clip": writer.path.name, "sha256": digest, "source": clip.source,
                  "wall_time": clip.wall_time, "track_ids": clip.track_ids,
                  "start_stream_s": round(writer.first_s or 0.0, 4), "end_stream_s": round(writer.last_s or 0.0, 4),
                  "frames": writer.frames, "ended": reason, "keep": self._kept.keep}
        self._log.append(record, self.provenance)
        log.info("clip %s: %d frames, %.1f s (%s)", writer.path.name, writer.frames,
                 (writer.last_s or 0.0) - (writer.first_s or 0.0), reason)
