"""A live MPEG-TS over UDP is joined wherever it is (between keyframes, inside one, in a multiplex of
several programs) and kept when its reader falls behind."""
from __future__ import annotations

import contextlib
import socket
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np
import pytest
from skimage import data as skimage_data

from stream_guard.errors import NotAVideoError
from stream_guard.sources import PyAVSource, parse_source, pyav_source, with_input_options
from stream_guard.types import SoundChunk
from tests.support.multi_program_ts import Program, make_multi_program_ts
from tests.support.stream_receiver import free_port
from tests.support.synth_video import make_clip_with_sound
from tests.support.ts_sender import RawUdpTsSender

SECONDS = 4.0  # each clip; make_clip_with_sound puts a keyframe every second


def _mid_gop_offset(ts: Path, at_s: float = 0.5) -> int:
    """The byte where the first video packet at or after ``at_s`` starts: between two keyframes."""
    with av.open(str(ts)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.pts is not None and packet.pts * packet.time_base >= at_s:
                assert not packet.is_keyframe
                return packet.pos
    raise AssertionError("no packet that late")


@contextlib.contextmanager
def _sending(data: bytes, seconds: float, offset: int = 0) -> Iterator[str]:
    """``data`` sent to a free UDP port from byte ``offset`` on, half a second after the receiver
    is told its URL (so it joins exactly there): the URL."""
    sender = RawUdpTsSender(data, seconds, free_port(socket.SOCK_DGRAM), offset=offset, delay_s=0.5)
    sender.start()
    try:
        yield sender.url
    finally:
        sender.stop()


def _read(url: str, frames: int, video_stream: int | None = None) -> tuple[tuple[int, int], int, list[SoundChunk]]:
    """Open ``url`` (the sender is about to start), read ``frames`` pictures: (size, frames read, sound)."""
    sound: list[SoundChunk] = []
    source = PyAVSource(parse_source(url), sound=sound.append, video_stream=video_stream)
    info = source.open()
    try:
        read = 0
        for _ in source.frames():
            read += 1
            if read == frames:
                break
    finally:
        source.close()
    return (info.width, info.height), read, sound


@pytest.fixture(scope="module")
def single_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("single")
    clip = make_clip_with_sound(folder / "clip.mp4", seconds=SECONDS, width=320, height=240)
    return make_multi_program_ts(folder / "single.ts", [Program(clip, number=1, first_pid=0x100)])


def test_a_stream_joined_between_keyframes_waits_for_the_next(single_program: Path) -> None:
    """Before, its picture size was unknown when the stream was opened between keyframes, and the
    source was refused as having no decodable picture (3 opens in 8 at random moments)."""
    with _sending(single_program.read_bytes(), SECONDS, offset=_mid_gop_offset(single_program)) as url:
        size, read, _ = _read(url, frames=30)
    assert size == (320, 240) and read == 30


def test_a_stream_that_never_sends_a_keyframe_is_refused(
        single_program: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyav_source, "KEYFRAME_WAIT_S", 1.0)
    start = _mid_gop_offset(single_program, 0.3)
    end = _mid_gop_offset(single_program, 0.9)  # loops over the middle of one GOP: never a keyframe
    data = single_program.read_bytes()
    with _sending(data[start - start % 188:end - end % 188], 0.6) as url:
        with pytest.raises(NotAVideoError, match="video stream has no decodable picture"):
            _read(url, frames=5)


@pytest.mark.parametrize(("pid", "size", "tone_hz"), [(0x100, (640, 360), 440.0), (0x200, (480, 270), 1500.0)])
def test_a_program_of_a_live_multiplex_is_read_with_its_sound(
        tmp_path: Path, pid: int, size: tuple[int, int], tone_hz: float) -> None:
    programs = [Program(make_clip_with_sound(tmp_path / f"{p:#x}.mp4", seconds=SECONDS, width=w, height=h, tone_hz=hz),
                        number=n, first_pid=p)
                for n, (p, (w, h), hz) in enumerate([(0x100, (640, 360), 440.0), (0x200, (480, 270), 1500.0)], 1)]
    multiplex = make_multi_program_ts(tmp_path / "multiplex.ts", programs)
    with _sending(multiplex.read_bytes(), SECONDS, offset=_mid_gop_offset(multiplex)) as url:
        got_size, read, sound = _read(url, frames=50, video_stream=pid)
    assert got_size == size and read == 50
    samples = np.concatenate([c.samples[0] for c in sound])[:24000]
    assert abs(float(np.argmax(np.abs(np.fft.rfft(samples)))) * 48000 / len(samples) - tone_hz) < 5


@pytest.mark.parametrize("packets_in", [1, 2, 3])
def test_a_stream_joined_at_a_keyframe_is_read_as_mpeg_ts(single_program: Path, packets_in: int) -> None:
    """Joined a few transport packets into the first keyframe (the encoder's SEI, SPS, PPS and IDR
    slice), the first 2 KB read look like raw H.264 to FFmpeg's format guess, which took the stream
    for raw H.264, without its sound (each of these three joins, before ``udp://`` was read as MPEG-TS)."""
    with av.open(str(single_program)) as container:
        keyframe = next(p.pos for p in container.demux(container.streams.video[0]) if p.is_keyframe)
    with _sending(single_program.read_bytes(), SECONDS, offset=keyframe + packets_in * 188) as url:
        source = PyAVSource(parse_source(url), sound=lambda chunk: None)
        info = source.open()
        source.close()
    assert info.has_sound and (info.width, info.height) == (320, 240)


def test_a_reader_slower_than_the_stream_loses_data_but_not_the_stream(single_program: Path) -> None:
    """The receive buffer (made small here: 2,000 packets) overruns when the reader falls behind; by
    default FFmpeg then failed the stream with an I/O error (after 106 frames at 16 Mbit/s and the
    default buffer). Null packets pad the stream to about 8 Mbit/s, as a constant-rate multiplex is."""
    padded = _padded(single_program.read_bytes(), 15)
    with _sending(padded, SECONDS) as url:
        source = PyAVSource(with_input_options(parse_source(url), [("fifo_size", "2000")]))
        read, started = 0, time.monotonic()
        try:
            source.open()
            for _ in source.frames():  # 12 frames a second from a 25 fps stream
                read += 1
                time.sleep(0.08)
                if time.monotonic() - started > 5:
                    break
        finally:
            source.close()
    assert read >= 40


def _padded(data: bytes, nulls_per_packet: int) -> bytes:
    """``data`` with null packets after each packet, as a constant-rate multiplex pads its stream."""
    null_packet = bytes([0x47, 0x1F, 0xFF, 0x10]) + b"\xff" * 184
    return b"".join(data[i:i + 188] + null_packet * nulls_per_packet for i in range(0, len(data), 188))


def _busy_stream(path: Path) -> Path:
    """1 s of 720p at 30 fps, grainy and panning, coded at 20 Mbit/s with B-frames (x264 veryfast), as an
    encoder feeding a contribution link does: its packets are large and its tables far apart in bytes."""
    base = cv2.resize(skimage_data.astronaut(), (1280, 720))
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.codec_context.options = {"preset": "veryfast", "x264-params": "keyint=30:min-keyint=30:scenecut=0"}
        stream.codec_context.bit_rate = 20_000_000
        for i in range(30):
            grainy = np.roll(base, 7 * i, axis=1) + rng.integers(-20, 20, base.shape)
            frame = av.VideoFrame.from_ndarray(np.clip(grainy, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            container.mux(stream.encode(frame.reformat(format="yuv420p")))
        container.mux(stream.encode(None))
    return path


def test_a_busy_stream_joined_between_its_tables_is_probed_again(tmp_path: Path) -> None:
    """Joined far from its program tables, 32 KB of such a stream (the low-latency probe) told FFmpeg
    nothing of its video: "has no video stream (only unknown)" at every join 200-1200 packets in
    (and 2 opens in 8 of a 20 Mbit/s 4K stream). The source is opened again with a longer probe."""
    stream = _busy_stream(tmp_path / "busy.ts")
    # sent over 3 s rather than 1 (7 Mbit/s instead of 20): what FFmpeg's probe sees is the same bytes
    with _sending(stream.read_bytes(), 3.0, offset=600 * 188) as url:
        size, read, _ = _read(url, frames=10)
    assert size == (1280, 720) and read == 10


def test_a_live_stream_probed_briefly_gets_its_frame_rate_from_its_headers(tmp_path: Path) -> None:
    """A 720p MPEG-TS probed with the live options (32 KB, less than its first picture): FFmpeg guessed 60 fps,
    or 90000 (its time base) when joined mid-stream, for a 30 fps stream; the recording's keyframe interval (2 s
    of frames) then came out at 180000 frames, so a killed live run's --out held no frame at all."""
    path = tmp_path / "noise.ts"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        for i in range(6):  # noise: a first picture far larger than the probe
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (720, 1280, 3), np.uint8), "rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    live = parse_source("udp://127.0.0.1:1234").options
    with av.open(str(path), options=dict(live)) as probed:
        video = probed.streams.video[0]
        assert not video.average_rate and video.guessed_rate != 30  # what FFmpeg's probe says
        assert pyav_source.nominal_fps(video) == 30.0
