"""HDR test clips: 10-bit BT.2020 H.264 flagged PQ or HLG, from signal values the test chooses."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

PQ, HLG = 16, 18
_KR, _KB = 0.2627, 0.0593


def pq_signal(nits: np.ndarray) -> np.ndarray:
    """PQ's inverse EOTF (SMPTE ST 2084): display light in cd/m² to signal 0..1."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = (np.asarray(nits, np.float64) / 10000) ** m1
    return ((c1 + c2 * y) / (1 + c3 * y)) ** m2


def hdr_frame(signal: np.ndarray) -> av.VideoFrame:
    """A yuv420p10le frame (BT.2020 matrix, limited range) of ``signal``: ``(H, W, 3)`` R'G'B' in 0..1."""
    y = signal @ np.array([_KR, 1 - _KR - _KB, _KB])
    cb = (signal[..., 2] - y) / (2 * (1 - _KB))
    cr = (signal[..., 0] - y) / (2 * (1 - _KR))
    h, w = y.shape
    half = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # noqa: E731
    planes = (64 + 876 * y, 512 + 896 * half(cb), 512 + 896 * half(cr))
    frame = av.VideoFrame(w, h, "yuv420p10le")
    for plane, values in zip(frame.planes, planes):
        rows = np.zeros((plane.height, plane.line_size // 2), "<u2")
        rows[:, : values.shape[1]] = np.clip(np.round(values), 0, 1023)
        plane.update(rows.tobytes())
    frame.colorspace, frame.color_range = 9, 1  # BT.2020 non-constant luminance, limited range
    return frame


def add_hdr_stream(container: av.container.OutputContainer, width: int, height: int, rate: object,
                   transfer: int, options: dict[str, str]) -> av.VideoStream:
    """A 10-bit 4:2:0 libx264 stream for :func:`hdr_frame` pictures, flagged ``transfer`` and
    BT.2020 (BT.709 for an SDR transfer such as 1), limited range."""
    stream = container.add_stream("libx264", rate=rate, options=options)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p10le"
    primaries = 9 if transfer in (PQ, HLG) else 1
    context = stream.codec_context
    context.color_trc, context.color_primaries, context.colorspace, context.color_range = (
        transfer, primaries, primaries, 1)
    return stream


def write_hdr_clip(path: Path, signals: list[np.ndarray], transfer: int, fps: int = 10,
                   format: str | None = None) -> Path:
    """An H.264 10-bit clip of one frame per signal picture, flagged ``transfer`` and BT.2020 (BT.709
    for an SDR transfer such as 1; the pictures are coded with BT.2020's matrix either way)."""
    with av.open(str(path), "w", format=format) as container:
        height, width = signals[0].shape[:2]
        stream = add_hdr_stream(container, width, height, fps, transfer, {"qp": "0"})
        for signal in signals:
            container.mux(stream.encode(hdr_frame(signal)))
        container.mux(stream.encode(None))
    return path


def write_switching_clip(path: Path, segments: list[tuple[list[np.ndarray], int]], fps: int = 10) -> Path:
    """A raw H.264 stream (``.h264``) of one coded segment per ``(signal pictures, transfer)``, back to
    back, as a broadcast that switches between SDR (transfer 1, BT.709) and HDR programmes sends it.
    Grey pictures only: every segment is coded with the BT.2020 matrix whatever its flags say."""
    data = b""
    for index, (signals, transfer) in enumerate(segments):
        part = write_hdr_clip(path.with_name(f"{path.stem}.part{index}.h264"), signals, transfer, fps, "h264")
        data += part.read_bytes()
        part.unlink()
    path.write_bytes(data)
    return path
