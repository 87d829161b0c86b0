"""A live source's sound, carried to the live outputs (--out, --stream-to) in sync with the pictures."""
from __future__ import annotations

import socket
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stream_guard.outputs.live_sound import MAX_LAG_S, LiveSound
from stream_guard.outputs.video_file import FRAGMENTED_MP4
from stream_guard.sound_bus import SoundBus, SoundFeed
from stream_guard.sources import PyAVSource, parse_source
from stream_guard.types import SOUND_RATE, SoundChunk
from tests.conftest import run_cli
from tests.support.stream_receiver import free_port
from tests.support.synth_video import make_clip_with_sound, make_test_clip
from tests.support.ts_sender import UdpTsSender

FPS = 25
BURST = (1.0, 1.2)  # a white flash and a beep, once per 3 s loop of the clip
SYNC_TOLERANCE_S = 1 / FPS + 0.03  # a frame (the live queue may skip the flash's first) and a bit


def _flashes(path: Path) -> list[float]:
    """Times at which the recording's pictures turn white (its first, if it starts in a flash)."""
    with av.open(str(path)) as container:
        times = [(f.time, f.to_ndarray(format="rgb24").mean() > 200) for f in container.decode(video=0)]
    return [t for (t, white), (_, before) in zip(times, [(None, False)] + times[:-1]) if white and not before]


