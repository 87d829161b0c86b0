"""Cheap checks on a video file's structure before (and besides) FFmpeg's own.

FFmpeg reports a cut-off MP4 as "invalid data" (index at the end, now missing) or
stops decoding quietly part-way (index at the start). Walking the top-level ISO-BMFF
boxes tells the two apart from a damaged or foreign file: a box that runs past the
end of the file means the file was truncated. Also the frame-size limits every source obeys.
"""
from __future__ import annotations

import struct
from pathlib import Path

from stream_guard.errors import SourceError

# Top-level box types a real MP4/MOV starts with (a "wide" or "free" box may precede ftyp in old MOVs).
_FIRST_BOXES = frozenset({b"ftyp", b"wide", b"free", b"skip", b"mdat", b"moov", b"pnot"})
_MAX_BOXES = 10_000  # a bound on the walk, whatever the file says


def _is_box_type(tag: bytes) -> bool:
    return len(tag) == 4 and all(32 <= c < 127 for c in tag)


def iso_truncation(path: str | Path) -> str | None:
    """If ``path`` is an MP4/MOV whose last top-level box runs past the end of the file,
    say how (``"the file ends inside its 'mdat' box: 1200 of 26323 bytes"``); else None.
    Files that are not ISO-BMFF, or unreadable, give None (FFmpeg reports those)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            offset = 0
            for n in range(_MAX_BOXES):
                if offset >= size:
                    return None
                fh.seek(offset)
                header = fh.read(16)
                if len(header) < 8:  # after a box: cut short; at the start: too short to be an MP4 at all
                    return f"the file ends inside a box header at byte {offset}" if n else None
                box_size, tag = struct.unpack(">I4s", header[:8])
                if not _is_box_type(tag) or (n == 0 and tag not in _FIRST_BOXES):
                    return None  # not ISO-BMFF (or damaged beyond this check): FFmpeg decides
                if box_size == 1:  # 64-bit size follows
                    if len(header) < 16:
                        return f"the file ends inside the '{tag.decode()}' box header"
                    box_size = struct.unpack(">Q", header[8:16])[0]
                elif box_size == 0:  # runs to the end of the file
                    return None
                if box_size < 8:
                    return None
                if offset + box_size > size:
                    have = size - offset
                    return f"the file ends inside its '{tag.decode()}' box: {have} of {box_size} bytes"
                offset += box_size
    except OSError:
        return None
    return None


MIN_FRAME_SIDE = 16  # px: below this a frame cannot show a face the detector can find
DEFAULT_MAX_MEGAPIXELS = 9.0  # up to DCI 4K (4096x2160 = 8.8 MP); above, each queued frame costs 100+ MB


def check_frame_size(source: str, width: int, height: int, max_megapixels: float, or_else: str = "") -> None:
    """Refuse frames too small to hold a face, or larger than the (raisable) limit; ``or_else``: another
    way under the limit, for the message."""
    if min(width, height) < MIN_FRAME_SIDE:
        raise SourceError(f"{source}: frame size {width}x{height} is too small to show a face "
                          f"(minimum {MIN_FRAME_SIDE}x{MIN_FRAME_SIDE})")
    megapixels = width * height / 1e6
    if megapixels > max_megapixels:
        raise SourceError(f"{source}: frame size {width}x{height} ({megapixels:.1f} MP) is above the limit of "
                          f"{max_megapixels:g} MP (raise it with --max-megapixels{', or ' + or_else if or_else else ''})")
