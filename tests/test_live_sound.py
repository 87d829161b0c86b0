"""A live source's sound, carried to the live outputs (--out, --stream-to) in sync with the pictures."""
from __future__ import annotations

import io
import os
import socket
import threading
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from stream_guard.outputs.http.live_sound_mp4 import LiveSoundMp4Encoder
from stream_guard.outputs.http.options import ServeOptions
from stream_guard.outputs.http.sink import LiveViewSink
from stream_guard.outputs.live_sound import MAX_LAG_S, LiveSound
from stream_guard.outputs.video_file import FRAGMENTED_MP4
from stream_guard.sound_bus import SoundBus, SoundFeed
from stream_guard.sources import PyAVSource, parse_source
from stream_guard.types import SOUND_RATE, Frame, FrameResult, SoundChunk, StreamInfo
from tests.conftest import run_cli
from tests.test_http_live_view import LiveRun, get
from tests.support.alert_frames import PROVENANCE
from tests.support.stream_receiver import free_port
from tests.support.synth_video import make_clip_with_sound, make_test_clip
from tests.support.ts_sender import UdpTsSender

FPS = 25
BURST = (1.0, 1.2)  # a white flash and a beep, once per 3 s loop of the clip
SYNC_TOLERANCE_S = 1 / FPS + 0.03  # a frame (the live queue may skip the flash's first) and a bit


def _pictures(path: Path) -> list[tuple[float, bool]]:
    """(time, is white) of each of the recording's pictures."""
    with av.open(str(path)) as container:
        return [(f.time, f.to_ndarray(format="rgb24").mean() > 200) for f in container.decode(video=0)]


def _flashes(path: Path, pictures: list[tuple[float, bool]] | None = None) -> list[float]:
    """Times at which the recording's pictures turn white (its first, if it starts in a flash)."""
    times = _pictures(path) if pictures is None else pictures
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
    pictures = _pictures(path)
    flashes, beeps = _flashes(path, pictures), _beeps(wave, start_s)
    assert flashes and beeps, (flashes, beeps)
    # Either track may run on a little past the other's end: an event there has no partner to check.
    pictures_end, sound_end = pictures[-1][0], start_s + len(wave) / SOUND_RATE
    for beep in (b for b in beeps if b < pictures_end - SYNC_TOLERANCE_S):
        assert any(abs(beep - f) < SYNC_TOLERANCE_S for f in flashes), (flashes, beeps)
    for flash in (f for f in flashes if f < sound_end - SYNC_TOLERANCE_S):
        assert any(abs(flash - b) < SYNC_TOLERANCE_S for b in beeps), (flashes, beeps)


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


def _read_for(url: str, seconds: float, into: dict[str, bytes], key: str) -> None:
    with urllib.request.urlopen(url, timeout=60) as response:
        into[key + " type"] = response.headers["Content-Type"].encode()
        into[key + " sound"] = (response.headers["X-Sound"] or "").encode()
        data, until = b"", time.monotonic() + seconds
        while time.monotonic() < until and (chunk := response.read1(65536)):
            data += chunk
        into[key] = data


def test_the_live_view_sends_the_sound_beside_its_video_in_sync(live_source: str, tmp_path: Path,
                                                              placeholder_model: Path) -> None:
    """``/stream.mp4`` and ``/sound.mp4``, read at once as a page does, decoded: each beep plays with its flash."""
    with LiveRun("watch", live_source, "--model", str(placeholder_model), "--serve", "127.0.0.1:0") as run:
        base = run.wait_for_url()
        got: dict[str, bytes] = {}
        video = threading.Thread(target=_read_for, args=(f"{base}/stream.mp4", 7.0, got, "video"))
        video.start()
        time.sleep(0.3)  # the page asks for the sound once the video's headers say there is some
        _read_for(f"{base}/sound.mp4", 6.5, got, "sound")
        video.join(60)
    assert got["video sound"] == b'audio/mp4; codecs="mp4a.40.2"'
    assert got["sound type"] == b'audio/mp4; codecs="mp4a.40.2"'
    (tmp_path / "video.mp4").write_bytes(got["video"])
    (tmp_path / "sound.mp4").write_bytes(got["sound"])
    flashes = _flashes(tmp_path / "video.mp4")
    sound = _sound(tmp_path / "sound.mp4")
    assert sound is not None
    codec, wave, start_s = sound
    beeps = _beeps(wave, start_s)
    assert codec == "aac" and len(flashes) >= 1 and beeps, (flashes, beeps)
    # the sound joined later than the video: pair each beep with the flash nearest it
    for beep in beeps:
        assert min(abs(beep - flash) for flash in flashes) < SYNC_TOLERANCE_S, (flashes, beeps)
    assert len(beeps) >= len([f for f in flashes if f >= start_s + 0.1]), (flashes, beeps, start_s)


