"""What the live view's two videos cost: encoding time per frame and bit rate, MJPEG against H.264.

    python -m tools.bench_live_view CLIP [--heights 720 1080] [--seconds 10]

Reads CLIP's frames (scaled to each height), encodes each one as the live view does (a JPEG at
quality 80 for /stream.mjpg; fragmented-MP4 H.264 for /stream.mp4), stamped at the clip's frame
rate, and prints milliseconds per frame (one process, the encoders' own threads) and megabits per
second of video sent to each viewer.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import cv2
import numpy as np

from stream_guard.outputs.http.live_mp4 import LiveMp4Encoder
from stream_guard.outputs.http.sink import JPEG_QUALITY


def read_frames(clip: Path, seconds: float) -> tuple[list[np.ndarray], float]:
    """The clip's first ``seconds`` of frames as RGB, and its frame rate."""
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 25)
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) >= seconds * fps:
                break
    return frames, fps


def scaled(frames: list[np.ndarray], height: int) -> list[np.ndarray]:
    h, w = frames[0].shape[:2]
    width = round(w * height / h / 2) * 2
    return [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames]


def bench_mjpeg(frames: list[np.ndarray]) -> tuple[float, int]:
    sent, start = 0, time.perf_counter()
    for rgb in frames:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        sent += len(buf)
    return (time.perf_counter() - start) / len(frames) * 1000, sent


def bench_h264(frames: list[np.ndarray], fps: float) -> tuple[float, int]:
    h, w = frames[0].shape[:2]
    encoder = LiveMp4Encoder(w, h, fps)
    sent, start = 0, time.perf_counter()
    for i, rgb in enumerate(frames):
        sent += sum(len(f.data) for f in encoder.encode(rgb, i / fps))
    sent += sum(len(f.data) for f in encoder.close()) + len(encoder.init or b"")
    return (time.perf_counter() - start) / len(frames) * 1000, sent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", type=Path)
    parser.add_argument("--heights", type=int, nargs="+", default=[720, 1080])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    frames, fps = read_frames(args.clip, args.seconds)
    duration = len(frames) / fps
    print(f"{args.clip.name}: {len(frames)} frames at {fps:.2f} fps")
    print("height  video  ms/frame  Mbit/s")
    for height in args.heights:
        sized = scaled(frames, height)
        for name, (ms, sent) in (("MJPEG", bench_mjpeg(sized)), ("H.264", bench_h264(sized, fps))):
            print(f"{height:6d}  {name:5s}  {ms:8.1f}  {sent * 8 / duration / 1e6:6.2f}")


if __name__ == "__main__":
    main()
