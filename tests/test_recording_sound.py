"""A file run's recording keeps the source's sound, in sync with the pictures."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tests.conftest import run_cli
from tests.support.synth_video import make_clip_with_sound, make_test_clip

SECONDS, FPS, BURST = 2.0, 25, (1.0, 1.5)


def _sound(path: Path) -> tuple[str, float, float, float] | None:
    """(codec, end time s, when the tone starts s, its frequency Hz) of the first audio stream, or None."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        start, chunks = None, []
        for frame in container.decode(stream):
            if start is None:
                start = float(frame.pts * frame.time_base)
            chunks.append(frame.to_ndarray().reshape(-1, frame.samples)[0].astype(np.float32))
        rate = stream.codec_context.sample_rate
        codec = stream.codec_context.name
    wave = np.concatenate(chunks)
    if wave.dtype.kind == "f" and np.abs(wave).max() > 2:  # integer PCM
        wave = wave / 32768.0
    onset = start + np.argmax(np.abs(wave) > 0.1) / rate
    tone = np.argmax(np.abs(np.fft.rfft(wave))) * rate / len(wave)
    return codec, start + len(wave) / rate, onset, tone


def _frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize(("source", "codec", "out", "written_as"), [
    ("clip.mp4", "aac", "out.mp4", {"aac"}),            # copied
    ("clip.mkv", "pcm_s16le", "out.mp4", {"aac"}),      # MP4 holds no PCM: re-encoded
    ("clip.mp4", "aac", "out.webm", {"opus", "libopus"}),  # WebM holds Opus or Vorbis only
    ("clip.ts", "aac", "out.mkv", {"aac"}),             # MPEG-TS timestamps do not start at 0
])
def test_recording_keeps_the_sound_in_sync(tmp_path: Path, source: str, codec: str, out: str,
                                           written_as: set[str]) -> None:
    clip = make_clip_with_sound(tmp_path / source, seconds=SECONDS, fps=FPS, audio_codec=codec, burst=BURST)
    result = run_cli("watch", str(clip), "--out", str(tmp_path / out))
    assert result.returncode == 0, result.stderr
    assert _frames(tmp_path / out) == SECONDS * FPS
    sound = _sound(tmp_path / out)
    assert sound is not None, "the recording is silent"
    written, end_s, onset_s, tone_hz = sound
    assert written in written_as
    assert abs(tone_hz - 440) < 5
    assert abs(onset_s - BURST[0]) < 1 / FPS  # in sync within a frame
    assert abs(end_s - SECONDS) < 0.06


def test_sound_stops_where_the_pictures_stop(tmp_path: Path) -> None:
    clip = make_clip_with_sound(tmp_path / "clip.mp4", seconds=SECONDS, fps=FPS, burst=(0.0, SECONDS))
    result = run_cli("watch", str(clip), "--out", str(tmp_path / "out.mp4"), "--max-frames", "25")
    assert result.returncode == 0, result.stderr
    assert _frames(tmp_path / "out.mp4") == 25
    _, end_s, _, _ = _sound(tmp_path / "out.mp4")
    assert 0.95 <= end_s <= 1.05


