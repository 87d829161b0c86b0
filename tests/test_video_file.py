"""`--out` recordings: a file's frames at its own rate; a live source's frames at the times they
arrived, written as they go so that a killed run keeps all but its last seconds."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from stream_guard.outputs.video_file import LIVE_KEYFRAME_S, VideoFileSink, add_timed_h264_stream, mux_at_ms
from stream_guard.types import FrameResult
from tests.conftest import REPO, run_cli
from tests.support.alert_frames import INFO, result
from tests.support.rtsp_fixture import RtspServerProcess
from tests.support.synth_video import make_test_clip

SHADE = 4  # grey levels between frames: the encoder may move a flat grey by a level or two


def grey_frame(index: int, arrived_s: float) -> FrameResult:
    """Frame ``index`` as grey ``SHADE * index``, received at ``arrived_s`` on the monotonic clock."""
    item = result(index, ())
    image = np.full_like(item.annotated, SHADE * index % 256)
    return replace(item, frame=replace(item.frame, pixels=image, wallclock_s=arrived_s), annotated=image)


def decoded(path: Path) -> list[tuple[float, int]]:
    """(time in the file, index of the grey frame it shows) for every frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(float(f.pts * stream.time_base), round(float(f.to_ndarray(format="gray").mean()) / SHADE))
                for f in container.decode(stream)]


def record(path: Path, arrivals: list[float], live: bool, segment_s: float | None = None,
           keep: int | None = None) -> VideoFileSink:
    """Frame ``i`` (grey ``SHADE * i``) arriving at ``arrivals[i]``, through a whole run of the sink."""
    sink = VideoFileSink(path, segment_s=segment_s, keep=keep)
    sink.open(replace(INFO, is_live=live))
    try:
        for i, t in enumerate(arrivals):
            sink.write(grey_frame(i, t))
    finally:
        sink.close()
    return sink


BARS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 150, 100]], np.uint8)  # and a skin tone


def _write_bars(path: Path, writer: str) -> None:
    """Colour bars (one 32-pixel column each, 64 high), 5 frames, through the recording sink or
    through the millisecond-stamped stream that alert clips, --stream-to and the live view use."""
    image = np.ascontiguousarray(np.repeat(np.repeat(BARS[None], 32, axis=1), 64, axis=0))
    if writer == "sink":
        sink = VideoFileSink(path)
        sink.open(replace(INFO, width=128, height=64, is_live=False))
        item = result(0, (), width=128, height=64)
        for _ in range(5):
            sink.write(replace(item, annotated=image))
        sink.close()
        return
    with av.open(str(path), "w") as container:
        stream = add_timed_h264_stream(container, 10.0, 128, 64)
        for i in range(5):
            mux_at_ms(container, stream, image, 100 * i)
        container.mux(stream.encode(None))


@pytest.mark.parametrize("suffix, writer", [(".mp4", "sink"), (".mkv", "sink"), (".webm", "sink"),
                                            (".mp4", "timed")])
def test_recordings_say_they_are_bt709_so_players_show_their_colours(tmp_path: Path, suffix: str,
                                                                     writer: str) -> None:
    out = tmp_path / f"bars{suffix}"
    _write_bars(out, writer)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        assert (context.color_primaries, context.color_trc, context.colorspace, context.color_range) == (1, 1, 1, 1)
        frame = next(container.decode(stream))
    # as the flags say, and as a player that takes HD for BT.709 whatever the flags (FFmpeg's own
    # reading of an unflagged file is BT.601, which is how it used to be coded: a 255 green read as 215)
    for read_as in (None, "itu709"):
        shown = frame.reformat(format="rgb24", src_colorspace=read_as).to_ndarray()
        centres = shown[32, 16::32].astype(int)
        assert np.abs(centres - BARS).max() <= 4, (read_as, centres.tolist())


def test_a_file_recording_has_every_frame_at_the_source_rate(tmp_path: Path) -> None:
    out = tmp_path / "file.mp4"
    record(out, [100.0] * 12, live=False)  # arrival times do not matter for a file
    assert decoded(out) == [(pytest.approx(i / INFO.fps), i) for i in range(12)]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov", ".webm"])
def test_a_live_recording_plays_at_the_speed_it_arrived(tmp_path: Path, suffix: str) -> None:
    """Skipped frames (0.3 s apart), a 3 s outage and two frames in the same millisecond:
    each frame is where it arrived, to the millisecond, and none is lost."""
    arrivals = [50.0, 50.1, 50.2, 50.5, 50.8, 53.8, 53.9, 53.9, 54.0]
    out = tmp_path / f"live{suffix}"
    record(out, arrivals, live=True)
    frames = decoded(out)
    assert [index for _, index in frames] == list(range(len(arrivals)))
    expected = [round(t - arrivals[0], 3) for t in arrivals]
    expected[7] += 0.001  # the second frame of a millisecond goes one tick later
    assert [t for t, _ in frames] == pytest.approx(expected, abs=0.0015)


