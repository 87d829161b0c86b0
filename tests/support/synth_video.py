"""Synthetic H.264 test clips for source and RTSP tests.

``make_test_clip`` writes an MP4 that a live decoder can start anywhere a second
begins: yuv420p, a keyframe every ``fps`` frames (about 1 s), no B-frames, so decode
order equals presentation order. The default pattern stamps each frame's index as a
row of black/white blocks, which ``read_frame_index`` reads back after lossy coding,
so tests can check for dropped, repeated or reordered frames.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional, Union

import av
import numpy as np

DrawFn = Callable[[int], np.ndarray]

INDEX_BITS = 16


def _block_size(width: int) -> int:
    """Side in pixels of one index block: the 16 blocks span about 40 % of the width."""
    return max(4, width // 40)


def stamp_frame_index(rgb: np.ndarray, index: int) -> None:
    """Write ``index`` (mod 2**16) into the top-left corner of ``rgb`` in place,
    most significant bit first, white = 1, on a mid-grey border."""
    side = _block_size(rgb.shape[1])
    rgb[: side + 2 * (side // 4), : INDEX_BITS * side + 2 * (side // 4)] = 128
    pad = side // 4
    for bit in range(INDEX_BITS):
        on = (index >> (INDEX_BITS - 1 - bit)) & 1
        x0 = pad + bit * side
        rgb[pad : pad + side, x0 : x0 + side] = 255 if on else 0


def read_frame_index(rgb: np.ndarray) -> int:
    """Read back the index stamped by :func:`stamp_frame_index` (after decoding)."""
    side = _block_size(rgb.shape[1])
    pad = side // 4
    value = 0
    for bit in range(INDEX_BITS):
        x0 = pad + bit * side
        core = rgb[pad + side // 4 : pad + side - side // 4, x0 + side // 4 : x0 + side - side // 4]
        value = (value << 1) | int(core.mean() > 128)
    return value


def moving_pattern(width: int, height: int) -> DrawFn:
    """Default ``draw``: a drifting colour gradient, a bouncing white square and the
    frame index stamp."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.int32)
    square = max(8, min(width, height) // 6)

    def draw(i: int) -> np.ndarray:
        rgb = np.empty((height, width, 3), np.uint8)
        rgb[..., 0] = (xs + 4 * i) & 255
        rgb[..., 1] = (ys + 2 * i) & 255
        rgb[..., 2] = ((xs + ys) // 2 + 128 + 3 * i) & 255
        span_x, span_y = max(1, width - square), max(1, height - square)
        x = abs((7 * i) % (2 * span_x) - span_x)
        y = abs((5 * i) % (2 * span_y) - span_y)
        rgb[y : y + square, x : x + square] = 255
        stamp_frame_index(rgb, i)
        return rgb

    return draw


def make_test_clip(
    path: Union[str, Path],
    seconds: float = 2.0,
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    draw: Optional[DrawFn] = None,
    display_rotation: int = 0,
    display_hflip: bool = False,
    sample_aspect: Optional[Fraction] = None,
    interlaced: bool = False,
    frame_pts: Optional[Callable[[int], int]] = None,
    codec: str = "h264",
) -> Path:
    """Encode ``round(seconds * fps)`` frames from ``draw(i) -> HxWx3 uint8 RGB`` into an
    H.264 MP4 at ``path`` (libx264, yuv420p, keyframe every ``fps`` frames, no B-frames,
    zerolatency tuning). ``display_rotation`` (degrees anticlockwise) and ``display_hflip``
    go into the track's display matrix, as a phone writes them, and ``sample_aspect`` is the
    pixels' shape (anamorphic video): the frames are stored as drawn. ``interlaced`` codes
    them as interlaced (top field first), so decoded frames are flagged so. ``frame_pts(i)``:
    frame ``i``'s timestamp in frame periods (default ``i``), for gaps in time. ``codec`` ``hevc``
    codes H.265 (libx265) instead, as most IP cameras and phones now record. Returns the path."""
    if width % 2 or height % 2:
        raise ValueError("yuv420p needs even width and height")
    path = Path(path)
    draw = draw or moving_pattern(width, height)
    n_frames = max(1, round(seconds * fps))
    with av.open(str(path), mode="w") as container:
        stream = (_add_hevc_stream(container, width, height, fps) if codec == "hevc"
                  else _add_h264_stream(container, width, height, fps, interlaced))
        if display_rotation or display_hflip:
            stream.set_display_rotation(display_rotation, hflip=display_hflip)
        if sample_aspect is not None:
            stream.codec_context.sample_aspect_ratio = sample_aspect
        for i in range(n_frames):
            frame = _to_video_frame(draw(i), width, height)
            frame.pts = i if frame_pts is None else frame_pts(i)
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _add_h264_stream(container: av.container.OutputContainer, width: int, height: int, fps: int,
                     interlaced: bool = False) -> av.VideoStream:
    """A libx264 stream set for live-style decoding (fixed 1 s GOP, no B-frames)."""
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = Fraction(1, fps)
    stream.codec_context.gop_size = fps
    stream.codec_context.max_b_frames = 0
    stream.codec_context.options = {
        "preset": "veryfast",
        "tune": "zerolatency",
        "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0" + (":tff=1" if interlaced else ""),
    }
    return stream


def _add_hevc_stream(container: av.container.OutputContainer, width: int, height: int, fps: int) -> av.VideoStream:
    """A libx265 stream set as a camera sends it: a keyframe a second, no B-frames."""
    stream = container.add_stream("libx265", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.time_base = Fraction(1, fps)
    stream.codec_context.options = {
        "preset": "ultrafast", "tune": "zerolatency",
        "x265-params": f"keyint={fps}:min-keyint={fps}:scenecut=0:bframes=0:log-level=error"}
    return stream


def _to_video_frame(rgb: np.ndarray, width: int, height: int) -> av.VideoFrame:
    """Check a drawn frame and convert it to a yuv420p ``VideoFrame``."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.shape != (height, width, 3):
        raise ValueError(f"draw() returned shape {rgb.shape}, expected {(height, width, 3)}")
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def make_clip_with_sound(
    path: Union[str, Path],
    seconds: float = 2.0,
    fps: int = 25,
    audio_codec: str = "aac",
    tone_hz: float = 440.0,
    burst: tuple[float, float] | None = None,
    width: int = 320,
    height: int = 240,
    flash: bool = False,
) -> Path:
    """A clip with the default moving pattern and a mono sine tone at 48 kHz (``audio_codec``:
    aac, pcm_s16le, libopus, libmp3lame...). ``burst=(start_s, end_s)`` sounds the tone only
    then, silence elsewhere, so a test can find when it starts; with ``flash`` the pictures of
    the burst are white too, so a test can tell whether sound and pictures still meet."""
    path = Path(path)
    pattern = moving_pattern(width, height)

    def draw(i: int) -> np.ndarray:
        if flash and burst is not None and burst[0] <= i / fps < burst[1]:
            return np.full((height, width, 3), 255, np.uint8)
        return pattern(i)

    rate, block = 48000, 960
    n_frames = max(1, round(seconds * fps))
    with av.open(str(path), mode="w") as container:
        video = _add_h264_stream(container, width, height, fps)
        audio = container.add_stream(audio_codec, rate=rate)
        audio.layout = "mono"
        resampler = av.AudioResampler(format=audio.codec_context.format, layout="mono", rate=rate,
                                      frame_size=audio.codec_context.frame_size or None)
        samples = np.arange(round(seconds * rate))
        wave = 0.5 * np.sin(2 * np.pi * tone_hz * samples / rate)
        if burst is not None:
            wave[(samples < burst[0] * rate) | (samples >= burst[1] * rate)] = 0.0
        next_audio = 0
        for i in range(n_frames):
            frame = _to_video_frame(draw(i), width, height)
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(video.encode(frame))
            while next_audio < min(len(wave), round((i + 1) / fps * rate)):
                chunk = wave[next_audio:next_audio + block].astype(np.float32)[None, :]
                aframe = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                aframe.sample_rate, aframe.pts, aframe.time_base = rate, next_audio, Fraction(1, rate)
                for converted in resampler.resample(aframe):
                    container.mux(audio.encode(converted))
                next_audio += chunk.shape[1]
        for converted in resampler.resample(None):
            container.mux(audio.encode(converted))
        container.mux(audio.encode(None))
        container.mux(video.encode(None))
    return path


def remux(clip: Union[str, Path], out: Union[str, Path], format: str, options: dict[str, str] | None = None) -> None:
    """Copy every stream of ``clip`` into ``out``, written by FFmpeg's ``format`` muxer with ``options``
    (nothing re-encoded)."""
    with av.open(str(clip)) as src, av.open(str(out), "w", format=format, options=options or {}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
