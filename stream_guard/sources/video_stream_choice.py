"""Which of a source's video streams is analysed: chosen by the user (``--video-stream ID``) or the
largest within the size limit.

A stream is named by its ID where the container gives it one that tells the streams apart: the
PID in an MPEG-TS (``0x100``), the variant's number in an HLS master playlist (0 = the first
listed), the track ID in MP4/MOV. IDs stay the same when a live stream is reopened, where the
order in which FFmpeg lists the streams may not. Containers without such IDs (Matroska, FLV) name
their video streams by position: 0, 1, ...
"""
from __future__ import annotations

import av

from stream_guard.errors import SourceError
from stream_guard.sources.probe import DEFAULT_MAX_MEGAPIXELS

VideoStream = av.video.stream.VideoStream


def parse_stream_id(text: str) -> int:
    """``--video-stream``'s value: decimal or ``0x`` hexadecimal (MPEG-TS PIDs are written in hex)."""
    value = int(text.strip(), 0)
    if value < 0:
        raise ValueError("a stream ID is not negative")
    return value


def stream_ids(videos: list[VideoStream]) -> list[int]:
    """Each video stream's name: its container ID when those tell the streams apart, else its position."""
    ids = [s.id for s in videos]
    return ids if len(set(ids)) == len(ids) else list(range(len(videos)))


def is_cover_picture(stream: VideoStream) -> bool:
    """An attached picture (a file's cover art): a "video" stream of one still."""
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


def describe_video_streams(videos: list[VideoStream], hex_ids: bool) -> str:
    """``"0x100 720x576, 0x200 1920x1080"``: the moving video streams as ``--video-stream`` names them."""
    return ", ".join(f"{format_stream_id(i, hex_ids)} {_size(s)}"
                     for i, s in zip(stream_ids(videos), videos) if not is_cover_picture(s))


def _dimensions(stream: VideoStream) -> tuple[int, int]:
    """Width and height as the codec knows them; (0, 0) for a stream whose codec is not described (a file
    cut inside its header)."""
    context = stream.codec_context
    return (context.width, context.height) if context is not None else (0, 0)


def _size(stream: VideoStream) -> str:
    if stream.codec_context is None:
        return "no codec"
    width, height = _dimensions(stream)
    return f"{width}x{height}" if width > 0 else "size not yet known"  # a live stream before its next keyframe


def format_stream_id(stream_id: int, hex_ids: bool) -> str:
    return f"{stream_id:#x}" if hex_ids else str(stream_id)


def pick_video_stream(videos: list[VideoStream], max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
                      wanted: int | None = None, source: str = "", hex_ids: bool = False) -> VideoStream:
    """The video stream to analyse. ``wanted``: the one with that ID (:func:`stream_ids`), or a
    :class:`SourceError` that lists the IDs there are. Otherwise: not a cover picture nor a stream of one
    picture beside others, and the most pixels within the limit (an HLS master playlist offers a stream
    per variant, in the playlist's order); the first of equals. When every stream is over the limit, the
    smallest (the size check refuses it)."""
    if wanted is not None:
        for stream_id, stream in zip(stream_ids(videos), videos):
            if stream_id == wanted:
                return stream
        raise SourceError(f"{source}: has no video stream {format_stream_id(wanted, hex_ids)} "
                          f"(--video-stream); its video streams: {describe_video_streams(videos, hex_ids)}")
    moving = [s for s in videos if not is_cover_picture(s)] or list(videos)
    moving = [s for s in moving if s.codec_context is not None] or moving  # the caller refuses a codec-less one
    # a one-frame stream beside others is a still (an animated AVIF's first picture, a cover not flagged as one)
    moving = [s for s in moving if s.frames != 1] or moving

    def pixels(stream: VideoStream) -> int:
        width, height = _dimensions(stream)
        return width * height

    within = [s for s in moving if pixels(s) <= max_megapixels * 1e6]
    return max(within, key=pixels) if within else min(moving, key=pixels)