def test_a_silent_source_gives_a_silent_recording(tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", seconds=1.0, width=320, height=240, fps=FPS)
    result = run_cli("watch", str(clip), "--out", str(tmp_path / "out.mp4"))
    assert result.returncode == 0, result.stderr
    assert _sound(tmp_path / "out.mp4") is None and _frames(tmp_path / "out.mp4") == FPS


def _onsets(times: list[float], on: list[bool]) -> list[float]:
    """When ``on`` turns true after at least 0.3 s off."""
    starts: list[float] = []
    last_on = -1.0
    for t, now in zip(times, on):
        if now:
            if t - last_on > 0.3:
                starts.append(t)
            last_on = t
    return starts


def _flashes_and_beeps(path: Path) -> tuple[int, list[float], list[float]]:
    """A recording's frame count, and when its flashes and its beeps start (s)."""
    with av.open(str(path)) as container:
        pictures = [(float(f.time), f.to_ndarray(format="gray").mean() > 200) for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        sound = [(float(f.time) + i / f.sample_rate, abs(v) > 0.1) for f in container.decode(audio=0)
                 for i, v in enumerate(f.to_ndarray().reshape(-1, f.samples)[0])]
    return len(pictures), _onsets(*zip(*pictures)), _onsets(*zip(*sound))


@pytest.mark.parametrize("out", ["out.mp4", "out.webm"])  # sound copied, sound re-encoded
def test_joined_recordings_keep_every_frame_and_their_sound_in_sync(tmp_path: Path, out: str) -> None:
    """``cat a.ts b.ts``: the second part's timestamps start again. The recording used to fail
    half-way ('Invalid argument': its sound went back in time) and lose the second part."""
    parts = [make_clip_with_sound(tmp_path / f"part{i}.ts", seconds=SECONDS, fps=FPS, burst=BURST, flash=True)
             for i in range(2)]
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    result = run_cli("watch", str(joined), "--out", str(tmp_path / out))
    assert result.returncode == 0 and "failed" not in result.stderr, result.stderr
    assert "the source's sound jumped back" in result.stderr
    frames, flashes, beeps = _flashes_and_beeps(tmp_path / out)
    assert frames == 2 * SECONDS * FPS
    assert flashes == pytest.approx([BURST[0], SECONDS + BURST[0]], abs=1e-3)
    assert beeps == pytest.approx(flashes, abs=1 / FPS), (flashes, beeps)


@pytest.mark.parametrize("out", ["out.avi", "out.mp4"])
def test_the_pictures_keep_their_times_beside_the_sound(tmp_path: Path, out: str) -> None:
    """AVI: the MP3 encoder stamps its first packet before 0 (its delay), and FFmpeg moved every picture
    after the first by it, rounded up to a whole frame: each was a frame late against the sound."""
    clip = make_clip_with_sound(tmp_path / "clip.mp4", seconds=SECONDS, fps=FPS, burst=BURST, flash=True)
    result = run_cli("watch", str(clip), "--out", str(tmp_path / out))
    assert result.returncode == 0, result.stderr
    frames, flashes, beeps = _flashes_and_beeps(tmp_path / out)
    assert frames == SECONDS * FPS
    assert flashes == pytest.approx([BURST[0]], abs=1e-3)
    assert beeps == pytest.approx(flashes, abs=1 / FPS), (flashes, beeps)


def _shifted(src: Path, dst: Path, by_s: float) -> Path:
    """``src`` (MPEG-TS) remuxed with every timestamp ``by_s`` later."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mpegts") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            shift = round(by_s / packet.time_base)
            packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return dst


@pytest.mark.parametrize("out", ["out.mp4", "out.webm"])  # sound copied, sound re-encoded
def test_a_recording_with_a_gap_keeps_it_and_its_sound_in_sync(tmp_path: Path, out: str) -> None:
    """A recorder paused for 30 s (``cat a.ts b.ts``, b's timestamps 30 s on): every frame and its
    sound stay at their time. The recording was written frame after frame at the stream's rate: the
    gap was cut out of the pictures, and the sound after it lost (4 s of video, one beep)."""
    gap_s = 30.0
    first = make_clip_with_sound(tmp_path / "a.ts", seconds=SECONDS, fps=FPS, burst=BURST, flash=True)
    second = make_clip_with_sound(tmp_path / "b0.ts", seconds=SECONDS, fps=FPS, burst=BURST, flash=True)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + _shifted(second, tmp_path / "b.ts", SECONDS + gap_s).read_bytes())
    result = run_cli("watch", str(joined), "--out", str(tmp_path / out))
    assert result.returncode == 0 and "jump" not in result.stderr, result.stderr
    frames, flashes, beeps = _flashes_and_beeps(tmp_path / out)
    assert frames == 2 * SECONDS * FPS
    assert flashes == pytest.approx([BURST[0], gap_s + SECONDS + BURST[0]], abs=1e-3)
    assert beeps == pytest.approx(flashes, abs=1 / FPS), (flashes, beeps)
