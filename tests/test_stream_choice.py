"""Which video stream of a file is analysed when it has several: cover art, the programs of an
MPEG-TS multiplex (``--video-stream``)."""
from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest

from stream_guard.errors import SourceError
from stream_guard.sources import PyAVSource, parse_source
from stream_guard.sources.video_stream_choice import parse_stream_id
from stream_guard.types import SoundChunk
from tests.conftest import run_cli
from tests.support.multi_program_ts import Program, make_multi_program_ts
from tests.support.synth_video import make_clip_with_sound

# two channels of one multiplex: program 1 (PIDs 0x100...) 640x360 with a 440 Hz tone, program 2
# (PIDs 0x200...) 480x270 with a 1500 Hz tone
CHANNELS = {0x100: ((640, 360), 440.0), 0x200: ((480, 270), 1500.0)}


def test_cover_art_is_never_taken_for_the_video(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An MP4 with embedded cover art (a download tool's thumbnail) has a second, larger "video"
    stream of one picture; the moving video is analysed, although it has fewer pixels."""
    path = tmp_path / "with_cover.mp4"
    with av.open(str(path), "w") as container:
        cover = container.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 1280, 720, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        picture = av.VideoFrame.from_ndarray(np.zeros((720, 1280, 3), np.uint8), format="rgb24")
        container.mux(list(cover.encode(picture)) + list(cover.encode(None)))
        for i in range(10):
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.full((240, 320, 3), 20 * i, np.uint8),
                                                                  format="rgb24")))
        container.mux(video.encode(None))
    with av.open(str(path)) as check:  # the file really offers both, the cover the larger
        assert sorted(s.codec_context.width for s in check.streams.video) == [320, 1280]
    source = PyAVSource(parse_source(str(path)))
    with caplog.at_level(logging.INFO, logger="stream_guard.sources"):
        info = source.open()
    try:
        frames = list(source.frames())
    finally:
        source.close()
    assert (info.width, info.height) == (320, 240)
    assert len(frames) == 10 and frames[-1].image.mean() > frames[0].image.mean()
    assert "video streams" not in caplog.text  # one moving video: nothing to choose


def test_an_animated_avif_is_read_as_its_animation(tmp_path: Path) -> None:
    """An animated AVIF holds its first picture as a stream of its own beside the animation: that one
    picture was analysed (1 frame, exit 0) and the animation never seen."""
    import cv2

    path = tmp_path / "sticker.avif"
    animation = cv2.Animation()
    animation.frames = [np.full((64, 96, 3), 30 * i, np.uint8) for i in range(6)]
    animation.durations = [100] * 6
    assert cv2.imwriteanimation(str(path), animation)
    with av.open(str(path)) as check:  # the file really offers both, the still first
        assert [s.frames for s in check.streams.video] == [1, 6]
    source = PyAVSource(parse_source(str(path)))
    source.open()
    try:
        frames = list(source.frames())
    finally:
        source.close()
    assert len(frames) == 6 and frames[-1].image.mean() > frames[0].image.mean()


@pytest.fixture(scope="module")
def multiplex(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("multiplex")
    programs = [Program(make_clip_with_sound(folder / f"{pid:#x}.mp4", seconds=2.0, width=w, height=h, tone_hz=hz),
                        number=n, first_pid=pid)
                for n, (pid, ((w, h), hz)) in enumerate(CHANNELS.items(), start=1)]
    path = make_multi_program_ts(folder / "multiplex.ts", programs)
    with av.open(str(path)) as check:  # FFmpeg sees both programs' streams, on their PIDs
        assert sorted((s.type, s.id) for s in check.streams) == [
            ("audio", 0x101), ("audio", 0x201), ("video", 0x100), ("video", 0x200)]
    return path


def _read(path: Path, video_stream: int | None) -> tuple[tuple[int, int], int, float]:
    """(width, height), frames and the strongest tone (Hz) of the sound read with them."""
    sound: list[SoundChunk] = []
    source = PyAVSource(parse_source(str(path)), sound=sound.append, video_stream=video_stream)
    info = source.open()
    try:
        frames = sum(1 for _ in source.frames())
    finally:
        source.close()
    samples = np.concatenate([c.samples[0] for c in sound])[:48000]
    tone_hz = float(np.argmax(np.abs(np.fft.rfft(samples)))) * 48000 / len(samples)
    return (info.width, info.height), frames, tone_hz


@pytest.mark.parametrize("pid", list(CHANNELS))
def test_each_program_of_a_multiplex_can_be_chosen_with_its_own_sound(multiplex: Path, pid: int) -> None:
    size, frames, tone_hz = _read(multiplex, video_stream=pid)
    (expected_size, expected_hz) = CHANNELS[pid]
    assert size == expected_size and frames == 50
    assert abs(tone_hz - expected_hz) < 5  # the sound of that program, not the other channel's


def test_a_multiplex_read_without_a_choice_warns_and_names_its_streams(
        multiplex: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stream_guard.sources"):
        size, _, tone_hz = _read(multiplex, video_stream=None)
    assert size == (640, 360) and abs(tone_hz - 440.0) < 5  # the largest, with its own sound
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "0x100 640x360, 0x200 480x270" in warnings[0] and "--video-stream" in warnings[0]


def test_a_stream_that_is_not_there_is_refused_with_the_list(multiplex: Path) -> None:
    with pytest.raises(SourceError, match="has no video stream 0x300 .*0x100 640x360, 0x200 480x270"):
        _read(multiplex, video_stream=0x300)
    result = run_cli("watch", str(multiplex), "--video-stream", "0x300", "--max-frames", "5")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert result.stderr_lines == [f"stream-guard: error: {multiplex}: has no video stream 0x300 (--video-stream); "
                                   "its video streams: 0x100 640x360, 0x200 480x270"]


def test_streams_without_ids_are_chosen_by_position(tmp_path: Path) -> None:
    """Matroska gives its streams no IDs (all 0): its video streams are named 0, 1, ... in order."""
    path = tmp_path / "two_videos.mkv"
    with av.open(str(path), "w") as container:
        streams = []
        for width, height in ((320, 240), (160, 120)):
            stream = container.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            streams.append(stream)
        for i in range(10):
            for stream in streams:
                picture = np.full((stream.height, stream.width, 3), 20 * i, np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        for stream in streams:
            container.mux(stream.encode(None))
    with av.open(str(path)) as check:
        assert [s.id for s in check.streams.video] == [0, 0]
    for wanted, size in ((0, (320, 240)), (1, (160, 120))):
        source = PyAVSource(parse_source(str(path)), video_stream=wanted)
        info = source.open()
        source.close()
        assert (info.width, info.height) == size


@pytest.mark.parametrize(("text", "value"), [("256", 256), ("0x100", 256), ("0X1fF", 511), ("0", 0)])
def test_stream_ids_are_read_in_decimal_or_hex(text: str, value: int) -> None:
    assert parse_stream_id(text) == value


@pytest.mark.parametrize("text", ["-1", "abc", "1.5", ""])
def test_a_bad_stream_id_is_a_usage_error(text: str) -> None:
    result = run_cli("watch", "demo", f"--video-stream={text}")
    assert result.returncode == 2 and "must be a stream ID" in result.stderr and "Traceback" not in result.stderr
