"""Hands the live view's fragmented MP4 to each browser that watches it (the server's event loop only).

A viewer who joins gets the init segment and every fragment since the last keyframe, so its
decoder starts at once, then each new fragment. A viewer that falls too far behind (a slow
network) is ended rather than waited for: the page reconnects and starts again at a keyframe.
"""
from __future__ import annotations

import asyncio

from stream_guard.outputs.http.live_mp4 import Mp4Fragment

BACKLOG_MAX = 300  # fragments kept since the last keyframe (a keyframe every second: never reached)
CLIENT_QUEUE = 120  # fragments a viewer may lag before it is ended: a few seconds of video
SOUND_CLIENT_QUEUE = 240  # the same for the sound, whose fragments are one 21 ms AAC packet each: 5 s


def end_stream(q: asyncio.Queue) -> None:
    """End a client's stream: what it has not taken yet is dropped, then ``None`` tells it to stop."""
    while not q.empty():
        q.get_nowait()
    q.put_nowait(None)


class Mp4Relay:
    """The current encoding (init segment, codec, fragments since its last keyframe) and its viewers."""

    def __init__(self, client_queue: int = CLIENT_QUEUE) -> None:
        """``client_queue``: the fragments a viewer may lag before it is ended."""
        self.init: bytes | None = None
        self.codec = ""
        self._backlog: list[bytes] = []
        self._viewers: set[asyncio.Queue[bytes | None]] = set()
        self._started = asyncio.Event()
        self._client_queue = client_queue

    def start(self, init: bytes, codec: str) -> None:
        """A new encoding began (the first, or a new size): viewers of the old one are ended."""
        self.end()
        self.init, self.codec = init, codec
        self._started.set()

    def add(self, fragments: list[Mp4Fragment]) -> None:
        """The encoding's next fragments, in order: to every viewer, and kept for those who join."""
        if self.init is None:
            return
        for fragment in fragments:
            if fragment.keyframe:
                self._backlog = []
            if fragment.keyframe or len(self._backlog) < BACKLOG_MAX:
                self._backlog.append(fragment.data)
            for q in list(self._viewers):
                try:
                    q.put_nowait(fragment.data)
                except asyncio.QueueFull:
                    self._drop(q)

    def end(self) -> None:
        """The encoding stopped (no viewers left, or the run ends): end every viewer's stream."""
        self.init, self.codec, self._backlog = None, "", []
        self._started.clear()  # not a new Event: viewers already waiting must see the next start
        for q in list(self._viewers):
            self._drop(q)

    async def join(self, timeout_s: float) -> tuple[asyncio.Queue[bytes | None], str] | None:
        """Wait up to ``timeout_s`` for an encoding; a queue that starts with its init segment and
        backlog (``None`` ends it), and the codec; None if nothing started in time."""
        if self.init is None:
            try:
                await asyncio.wait_for(self._started.wait(), timeout_s)
            except asyncio.TimeoutError:
                return None
        if self.init is None:  # started and ended while waiting
            return None
        q: asyncio.Queue[bytes | None] = asyncio.Queue(self._client_queue + len(self._backlog) + 1)
        q.put_nowait(self.init)
        for data in self._backlog:
            q.put_nowait(data)
        self._viewers.add(q)
        return q, self.codec

    def leave(self, q: asyncio.Queue[bytes | None]) -> None:
        self._viewers.discard(q)

    def _drop(self, q: asyncio.Queue[bytes | None]) -> None:
        self._viewers.discard(q)
        end_stream(q)
