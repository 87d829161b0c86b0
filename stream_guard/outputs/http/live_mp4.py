"""The live view's H.264 video: annotated frames encoded as fragmented MP4 that a browser plays with
Media Source Extensions (MSE).

One fragment (``moof`` + ``mdat``) per frame, so a frame reaches the browser as soon as the next one
is encoded (the muxer closes a fragment when it knows the frame's duration), and a keyframe every
:data:`GOP_S` so a viewer who joins late starts within that time. At the same picture it is a
fraction of what MJPEG sends (see the README's live view section for measured figures).
"""
from __future__ import annotations

import collections
import io
import struct
from dataclasses import dataclass

import av
import numpy as np

from stream_guard.outputs.video_file import MS, add_timed_h264_stream, encoder_frame, keyframe_every

GOP_S = 1.0  # keyframe interval: the most a new viewer waits, and what a new viewer is sent before live
FRAGMENT_EVERY_FRAME = {"movflags": "+empty_moov+default_base_moof+frag_every_frame", "flush_packets": "1"}
_BOX_HEADER = struct.Struct(">I4s")


@dataclass(frozen=True)
class Mp4Fragment:
    """One frame's ``moof`` + ``mdat``; ``keyframe``: a decoder can start here (after the init segment)."""

    data: bytes
    keyframe: bool


class _Written(io.RawIOBase):
    """What the muxer writes, kept until taken."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.buffer += data
        return len(data)


class FragmentedMp4Output:
    """An MP4 muxer that writes to memory, a fragment per packet: :attr:`container` to add streams
    to and mux into, :meth:`take` for what it wrote. :attr:`init` (``ftyp`` + ``moov``) is set once
    the first packet is muxed."""

    def __init__(self) -> None:
        self._written = _Written()
        self.container = av.open(self._written, mode="w", format="mp4", options=FRAGMENT_EVERY_FRAME)
        self.init: bytes | None = None

    def take(self) -> list[bytes]:
        """The fragments (``moof`` + ``mdat``) completed since the last call; a partial box is kept."""
        buffer, at, fragments = self._written.buffer, 0, []
        start = 0  # where the current ftyp+moov or moof+mdat group began
        while at + _BOX_HEADER.size <= len(buffer):
            size, kind = _BOX_HEADER.unpack_from(buffer, at)
            if size < _BOX_HEADER.size or at + size > len(buffer):
                break  # 64-bit sizes never occur at a packet per fragment; a short box is still being written
            at += size
            if kind == b"moov":
                self.init = bytes(buffer[start:at])
                start = at
            elif kind == b"mdat":
                fragments.append(bytes(buffer[start:at]))
                start = at
        del buffer[:start]
        return fragments


def avc_codec_string(init: bytes) -> str:
    """The RFC 6381 codec name (``avc1.PPCCLL``) MSE needs, from the init segment's ``avcC`` record."""
    at = init.find(b"avcC")
    if at < 0 or len(init) < at + 8:
        raise ValueError("no avcC record in the init segment")
    profile, compatibility, level = init[at + 5:at + 8]
    return f"avc1.{profile:02x}{compatibility:02x}{level:02x}"


class LiveMp4Encoder:
    """Encodes frames of one size as H.264 in fragmented MP4.

    :attr:`init` (``ftyp`` + ``moov``) and :attr:`codec` are set once the first frame is encoded;
    :meth:`encode` returns the fragments completed by that frame (normally the previous frame's).
    Frames are stamped with the time given, in milliseconds from the first, so frames the live view
    skipped shorten nothing: the video plays at the pace things happened.
    """

    def __init__(self, width: int, height: int, fps: float, gop_s: float = GOP_S) -> None:
        self.width, self.height = width - width % 2, height - height % 2
        self._out = FragmentedMp4Output()
        self._container = self._out.container
        self._stream = add_timed_h264_stream(self._container, fps, self.width, self.height,
                                             **keyframe_every(gop_s, fps))
        self.codec: str | None = None
        self._keyframes: collections.deque[bool] = collections.deque()  # of packets muxed, not yet seen written
        self._t0: float | None = None
        self._last_ms = -1

    @property
    def init(self) -> bytes | None:
        return self._out.init

    def fits(self, width: int, height: int) -> bool:
        """Whether frames of this size are this encoder's (odd sides lose their last row or column)."""
        return (self.width, self.height) == (width - width % 2, height - height % 2)

    def encode(self, rgb: np.ndarray, t_s: float) -> list[Mp4Fragment]:
        """Encode ``rgb`` (fitted to the stream's size), taken at ``t_s`` seconds (any monotonic clock)."""
        if self._t0 is None:
            self._t0 = t_s
        ms = round((t_s - self._t0) * 1000)
        if ms <= self._last_ms:
            return []  # two frames within a millisecond: keep the first
        self._last_ms = ms
        frame = encoder_frame(rgb, self.width, self.height)
        frame.pts, frame.time_base = ms, MS
        return self._mux(self._stream.encode(frame))

    def close(self) -> list[Mp4Fragment]:
        """Flush the encoder and the muxer; the last fragments."""
        fragments = self._mux(self._stream.encode(None))
        self._container.close()
        return fragments + self._take()

    def _mux(self, packets: list[av.Packet]) -> list[Mp4Fragment]:
        fragments: list[Mp4Fragment] = []
        for packet in packets:
            self._keyframes.append(bool(packet.is_keyframe))
            self._container.mux(packet)
            fragments += self._take()
        return fragments

    def _take(self) -> list[Mp4Fragment]:
        fragments = [Mp4Fragment(data, self._keyframes.popleft()) for data in self._out.take()]
        if self.codec is None and self._out.init is not None:
            self.codec = avc_codec_string(self._out.init)
        return fragments