def test_a_live_avi_goes_to_the_nearest_frame_tick(tmp_path: Path) -> None:
    arrivals = [7.0, 7.1, 7.42, 9.0, 9.0]
    out = tmp_path / "live.avi"
    record(out, arrivals, live=True)
    frames = decoded(out)
    assert [t for t, _ in frames] == pytest.approx([0.0, 0.1, 0.4, 2.0, 2.1])  # ticks of 1/10 s
    greys = [index for _, index in frames]  # MPEG-4 part 2 keeps a flat grey only roughly
    assert greys == sorted(greys) and greys[-1] - greys[0] >= 3


KILLED_WRITER = """
import os, signal, sys
from dataclasses import replace
sys.path.insert(0, {repo!r})
from stream_guard.outputs.video_file import VideoFileSink
from tests.support.alert_frames import INFO
from tests.test_video_file import grey_frame
sink = VideoFileSink({path!r})
sink.open(replace(INFO, is_live=True))
for i in range({frames}):
    sink.write(grey_frame(i, i / INFO.fps))
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov", ".webm", ".avi"])
def test_a_killed_live_recording_keeps_all_but_its_last_keyframe_interval(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"killed{suffix}"
    n = 60  # 6 s at 10 fps (grey levels up to 240)
    code = KILLED_WRITER.format(repo=str(REPO), path=str(out), frames=n)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    frames = decoded(out)
    lost_at_most = round(LIVE_KEYFRAME_S * INFO.fps) + 1
    assert n - lost_at_most <= len(frames) <= n  # AVI, written frame by frame, loses none
    greys = [index for _, index in frames]
    assert greys == sorted(greys) and abs(greys[-1] - (len(frames) - 1)) <= 1


def test_a_live_run_killed_mid_stream_leaves_a_playable_recording(two_faces_clip: Path, placeholder_model: Path,
                                                                  tmp_path: Path) -> None:
    """The real command on a real RTSP stream, killed with SIGKILL: the recording plays, holds
    the frames the run had analysed up to its last keyframe interval, and at the stream's pace."""
    out, events = tmp_path / "rec.mp4", tmp_path / "events.jsonl"
    with RtspServerProcess(two_faces_clip, live=True) as server:
        proc = subprocess.Popen([sys.executable, "-m", "stream_guard", "watch", server.url, "--model",
                                 str(placeholder_model), "--out", str(out), "--events", str(events)],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            analysed = wait_for_frames(events, proc, at_least=150)  # 5 s of the 30 fps stream
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    frames = decoded(out)
    assert len(frames) >= analysed - round(LIVE_KEYFRAME_S * 30) - 5
    span = frames[-1][0] - frames[0][0]
    assert span == pytest.approx((len(frames) - 1) / 30, rel=0.2)  # paced by the server at 30 fps


def wait_for_frames(events: Path, proc: subprocess.Popen, at_least: int, timeout: float = 90) -> int:
    """Wait until the events show that frame ``at_least`` was analysed; the highest frame index seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        lines = events.read_text().splitlines(keepends=True) if events.exists() else []
        seen = [json.loads(line).get("frame_index", 0) for line in lines if line.endswith("\n")]
        if seen and max(seen) >= at_least:
            return max(seen)
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} frames analysed in {timeout} s")


def test_a_file_recording_splits_into_segments_of_whole_frames(tmp_path: Path) -> None:
    sink = record(tmp_path / "rec.mp4", [0.0] * 35, live=False, segment_s=1.0)
    files = sorted(tmp_path.glob("rec_*.mp4"))
    assert files == sorted(sink.files) and len(files) == 4  # names sort in the order they were written
    assert all(re.fullmatch(r"rec_\d{8}T\d{6}\.\d{3}Z\.mp4", f.name) for f in files)
    pieces = [decoded(f) for f in files]
    assert [len(p) for p in pieces] == [10, 10, 10, 5]
    assert [index for piece in pieces for _, index in piece] == list(range(35))  # none lost or repeated
    assert all(piece[0][0] == 0.0 for piece in pieces)


def test_a_live_recording_splits_on_the_arrival_clock(tmp_path: Path) -> None:
    """Segments of 2 s: the 0.5 s gap stays inside the first, the 4 s outage ends it."""
    arrivals = [10.0, 10.5, 11.0, 11.9, 12.0, 16.0, 16.1]
    sink = record(tmp_path / "cam.mkv", arrivals, live=True, segment_s=2.0)
    pieces = [decoded(f) for f in sink.files]
    assert [[index for _, index in p] for p in pieces] == [[0, 1, 2, 3], [4], [5, 6]]
    assert [t for t, _ in pieces[0]] == pytest.approx([0.0, 0.5, 1.0, 1.9], abs=0.0015)
    assert [t for t, _ in pieces[2]] == pytest.approx([0.0, 0.1], abs=0.0015)


def test_only_the_newest_segments_are_kept(tmp_path: Path) -> None:
    """Segments of an earlier run count; files not named as this recording's are never touched."""
    earlier = [tmp_path / "rec_20200101T000000.000Z.mp4", tmp_path / "rec_20200101T000100.000Z.mp4"]
    others = [tmp_path / "rec.mp4", tmp_path / "other_20200101T000000.000Z.mp4", tmp_path / "rec_notes.mp4",
              tmp_path / "rec_20200101T000000.000Z.mkv"]
    for path in earlier + others:
        path.write_bytes(b"x")
    sink = record(tmp_path / "rec.mp4", [0.0] * 30, live=False, segment_s=1.0, keep=2)
    assert sorted(p for p in tmp_path.iterdir() if p not in others) == sink.files[-2:]
    assert all(p.read_bytes() == b"x" for p in others)
    assert [len(decoded(f)) for f in sink.files[-2:]] == [10, 10]


def test_segment_options_need_out_and_each_other(tmp_path: Path) -> None:
    for args, message in [(["--out-segment", "60"], "--out-segment needs --out"),
                          (["--out", str(tmp_path / "r.mp4"), "--out-keep", "3"], "--out-keep needs --out-segment")]:
        result = run_cli("watch", "demo", *args)
        assert result.returncode == 2 and result.stderr_lines == [f"stream-guard: error: {message}"]
    short = run_cli("watch", "demo", "--out", str(tmp_path / "r.mp4"), "--out-segment", "0.5")
    assert short.returncode == 2 and "must be at least 1 second" in short.stderr_lines[-1]


def test_a_live_run_keeps_the_recording_it_finds_under_its_name(tmp_path: Path) -> None:
    """A monitor restarted after a crash: the killed run's file is moved aside (named by its
    modification time), not overwritten. A file run makes its video anew."""
    out = tmp_path / "rec.mp4"
    out.write_bytes(b"earlier run")
    os.utime(out, (1_700_000_000.25, 1_700_000_000.25))
    record(out, [1.0, 1.1], live=True)
    assert (tmp_path / "rec_20231114T221320.250Z.mp4").read_bytes() == b"earlier run"
    assert len(decoded(out)) == 2
    record(out, [0.0] * 3, live=False)
    assert len(decoded(out)) == 3 and len(list(tmp_path.iterdir())) == 2


def test_a_source_that_changes_shape_is_letterboxed_not_stretched(tmp_path: Path) -> None:
    """INFO is 64x48 (4:3); the source then sends 48x48 white squares: they stay square, between black bars."""
    sink = VideoFileSink(tmp_path / "out.mp4")
    sink.open(INFO)
    try:
        sink.write(grey_frame(0, 0.0))
        square = np.full((48, 48, 3), 255, np.uint8)
        item = result(1, ())
        sink.write(replace(item, frame=replace(item.frame, pixels=square), annotated=square))
    finally:
        sink.close()
    with av.open(str(tmp_path / "out.mp4")) as container:
        last = [f.to_ndarray(format="gray") for f in container.decode(video=0)][-1]
    assert last.shape == (48, 64)
    assert last[:, :6].max() < 30 and last[:, -6:].max() < 30  # 8-pixel bars left and right
    assert last[4:-4, 12:-12].min() > 225


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi"])
def test_a_live_recording_whose_sound_starts_late_keeps_it_in_place(tmp_path: Path, suffix: str) -> None:
    """Sound that starts after the pictures (a sound device opened after the camera, a stream whose audio
    joins late) stays where it was: a fragmented MP4 or an AVI would otherwise move its first packet to
    the start of the file, and everything after with it (a beep at 1.0 s came out at 0.55 s)."""
    from stream_guard.sound_bus import SoundFeed
    from stream_guard.types import SOUND_RATE, SoundChunk

    block = SOUND_RATE // 50  # 20 ms chunks from 0.46 s on, a beep from 1.0 to 1.2 s
    chunks = [SoundChunk(np.full((2, block), 0.5 if 1.0 <= 0.46 + k / 50 < 1.2 else 0.0, np.float32), 0.46 + k / 50)
              for k in range(97)]
    feed = SoundFeed("--out")
    sink = VideoFileSink(tmp_path / f"late{suffix}", sound=feed)
    sink.open(replace(INFO, is_live=True, fps=25.0))
    try:
        for i in range(60):  # 2.4 s of pictures at 25 fps, stamped by arrival from 100 s
            while chunks and chunks[0].pts_s < i / 25:  # the sound arrives with the pictures
                feed.put(chunks.pop(0))
            item = grey_frame(i, 100.0 + i / 25)
            sink.write(replace(item, frame=replace(item.frame, pts_s=i / 25)))
    finally:
        sink.close()
    with av.open(str(tmp_path / f"late{suffix}")) as container:
        wave, first = [], None
        for frame in container.decode(audio=0):
            first = frame.time if first is None else first
            wave.append(frame.to_ndarray().reshape(-1, frame.samples)[0])
    samples = np.concatenate(wave)
    onset = first + np.flatnonzero(np.abs(samples) > 0.1)[0] / SOUND_RATE
    assert onset == pytest.approx(1.0, abs=0.03), suffix


def test_a_segmented_recording_starts_again_after_the_disk_refused_a_segment(tmp_path: Path,
                                                                           placeholder_model: Path) -> None:
    """A monitor's recorder on a disk that filled up stopped for the rest of the run (days, for a
    service). A segment that cannot be written is now given up and a new one started a little later; the
    run ends saying a stretch was lost. The disk's refusal is real: a file-size limit (RLIMIT_FSIZE) that
    the first seconds, noise that compresses badly, go over and the calm rest does not."""
    import resource

    rng = np.random.default_rng(0)

    def noise_then_calm(i: int) -> np.ndarray:
        if i < 20:
            return rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
        calm = np.full((180, 320, 3), 90, np.uint8)
        calm[60:120, 3 * i % 260:3 * i % 260 + 60] = 200
        return calm

    clip = make_test_clip(tmp_path / "clip.mp4", seconds=6.0, width=320, height=180, fps=10, draw=noise_then_calm)
    limit = 100_000  # bytes a file may have
    folder = tmp_path / "rec"
    folder.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "stream_guard", "watch", str(clip), "--model", str(placeholder_model), "--out",
         str(folder / "rec.mp4"), "--out-segment", "1"], capture_output=True, text=True, timeout=120, cwd=REPO,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert proc.returncode == 5, proc.stderr
    assert "cannot write ([Errno 27] File too large" in proc.stderr
    assert "recording again in a new segment in 1 s" in proc.stderr
    assert "1 stretch(es) of the recording could not be written" in proc.stderr
    assert "60 frames in" in proc.stderr  # the analysis went on meanwhile
    files = sorted(folder.glob("rec_*.mp4"))
    assert files[0].stat().st_size == limit  # the segment the disk refused
    later = [len(decoded(f)) for f in files[1:]]
    assert len(later) >= 4 and sum(later) >= 35, later  # and the recording went on after it


