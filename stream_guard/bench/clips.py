"""Synthetic face clips for the benchmark, made at run time from scikit-image's
public-domain astronaut photo (nothing is shipped)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import cv2
import numpy as np
from skimage import data

DrawFn = Callable[[int], np.ndarray]


def astronaut_head(height: int) -> np.ndarray:
    """The astronaut's head and shoulders (RGB), scaled to ``height`` pixels."""
    head = data.astronaut()[0:300, 110:370]
    width = max(1, int(round(head.shape[1] * height / head.shape[0])))
    return np.ascontiguousarray(cv2.resize(head, (width, height), interpolation=cv2.INTER_AREA))


def _paste(canvas: np.ndarray, image: np.ndarray, cx: float, cy: float) -> None:
    h, w = image.shape[:2]
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(canvas.shape[1], x0 + w), min(canvas.shape[0], y0 + h)
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] = image[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]


def moving_faces(width: int, height: int, n_faces: int, period: int = 90) -> DrawFn:
    """``n_faces`` heads (1, or a 2x2 grid for up to 4) drifting on small ellipses."""
    if not 1 <= n_faces <= 4:
        raise ValueError("the benchmark draws 1 to 4 faces")
    cols = 1 if n_faces == 1 else 2
    rows = 1 if n_faces <= 2 else 2
    face_px = int(height * (0.36 if n_faces == 1 else 0.3))
    heads = [astronaut_head(face_px) for _ in range(n_faces)]
    heads = [h if i % 2 == 0 else np.ascontiguousarray(h[:, ::-1]) for i, h in enumerate(heads)]
    centres = [((c + 0.5) * width / cols, (r + 0.5) * height / rows) for r in range(rows) for c in range(cols)]
    background = np.full((height, width, 3), 70, np.uint8)
    amp_x, amp_y = width * 0.12 / cols, height * 0.06 / rows

    def draw(i: int) -> np.ndarray:
        frame = background.copy()
        for k, head in enumerate(heads):
            a = 2 * np.pi * i / period + k * np.pi / 2
            _paste(frame, head, centres[k][0] + amp_x * np.cos(a), centres[k][1] + amp_y * np.sin(a))
        return frame

    return draw


def write_clip(path: Path, width: int, height: int, fps: int, seconds: float, n_faces: int,
               hdr_transfer: int | None = None) -> Path:
    """An H.264 MP4 (yuv420p, 1 s GOP, no B-frames, like a camera stream) of moving faces.

    With ``hdr_transfer`` (16 = PQ, 18 = HLG) it is 10-bit BT.2020 flagged with that transfer, and
    the pictures are taken as its signal as they are, not graded into HDR: the reader's tone
    mapping costs the same whatever the pixels, so this measures its cost, not its look."""
    draw = moving_faces(width, height, n_faces)
    n_frames = max(1, round(seconds * fps))
    pix_fmt = "yuv420p" if hdr_transfer is None else "yuv420p10le"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if hdr_transfer is not None:
            context = stream.codec_context
            context.color_trc, context.color_primaries, context.colorspace, context.color_range = (
                hdr_transfer, 9, 9, 1)  # BT.2020 primaries and matrix, limited range
        stream.time_base = Fraction(1, fps)
        stream.codec_context.gop_size = fps
        stream.codec_context.max_b_frames = 0
        stream.codec_context.options = {"preset": "veryfast", "tune": "zerolatency",
                                        "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0"}
        for i in range(n_frames):
            picture = av.VideoFrame.from_ndarray(draw(i), format="rgb24")
            frame = (picture.reformat(format=pix_fmt) if hdr_transfer is None else
                     picture.reformat(format=pix_fmt, dst_colorspace="bt2020", dst_color_range="MPEG"))
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
