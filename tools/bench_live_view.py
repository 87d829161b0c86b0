"""What the live view's two videos cost: encoding time per frame and bit rate, MJPEG against H.264,
and what its sound (/sound.mp4) adds when the clip has some.

    python -m tools.bench_live_view CLIP [--heights 720 1080] [--seconds 10]

Reads CLIP's frames (scaled to each height), encodes each one as the live view does (a JPEG at
quality 80 for /stream.mjpg; fragmented-MP4 H.264 for /stream.mp4), stamped at the clip's frame
rate, and prints milliseconds per frame (one process, the encoders' own threads) and megabits per
second of video sent to each viewer. The clip's sound, decoded as a live source's is, is encoded as
the live view does beside those frames: CPU milliseconds per second of sound and kilobits per second.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import cv2
import numpy as np

from stream_guard.outputs.http.live_mp4 import LiveMp4Encoder
from stream_guard.outputs.http.live_sound_mp4 import LiveSoundMp4Encoder
from stream_guard.outputs.http.sink import JPEG_QUALITY
from stream_guard.sound_bus import SoundFeed
from stream_guard.sources.sound_decoder import SoundDecoder


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


def read_sound(clip: Path, seconds: float) -> SoundFeed | None:
    """The clip's first ``seconds`` of sound, as the capture thread hands it on; None when it has none."""
    with av.open(str(clip)) as container:
        if not container.streams.audio:
            return None
        feed = SoundFeed("bench", max_seconds=seconds + 1)
        decoder = SoundDecoder(container.streams.audio[0], feed.put, lambda t: t)
        for packet in container.demux(container.streams.audio[0]):
            if packet.pts is not None and float(packet.pts * packet.time_base) > seconds:
                break
            decoder.push(packet)
    return feed


def bench_sound(feed: SoundFeed, n_frames: int, fps: float) -> tuple[float, int]:
    """CPU seconds and bytes sent for the sound beside ``n_frames`` pictures."""
    encoder = LiveSoundMp4Encoder(feed, t0_s=0.0)
    sent, start = 0, time.process_time()
    for i in range(n_frames):
        sent += sum(len(f.data) for f in encoder.follow(i / fps, i / fps))
    sent += sum(len(f.data) for f in encoder.close()) + len(encoder.init or b"")
    return time.process_time() - start, sent


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
    sound = read_sound(args.clip, duration)
    if sound is None:
        print("sound: the clip has none")
    else:
        cpu_s, sent = bench_sound(sound, len(frames), fps)
        print(f"sound  AAC  {cpu_s / duration * 1000:.1f} ms of CPU per second, {sent * 8 / duration / 1e3:.0f} kbit/s")


if __name__ == "__main__":
    main()
