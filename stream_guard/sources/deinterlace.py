"""Deinterlacing: interlaced video (broadcast 1080i and 576i, older cameras) made progressive.

An interlaced frame holds two fields captured a field period apart (20 ms at 50i), woven line
by line: anything that moves, a talking face included, shows comb teeth. Those teeth are
exactly the kind of fine, unnatural texture a deepfake detector looks for, and they would be
recorded too. FFmpeg's ``bwdif`` (Bob Weaver, motion adaptive) rebuilds each frame from its
fields and its neighbours: one frame out per frame in, one frame behind the decoder.
"""
from __future__ import annotations

import av

MODES = ("auto", "always", "off")  # auto: frames the stream flags interlaced; always: every frame


class Deinterlacer:
    """A ``bwdif`` filter graph over a stream's decoded frames (one thread: the reader's)."""

    def __init__(self, time_base: object, every_frame: bool = False) -> None:
        self._time_base = time_base
        self._deint = "all" if every_frame else "interlaced"
        self._graph: av.filter.Graph | None = None
        self._shape: tuple[int, int, str] | None = None

    def _build(self, frame: av.VideoFrame) -> None:
        graph = av.filter.Graph()
        source = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                                  time_base=frame.time_base or self._time_base)
        bwdif = graph.add("bwdif", f"mode=send_frame:parity=auto:deint={self._deint}")
        sink = graph.add("buffersink")
        source.link_to(bwdif)
        bwdif.link_to(sink)
        graph.configure()
        self._graph, self._shape = graph, (frame.width, frame.height, frame.format.name)

    def push(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        """Feed one decoded frame; returns the frames now ready (none for the very first)."""
        out: list[av.VideoFrame] = []
        if self._graph is None or self._shape != (frame.width, frame.height, frame.format.name):
            out = self.flush()  # a new size or format mid-stream: finish the old graph, start anew
            self._build(frame)
        self._graph.push(frame)
        return out + self._pull()

    def flush(self) -> list[av.VideoFrame]:
        """The frames still held (the last one) at the end of the stream; the graph is then spent."""
        if self._graph is None:
            return []
        self._graph.push(None)
        out = self._pull()
        self._graph = self._shape = None
        return out

    def _pull(self) -> list[av.VideoFrame]:
        out = []
        while True:
            try:
                out.append(self._graph.pull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return out