_LIVE_RECORDING_ON_A_DISK_THAT_FILLS_UP = """
import resource, sys
from dataclasses import replace
from pathlib import Path
from stream_guard.outputs import video_file
from tests.support.alert_frames import INFO
from tests.test_video_file import grey_frame

video_file.SEGMENT_RETRY_S = 1.0
sink = video_file.VideoFileSink(Path(sys.argv[1]))
sink.open(replace(INFO, is_live=True))
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (2200, hard))  # the disk takes 2200 bytes...
for i in range(50):  # a fragment and a half (a keyframe every 2 s)
    sink.write(grey_frame(i, 100.0 + i / 10))
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # ...then there is room again
for i in range(50, 80):
    sink.write(grey_frame(i, 100.0 + i / 10))
try:
    sink.close()
except Exception as e:
    print(e)
"""


def test_a_live_recording_the_disk_refuses_goes_on_once_there_is_room(tmp_path: Path) -> None:
    """A live run's single --out file on a disk that filled up: what it got is kept under another name and
    the recording goes on under its own once there is room (tried again a second later here). The refusal
    is real: a file-size limit (RLIMIT_FSIZE), raised again mid-run."""
    out = tmp_path / "cam.mp4"
    proc = subprocess.run([sys.executable, "-c", _LIVE_RECORDING_ON_A_DISK_THAT_FILLS_UP, str(out)],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "recording again as cam.mp4, what it got moved aside, in 1 s" in proc.stderr
    assert proc.stdout.strip() == f"--out {out}: 1 stretch(es) of the recording could not be written (the errors " \
                                  "are above)"
    aside = sorted(tmp_path.glob("cam_*.mp4"))
    assert len(aside) == 1
    first = []  # fragmented: what the refused file got plays up to where it was cut
    with av.open(str(aside[0])) as container, contextlib.suppress(av.error.InvalidDataError):
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            first += [round(float(f.to_ndarray(format="gray").mean()) / SHADE) for f in stream.decode(packet)]
    assert first[:20] == list(range(20)) and first == list(range(len(first)))  # its first fragment at least
    then = decoded(out)
    shades = 256 // SHADE  # grey wraps around: frame 64 is frame 0's grey
    assert [i for _, i in then] == [i % shades for i in range(then[0][1], 80)] and then[0][1] <= 61  # back in 1 s
