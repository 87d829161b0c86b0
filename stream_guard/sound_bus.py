"""The source's sound, handed from the capture thread to the outputs that carry it.

Sound does not go through the analysis: the capture thread publishes each decoded
:class:`SoundChunk` on a :class:`SoundBus`, which puts it in every subscriber's
:class:`SoundFeed`, a bounded buffer that the subscribing output drains on its own thread as it
writes pictures. A feed that is not drained (its output stalled) keeps the newest
:data:`FEED_SECONDS` of sound and counts what it dropped.
"""
from __future__ import annotations

import logging
import threading
from collections import deque

from stream_guard.types import SOUND_RATE, SoundChunk

log = logging.getLogger(__name__)

FEED_SECONDS = 10.0


class SoundFeed:
    """One output's bounded queue of sound chunks, oldest first."""

    def __init__(self, name: str, max_seconds: float = FEED_SECONDS) -> None:
        self.name = name
        self.max_samples = round(max_seconds * SOUND_RATE)
        self.dropped_s = 0.0  # sound dropped because the output did not keep up
        self._chunks: deque[SoundChunk] = deque()
        self._samples = 0
        self._lock = threading.Lock()

    def put(self, chunk: SoundChunk) -> None:
        with self._lock:
            self._chunks.append(chunk)
            self._samples += chunk.samples.shape[1]
            dropped = 0.0
            while self._samples > self.max_samples and len(self._chunks) > 1:
                old = self._chunks.popleft()
                self._samples -= old.samples.shape[1]
                dropped += old.duration_s
            if dropped and self.dropped_s == 0.0:
                log.warning("%s: sound is coming without pictures to place it by, or faster than it is written; "
                            "the oldest is dropped", self.name)
            self.dropped_s += dropped

    def take_until(self, pts_s: float) -> list[SoundChunk]:
        """Remove and return the chunks that start before ``pts_s``, in order (after a reconnect,
        whose clock starts again from 0, the new connection's sound comes at once)."""
        taken: list[SoundChunk] = []
        with self._lock:
            while self._chunks and self._chunks[0].pts_s < pts_s:
                chunk = self._chunks.popleft()
                self._samples -= chunk.samples.shape[1]
                taken.append(chunk)
        return taken

    def __len__(self) -> int:
        with self._lock:
            return len(self._chunks)


class SoundBus:
    """Fans the capture thread's sound out to every subscribed :class:`SoundFeed`."""

    def __init__(self) -> None:
        self._feeds: list[SoundFeed] = []

    def subscribe(self, name: str) -> SoundFeed:
        """A new feed for the output ``name``; subscribe before the capture thread starts."""
        feed = SoundFeed(name)
        self._feeds.append(feed)
        return feed

    @property
    def wanted(self) -> bool:
        return bool(self._feeds)

    def publish(self, chunk: SoundChunk) -> None:
        for feed in self._feeds:
            feed.put(chunk)