def _sound(path: Path) -> tuple[str, np.ndarray, float] | None:
    """(codec, first channel, start time s) of the recording's sound, or None when it is silent."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        chunks, start = [], None
        for frame in container.decode(stream):
            start = frame.time if start is None else start
            chunks.append(frame.to_ndarray().reshape(-1, frame.samples)[0])
        return stream.codec_context.name, np.concatenate(chunks), start or 0.0


def _beeps(wave: np.ndarray, start_s: float) -> list[float]:
    """Times at which a beep starts (after at least 0.5 s of quiet)."""
    loud = np.flatnonzero(np.abs(wave) > 0.1)
    onsets = [i for k, i in enumerate(loud) if k == 0 or i - loud[k - 1] > SOUND_RATE // 2]
    return [start_s + i / SOUND_RATE for i in onsets]


def _assert_in_sync(path: Path) -> None:
    sound = _sound(path)
    assert sound is not None, "the recording is silent"
    codec, wave, start_s = sound
    assert codec == "aac"
    flashes, beeps = _flashes(path), _beeps(wave, start_s)
    assert flashes and len(beeps) == len(flashes), (flashes, beeps)
    for flash, beep in zip(flashes, beeps):
        assert abs(beep - flash) < SYNC_TOLERANCE_S, (flashes, beeps)


@pytest.fixture(scope="module")
def beeping_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip_with_sound(tmp_path_factory.mktemp("live_sound") / "clip.mp4", seconds=3.0, fps=FPS,
                                burst=BURST, flash=True)


@pytest.fixture
def live_source(beeping_clip: Path) -> str:
    port = free_port(socket.SOCK_DGRAM)
    sender = UdpTsSender(beeping_clip, port)
    sender.start()
    yield sender.url
    sender.stop()


def test_a_live_recording_keeps_the_sound_in_sync(live_source: str, tmp_path: Path,
                                                  placeholder_model: Path) -> None:
    out = tmp_path / "live.mp4"
    result = run_cli("watch", live_source, "--model", str(placeholder_model), "--out", str(out),
                     "--max-frames", str(8 * FPS))
    assert result.returncode == 0, result.stderr
    _assert_in_sync(out)
    _, wave, start_s = _sound(out)
    with av.open(str(out)) as container:
        video_s = float(container.streams.video[0].duration * container.streams.video[0].time_base)
    assert abs(start_s + len(wave) / SOUND_RATE - video_s) < 0.3  # sound as long as the pictures


def test_the_stream_sent_on_carries_the_sound_in_sync(live_source: str, tmp_path: Path,
                                                      placeholder_model: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    received = tmp_path / "received.ts"
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", port))
    receiver.settimeout(0.2)
    done = threading.Event()

    def receive() -> None:
        with received.open("wb") as f:
            while not done.is_set():
                try:
                    f.write(receiver.recv(65536))
                except socket.timeout:
                    continue

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    try:
        result = run_cli("watch", live_source, "--model", str(placeholder_model),
                         "--stream-to", f"udp://127.0.0.1:{port}", "--max-frames", str(8 * FPS))
    finally:
        done.set()
        thread.join(5)
        receiver.close()
    assert result.returncode == 0, result.stderr
    _assert_in_sync(received)


def test_a_live_source_without_sound_gives_a_silent_recording(tmp_path: Path, placeholder_model: Path) -> None:
    clip = make_test_clip(tmp_path / "silent.mp4", seconds=2.0, width=320, height=240, fps=FPS)
    sender = UdpTsSender(clip, free_port(socket.SOCK_DGRAM))
    sender.start()
    try:
        result = run_cli("watch", sender.url, "--model", str(placeholder_model), "--out", str(tmp_path / "o.mp4"),
                         "--max-frames", str(2 * FPS))
    finally:
        sender.stop()
    assert result.returncode == 0, result.stderr
    assert _sound(tmp_path / "o.mp4") is None and _flashes(tmp_path / "o.mp4") == []


def test_the_source_publishes_its_sound_on_the_pictures_clock(tmp_path: Path) -> None:
    clip = make_clip_with_sound(tmp_path / "clip.ts", seconds=2.0, fps=FPS, audio_codec="libmp3lame",
                                burst=BURST, flash=True)
    chunks: list[SoundChunk] = []
    source = PyAVSource(parse_source(str(clip)), sound=chunks.append)
    assert source.open().has_sound
    frames = list(source.frames())
    source.close()
    assert len(frames) == 2 * FPS
    wave = np.concatenate([c.samples for c in chunks], axis=1)
    assert wave.shape[0] == 2 and wave.dtype == np.float32
    assert abs(wave.shape[1] / SOUND_RATE - 2.0) < 0.1
    flash = next(f.pts_s for f in frames if f.image.mean() > 200)
    beep = _beeps(wave[0], chunks[0].pts_s)[0]
    assert abs(flash - BURST[0]) < 1e-3 and abs(beep - flash) < 0.03  # MP3's encoder delay is ~25 ms


def test_sound_is_not_read_unless_asked_for(tmp_path: Path) -> None:
    clip = make_clip_with_sound(tmp_path / "clip.mp4", seconds=1.0, fps=FPS)
    source = PyAVSource(parse_source(str(clip)))
    assert not source.open().has_sound
    source.close()
    silent = PyAVSource(parse_source(str(make_test_clip(tmp_path / "s.mp4", seconds=1.0, fps=FPS))),
                        sound=lambda chunk: None)
    assert not silent.open().has_sound
    silent.close()


def _tone(pts_s: float, seconds: float) -> SoundChunk:
    n = round(seconds * SOUND_RATE)
    wave = (0.5 * np.sin(2 * np.pi * 440 * (pts_s + np.arange(n) / SOUND_RATE))).astype(np.float32)
    return SoundChunk(np.stack([wave, wave]), pts_s)


def _written(tmp_path: Path, events: list[SoundChunk | tuple[float, float]]) -> LiveSound:
    """Play ``events`` into a LiveSound in a real Matroska file: a :class:`SoundChunk` reaches
    the feed, a ``(stream s, output s)`` pair is a picture written and followed."""
    feed = SoundFeed("test")
    with av.open(str(tmp_path / "s.mkv"), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        video.codec_context.time_base = Fraction(1, 1000)
        sound = LiveSound(container, "aac", feed)
        for event in events:
            if isinstance(event, SoundChunk):
                feed.put(event)
                continue
            pts_s, out_s = event
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(out_s * 1000), Fraction(1, 1000)
            container.mux(video.encode(frame))
            sound.follow(pts_s, out_s)
        container.mux(video.encode(None))
        sound.close()
    return sound


def test_missing_sound_becomes_silence_of_the_same_length(tmp_path: Path) -> None:
    lost_half_a_second = [_tone(0.0, 1.0), _tone(1.5, 1.0)]
    sound = _written(tmp_path, [*lost_half_a_second, *((i / FPS, 5.0 + i / FPS) for i in range(3 * FPS))])
    assert abs(sound.silence_s - 0.5) < 0.01 and sound.resyncs == 0
    _, wave, start_s = _sound(tmp_path / "s.mkv")
    assert abs(start_s - 5.0) < 0.03 and abs(len(wave) / SOUND_RATE - 2.5) < 0.05


def test_sound_follows_pictures_whose_clock_restarts(tmp_path: Path) -> None:
    # a source that reconnected 2 s later: its stream time starts again from 0, the output's runs on
    first = [_tone(0.0, 1.0), *((i / FPS, i / FPS) for i in range(FPS))]
    second = [_tone(0.0, 1.0), *((i / FPS, 3.0 + i / FPS) for i in range(FPS))]
    sound = _written(tmp_path, first + second)
    assert sound.resyncs == 1 and abs(sound.silence_s - 2.0) < 0.01
    _, wave, start_s = _sound(tmp_path / "s.mkv")
    assert abs(start_s) < 0.03 and abs(len(wave) / SOUND_RATE - 4.0) < 0.05
    assert np.abs(wave[round(1.1 * SOUND_RATE):round(2.9 * SOUND_RATE)]).max() < 0.01  # the gap is silent


def test_sound_from_before_the_first_picture_is_left_out(tmp_path: Path) -> None:
    sound = _written(tmp_path, [_tone(0.0, 1.0), _tone(1.0, 1.0), *((1.5 + i / FPS, i / FPS) for i in range(FPS))])
    _, wave, start_s = _sound(tmp_path / "s.mkv")
    assert abs(start_s) < 0.03 and abs(len(wave) / SOUND_RATE - 0.5) < 0.05 and sound.silence_s == 0.0


def test_a_silent_audio_stream_does_not_hold_the_pictures_back(tmp_path: Path) -> None:
    """A source that declares sound and sends none: silence is made up as the pictures go, so the
    muxer, which interleaves by time, keeps writing a live recording instead of holding it all."""
    path = tmp_path / "live.mp4"
    sizes = []
    with av.open(str(path), "w", options=FRAGMENTED_MP4) as container:
        video = container.add_stream("libx264", rate=FPS, options={"g": str(FPS), "tune": "zerolatency"})
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        video.codec_context.time_base = Fraction(1, 1000)
        sound = LiveSound(container, "aac", SoundFeed("test"))
        for i in range(5 * FPS):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i * 1000 // FPS, Fraction(1, 1000)
            container.mux(video.encode(frame))
            sound.follow(i / FPS, i / FPS)
            sizes.append(path.stat().st_size)
        assert sizes[-1] > 4 * sizes[FPS]  # written as it goes, not held until the end
        sound.close()
    _, wave, _ = _sound(path)
    assert abs(len(wave) / SOUND_RATE - (5 - MAX_LAG_S)) < 0.1 and np.abs(wave).max() < 0.01


def test_a_long_outage_leaves_a_gap_not_minutes_of_silence(tmp_path: Path) -> None:
    # the source comes back a minute later, its sound still missing: the wait is not filled
    before = [_tone(0.0, 1.0), *((i / FPS, i / FPS) for i in range(FPS))]
    after = [(i / FPS, 60.0 + i / FPS) for i in range(2 * FPS)]
    sound = _written(tmp_path, before + after)
    assert sound.silence_s < 2.0  # made up under the 2 s of pictures after it, not the 59 s before
    _, wave, _ = _sound(tmp_path / "s.mkv")
    assert len(wave) / SOUND_RATE < 3.1


def test_a_feed_keeps_the_newest_sound_when_not_drained() -> None:
    feed = SoundFeed("slow output", max_seconds=2.0)
    for i in range(50):
        feed.put(_tone(i * 0.1, 0.1))
    assert abs(feed.dropped_s - 3.0) < 1e-6
    kept = feed.take_until(10.0)
    assert kept[0].pts_s == pytest.approx(3.0) and len(kept) == 20 and len(feed) == 0


def test_the_bus_gives_every_output_all_the_sound() -> None:
    bus = SoundBus()
    assert not bus.wanted
    a, b = bus.subscribe("a"), bus.subscribe("b")
    bus.publish(_tone(0.0, 0.1))
    assert bus.wanted and len(a) == len(b) == 1
    assert a.take_until(0.0) == [] and len(a.take_until(0.05)) == 1