def test_the_dashboard_plays_the_sound_with_the_video_in_chromium(live_source: str, placeholder_model: Path,
                                                                  browser) -> None:
    errors: list[str] = []
    with LiveRun("watch", live_source, "--model", str(placeholder_model), "--serve", "127.0.0.1:0") as run:
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{run.wait_for_url()}/")
        page.wait_for_function("window.sgVideo.mode === 'h264' && window.sgVideo.sound === true", timeout=60_000)
        button = page.locator("#sound-toggle")
        assert button.is_visible() and page.evaluate("document.getElementById('live-video').muted")
        button.click()  # a person asks for the sound
        page.wait_for_function("(() => { const v = document.getElementById('live-video');"
                               " return !v.muted && v.currentTime > 2 && v.webkitAudioDecodedByteCount > 0 &&"
                               " v.webkitVideoDecodedByteCount > 0; })()", timeout=60_000)
        before = page.evaluate("[document.getElementById('live-video').currentTime, window.sgVideo]")
        time.sleep(1.0)
        later = page.evaluate("document.getElementById('live-video').currentTime")
        label = button.text_content()
    played, state = before
    assert state["buffers"] == 2 and label == "Sound off", (state, label)
    assert later > played + 0.5, "the video stopped playing with its sound"
    assert state["lag_s"] < 1.5, state  # behind the newest moment both sound and pictures have reached
    assert not errors, errors


def test_a_live_view_without_sound_says_so(tmp_path: Path, placeholder_model: Path) -> None:
    clip = make_test_clip(tmp_path / "silent.mp4", seconds=20.0, width=320, height=240, fps=FPS)
    with LiveRun("watch", str(clip), "--realtime", "--model", str(placeholder_model), "--serve", "127.0.0.1:0") as run:
        base = run.wait_for_url()
        got: dict[str, bytes] = {}
        _read_for(f"{base}/stream.mp4", 1.0, got, "video")
        status, _, _ = get(f"{base}/sound.mp4")
    assert got["video"] and got["video sound"] == b""
    assert status == 404


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



def test_the_live_views_sound_track_starts_at_its_videos_first_frame_to_the_sample() -> None:
    """A fragmented MP4 has no edit list: the AAC priming and the muxer's move of the first packet
    to time 0 would shift every sound unless the track starts where the video does."""
    feed = SoundFeed("--serve")
    encoder = LiveSoundMp4Encoder(feed, t0_s=100.0)  # the video's first frame came at 100 s (monotonic)
    beep = np.zeros((2, SOUND_RATE), np.float32)
    beep[:, SOUND_RATE // 2:SOUND_RATE // 2 + 2400] = 0.5  # at stream time 5.5 s
    feed.put(SoundChunk(beep, 5.0))
    data: list[bytes] = []
    for k in range(40):  # pictures of stream time 5.0 + k/25 came 0.3 s after the first one, and on
        data += [f.data for f in encoder.follow(5.0 + k / FPS, 100.3 + k / FPS)]
    data += [f.data for f in encoder.close()]
    assert encoder.init is not None and encoder.codec == "mp4a.40.2"
    with av.open(io.BytesIO(encoder.init + b"".join(data))) as container:
        wave = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio=0)])
    onset = np.flatnonzero(np.abs(wave) > 0.1)[0] / SOUND_RATE
    assert abs(onset - 0.8) < 0.003, onset  # the beep plays 0.3 + 0.5 s after the video's first frame


def test_the_live_view_drops_the_sound_while_nobody_watches_its_video() -> None:
    """Nothing is encoded then, but the sound is taken as the pictures go, never left to pile up."""
    feed = SoundFeed("--serve")
    sink = LiveViewSink(ServeOptions(host="127.0.0.1", port=0), PROVENANCE,
                        announce=open(os.devnull, "w"), sound=feed)
    sink.open(StreamInfo("cam", 64, 64, FPS, None, True, has_sound=True))
    try:
        image = np.zeros((64, 64, 3), np.uint8)
        for k in range(15 * FPS):  # 15 s: more than the feed holds
            feed.put(_tone(k / FPS, 1 / FPS))
            frame = Frame(pixels=image, index=k, pts_s=k / FPS, wallclock_s=k / FPS, source_id="cam")
            sink.write(FrameResult(frame=frame, annotated=image, faces=(), detected=False, latency_ms=1.0, fps=FPS))
        assert feed.dropped_s == 0 and len(feed) <= 6  # the sound within LEAD_S of the newest picture
        assert sink._sound_mp4 is None
    finally:
        sink.close()
        sink._announce.close()
