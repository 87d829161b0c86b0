"""File runs end to end with real PyAV, the real face detector and a real ONNX Runtime model."""
from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import av
import numpy as np

from stream_guard.config import ModelOptions, RunConfig, SourceOptions
from stream_guard.pipeline import Pipeline
from tests.conftest import run_cli
from tests.support.terminal import run_on_a_terminal

EVENT_FIELDS = {"type", "stream_time_s", "wall_time", "track_id", "box", "score", "verdict"}


def _count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_watch_file_writes_every_frame_and_events(two_faces_clip: Path, placeholder_model: Path,
                                                       tmp_path: Path) -> None:
    out, events = tmp_path / "out.mp4", tmp_path / "ev.jsonl"
    result = run_cli("watch", str(two_faces_clip), "--out", str(out), "--events", str(events),
                     "--model", str(placeholder_model))
    assert result.returncode == 0, result.stderr
    assert _count_frames(out) == _count_frames(two_faces_clip) == 90
    records = _events(events)
    assert records[0]["type"] == "start" and records[-1]["type"] == "summary"
    tracks = [r for r in records if r["type"] == "track"]
    assert tracks, "no scored track updates"
    for r in tracks:
        assert EVENT_FIELDS <= r.keys()
        x1, y1, x2, y2 = r["box"]
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360
        assert 0.0 <= r["score"] <= 1.0
        assert r["verdict"] in ("real", "fake", "uncertain")
    summary = records[-1]
    assert summary["frames_processed"] == 90 and summary["frames_dropped"] == 0
    assert "UNTRAINED" in result.stderr

    # again with the same names: the events are a log and get a second run; a file's video is made anew
    again = run_cli("watch", str(two_faces_clip), "--out", str(out), "--events", str(events),
                    "--model", str(placeholder_model))
    assert again.returncode == 0, again.stderr
    both = _events(events)
    assert both[:len(records)] == records and len(both) > len(records)
    assert both[len(records)]["type"] == "start" and both[-1]["type"] == "summary"
    assert _count_frames(out) == 90 and sorted(p.name for p in tmp_path.iterdir()) == ["ev.jsonl", "out.mp4"]


def test_watch_shows_a_files_frames_on_a_terminal(two_faces_clip: Path, placeholder_model: Path,
                                                  tmp_path: Path) -> None:
    """watch FILE --out printed nothing until the end of a long file; on a terminal a bar counts its frames
    (not when the events go to the same terminal, nor to a log or a pipe)."""
    out = tmp_path / "out.mp4"
    code, shown = run_on_a_terminal(["watch", str(two_faces_clip), "--out", str(out), "--model",
                                     str(placeholder_model)])
    assert code == 0, shown
    bars = [line for line in shown.replace("\r", "\n").splitlines() if "frame/s" in line]
    assert any(re.search(r"two_faces\.mp4: +\d+%\|.*\| +[1-9]\d*/90 \[", line) for line in bars), shown
    assert _count_frames(out) == 90
    code, shown = run_on_a_terminal(["watch", str(two_faces_clip), "--events", "-", "--model",
                                     str(placeholder_model)])
    assert code == 0 and '"type":"start"' in shown and "frame/s" not in shown, shown
    assert "frame/s" not in run_cli("watch", str(two_faces_clip), "--model", str(placeholder_model)).stderr


def test_two_moving_faces_keep_two_stable_ids(two_faces_clip: Path, placeholder_model: Path) -> None:
    seen: dict[int, list[tuple[int, float, float]]] = defaultdict(list)

    def collect(result) -> None:
        for face in result.faces:
            cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
            seen[face.track_id].append((result.frame.index, cx, cy))

    config = RunConfig(source=SourceOptions(str(two_faces_clip)), model=ModelOptions(model_dir=placeholder_model))
    pipeline = Pipeline(config, on_result=collect)
    summary = pipeline.run()
    assert summary.frames_processed == 90
    assert len(seen) == 2, f"expected two track ids, got {sorted(seen)}"
    upper, lower = sorted(seen.values(), key=lambda pts: np.mean([p[2] for p in pts]))
    for track, direction in ((upper, +1), (lower, -1)):
        assert len(track) >= 85  # the face is followed on (nearly) every frame
        xs = np.array([p[1] for p in track])
        assert direction * (xs[-1] - xs[0]) > 300  # it really crossed the frame
        assert np.all(direction * np.diff(xs) > -3)  # and never jumped back to the other face
        ys = np.array([p[2] for p in track])
        assert ys.max() - ys.min() < 20  # stayed on its own row


def test_faces_are_scored_at_the_model_rate_with_work_spread_over_frames(two_faces_clip: Path,
                                                                         placeholder_model: Path) -> None:
    scored: list[set[int]] = []
    config = RunConfig(source=SourceOptions(str(two_faces_clip)), model=ModelOptions(model_dir=placeholder_model))
    Pipeline(config, on_result=lambda r: scored.append({f.track_id for f in r.faces if f.scored})).run()
    per_face = defaultdict(int)
    for ids in scored:
        for i in ids:
            per_face[i] += 1
    # 3 s at the placeholder's 10 Hz: about 30 windows per face, not 90 (the CNN runs per sample)...
    assert len(per_face) == 2 and all(25 <= n <= 32 for n in per_face.values()), dict(per_face)
    # ...and on a CPU the two faces' crops are spread over the frames of each sampling period
    assert max(len(ids) for ids in scored[5:]) == 1


def test_scorer_batches_faces_in_one_call(placeholder_model: Path) -> None:
    from stream_guard.model.contract import load_model_spec
    from stream_guard.model.scorer import FaceScorer

    scorer = FaceScorer(load_model_spec(placeholder_model), ["CPUExecutionProvider"])
    calls: list[int] = []
    encode = scorer.encode
    scorer.encode = lambda crops, regions=(): calls.append(len(crops)) or encode(crops, regions)  # type: ignore[method-assign]
    memories = [scorer.new_memory() for _ in range(3)]
    crops = np.zeros((3, scorer.spec.input_size, scorer.spec.input_size, 3), np.uint8)
    scorer.score(memories, crops, 0.0)
    assert calls == [3] and all(m.n_scores == 1 for m in memories)


def test_demo_command_writes_its_outputs(tmp_path: Path) -> None:
    out_dir = tmp_path / "demo"
    result = run_cli("demo", "--seconds", "2", "--out-dir", str(out_dir))
    assert result.returncode == 0, result.stderr
    assert _count_frames(out_dir / "demo.mp4") == 60
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["frames_processed"] == 60
    assert len(summary["tracks"]) == 2  # the original face and its self-blended copy
    assert str(out_dir.resolve()) in result.stderr
    again = run_cli("demo", "--seconds", "1", "--out-dir", str(out_dir))
    assert again.returncode == 0, again.stderr
    records = _events(out_dir / "events.jsonl")  # the demo's folder holds its latest run only
    assert [r["type"] for r in records].count("start") == 1 and records[-1]["frames_processed"] == 30


def test_realtime_pacing_follows_timestamps(two_faces_clip: Path, placeholder_model: Path) -> None:
    arrivals: list[float] = []
    config = RunConfig(source=SourceOptions(str(two_faces_clip), realtime=True, max_frames=31),
                       model=ModelOptions(model_dir=placeholder_model))
    Pipeline(config, on_result=lambda r: arrivals.append(r.frame.wallclock_s)).run()
    # 31 frames at 30 fps span 1 s of stream time: paced, they cannot arrive faster
    assert len(arrivals) == 31 and arrivals[-1] - arrivals[0] >= 0.98


def test_a_file_gives_the_same_results_however_fast_it_is_consumed(placeholder_model: Path, tmp_path: Path) -> None:
    """A frame large enough to be searched in tiles is detected every 3rd frame; a live run also searches the
    others while no face is tracked, which depends on timing. A file's results must not: a slow analysis stage
    (here a slow result consumer) changes nothing."""
    import time

    from tests.support.faces import one_face_moving
    from tests.support.synth_video import make_test_clip

    face = one_face_moving(1600, 900, face_px=300)

    def comes_and_goes(i: int) -> np.ndarray:  # a face for 12 frames, none for 12, ...: tracking starts and ends
        frame = face(i)
        if (i // 12) % 2:
            frame[:] = 70
        return frame

    clip = make_test_clip(tmp_path / "tiled.mp4", seconds=2.0, width=1600, height=900, fps=30, draw=comes_and_goes)
    runs = []
    for delay_s in (0.0, 0.04):
        results = []

        def keep(result, delay_s=delay_s, results=results) -> None:
            results.append((result.frame.index, result.detected,
                            tuple((f.track_id, f.raw_score if f.scored else None) for f in result.faces)))
            time.sleep(delay_s)

        config = RunConfig(source=SourceOptions(str(clip)), model=ModelOptions(model_dir=placeholder_model))
        Pipeline(config, on_result=keep).run()
        runs.append(results)
    fast, slow = runs
    assert len(fast) == 60 and any(faces for _, _, faces in fast)
    assert fast == slow
    assert [index for index, detected, _ in fast if detected] == list(range(0, 60, 3))


def test_a_timestamp_jump_back_does_not_stop_the_scoring(placeholder_model: Path, tmp_path: Path) -> None:
    """Two MPEG-TS recordings joined byte for byte (as ``cat a.ts b.ts`` or an HLS discontinuity
    gives them): the second's timestamps start again from zero. Time must go on, or the face
    in the second half is never sampled (stream time stood still at the join)."""
    from tests.support.faces import one_face_moving
    from tests.support.synth_video import make_test_clip

    parts = [make_test_clip(tmp_path / f"part{i}.ts", seconds=3.0, fps=25, draw=one_face_moving(640, 360, 180))
             for i in range(2)]
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    events, out = tmp_path / "ev.jsonl", tmp_path / "out.mp4"
    result = run_cli("watch", str(joined), "--events", str(events), "--out", str(out),
                     "--model", str(placeholder_model))
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr_lines if "jumped back" in line] == [
        "stream-guard: WARNING: the video's timestamps jumped back 3.0 s at stream time 2.96 s (joined recordings "
        "or a restarted encoder?): time goes on from there"]
    records = _events(events)
    times = [r["stream_time_s"] for r in records if r["type"] == "track"]
    assert times == sorted(times) and max(times) > 5.5, times[-5:]
    tracks = records[-1]["tracks"]  # the face restarts where it began: a new track, or the same one
    assert max(t["last_s"] for t in tracks) > 5.9 and sum(t["n_scores"] for t in tracks) >= 45, tracks
    assert _count_frames(out) == 150


def test_realtime_plays_on_over_a_jump_ahead_in_the_timestamps(placeholder_model: Path, tmp_path: Path) -> None:
    """A recording whose timestamps jump two minutes ahead halfway (joined recordings of a camera
    that was off): ``--realtime`` used to sleep through the gap in silence, as if hung. It plays on,
    says so, and the face before the gap is not reported as seen until after it."""
    from tests.support.faces import one_face_moving
    from tests.support.synth_video import make_test_clip

    fps, gap_s = 25, 120
    clip = make_test_clip(tmp_path / "gap.ts", seconds=4.0, fps=fps, draw=one_face_moving(640, 360, 180),
                          frame_pts=lambda i: i if i < 50 else i + gap_s * fps)
    events = tmp_path / "ev.jsonl"
    result = run_cli("watch", str(clip), "--realtime", "--events", str(events), "--model", str(placeholder_model),
                     timeout=gap_s / 2)
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stderr_lines if "jump" in line] == [
        "stream-guard: WARNING: the video's timestamps jump 120.0 s ahead at stream time 1.96 s (joined recordings, "
        "or a recorder that was paused?): --realtime plays on without waiting it out"]
    records = _events(events)
    assert records[-1]["frames_processed"] == 100
    seen = [(t["first_s"], t["last_s"]) for t in records[-1]["tracks"]]
    assert all(last < 2.0 or first > 121.9 for first, last in seen), seen


def test_an_mp4_with_a_gap_in_its_timestamps_keeps_its_times_and_its_face(placeholder_model: Path,
                                                                          tmp_path: Path) -> None:
    """An MP4 whose timestamps jump two minutes ahead halfway (a camera recording only on motion, a
    paused screen recorder): its average frame rate is then under one frame a second. The stream
    clock took that as the frame period and every later frame as a jump back: 98 warnings, and each
    frame pushed on by 1.2 s. Times now follow the file's, and the face keeps one track each side.
    The annotated recording keeps the gap where it was (it was written at the average rate: slow motion)."""
    import pytest

    from tests.support.faces import one_face_moving
    from tests.support.synth_video import make_test_clip

    fps, gap_s = 25, 120
    clip = make_test_clip(tmp_path / "gap.mp4", seconds=4.0, fps=fps, draw=one_face_moving(640, 360, 180),
                          frame_pts=lambda i: i if i < 50 else i + gap_s * fps)
    events, out = tmp_path / "ev.jsonl", tmp_path / "out.mp4"
    result = run_cli("watch", str(clip), "--events", str(events), "--out", str(out), "--model", str(placeholder_model))
    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stderr_lines if "jump" in line], result.stderr
    with av.open(str(out)) as written:
        times = [float(f.time) for f in written.decode(video=0)]
    assert len(times) == 100
    assert times[49] == pytest.approx(49 / fps, abs=0.01) and times[50] == pytest.approx(gap_s + 50 / fps, abs=0.01)
    records = _events(events)
    assert records[0]["type"] == "start" and records[0]["fps"] == pytest.approx(fps, rel=0.01), records[0]
    assert records[-1]["frames_processed"] == 100
    spans = sorted((t["first_s"], t["last_s"]) for t in records[-1]["tracks"])
    assert len(spans) == 2, spans
    assert spans[0][0] < 0.2 and 1.8 < spans[0][1] < 2.0, spans
    assert 121.9 < spans[1][0] < 122.2 and 123.8 < spans[1][1] < 124.0, spans


def test_the_stream_clock_goes_on_where_the_timestamps_start_again() -> None:
    """Jitter backwards is clamped; a jump back of more than a second is a new stretch of timeline,
    placed a frame period on, and the sound of the same container moves with it."""
    import pytest

    from stream_guard.sources.pyav_source import _StreamClock

    clock = _StreamClock(0.04)
    assert clock.stream_s(10.0) is None  # no picture yet
    times = [clock.pts_s(t) for t in (10.0, 10.04, 10.08, 10.05, 0.0, None, 0.08)]
    assert times == pytest.approx([0.0, 0.04, 0.08, 0.080001, 0.120001, 0.160001, 0.200001])
    assert clock.stream_s(0.02) == pytest.approx(0.140001)  # the new stretch's sound, on the same clock


def test_a_video_calls_gallery_view_is_searched_in_tiles_when_asked(placeholder_model: Path, tmp_path: Path) -> None:
    """A 1280x720 call window in gallery view: nine faces about 75 px wide, too small for the detector's
    whole-frame pass (none found); --detect-tiles always finds them all."""
    from tests.support.faces import astronaut_head, paste
    from tests.support.synth_video import make_test_clip

    face = astronaut_head()

    def gallery(i: int) -> np.ndarray:
        canvas = np.full((720, 1280, 3), 40, np.uint8)
        for row in range(3):
            for column in range(3):
                x0, y0 = 10 + column * 423, 10 + row * 236
                canvas[y0:y0 + 226, x0:x0 + 413] = 70 + 20 * ((row + column) % 2)
                paste(canvas, face, (x0 + 206 + i % 10, y0 + 118), 200)
        return canvas

    clip = make_test_clip(tmp_path / "call.mp4", seconds=2.0, width=1280, height=720, fps=10, draw=gallery)
    faces = {}
    for tiles in ("auto", "always"):
        events = tmp_path / f"{tiles}.jsonl"
        result = run_cli("watch", str(clip), "--model", str(placeholder_model), "--events", str(events),
                         "--detect-tiles", tiles)
        assert result.returncode == 0, result.stderr
        faces[tiles] = {r["track_id"] for r in _events(events) if r["type"] == "track"}
    assert len(faces["auto"]) == 0 and len(faces["always"]) == 9, faces


def test_the_summary_says_how_long_a_face_was_judged_fake(tmp_path: Path) -> None:
    """The end-of-run verdict is the live one, with its hysteresis: over 20 s of the demo the
    self-blended face is judged fake for a while, then real again at the end. The summary says
    for how long it was judged fake (the spells its verdict records describe), so that is not hidden."""
    from stream_guard.cli import track_line

    events = tmp_path / "ev.jsonl"
    result = run_cli("watch", "demo", "--events", str(events))
    assert result.returncode == 0, result.stderr
    records = _events(events)
    tracks = {t["track_id"]: t for t in records[-1]["tracks"]}
    fake_since: dict[int, float] = {}
    fake_s = dict.fromkeys(tracks, 0.0)
    for r in records:
        if r["type"] == "verdict":
            if r["verdict"] == "fake":
                fake_since[r["track_id"]] = r["stream_time_s"]
            elif r["track_id"] in fake_since:
                fake_s[r["track_id"]] += r["stream_time_s"] - fake_since.pop(r["track_id"])
    for track_id, since in fake_since.items():
        fake_s[track_id] += tracks[track_id]["last_s"] - since
    assert max(fake_s.values()) > 1.0, fake_s  # the self-blended face was flagged
    for track_id, t in tracks.items():
        assert abs(t["fake_s"] - fake_s[track_id]) < 0.1, (t, fake_s)
        line = f"  face #{track_id}: {track_line(t)}"
        assert line in result.stderr_lines
        assert ("judged fake for" in line) == (t["fake_s"] > 0), line
    assert track_line({"track_id": 2, "first_s": 0.0, "last_s": 0.0, "verdict": "", "score": None, "mean_score": None,
                       "max_score": None, "n_scores": 0, "fake_s": 0.0}) == "uncertain (score --; 0 windows, 0.0-0.0 s)"


def test_every_face_of_a_clip_of_two_frames_is_scored(placeholder_model: Path, tmp_path: Path) -> None:
    """On a CPU the faces take turns on the CNN, a sampling period's work spread over its frames; a face's
    first score is not put off. A clip of two frames (both faces confirmed on the second) had only one of
    its two faces scored."""
    from tests.support.faces import two_faces_passing
    from tests.support.synth_video import make_test_clip

    clip = make_test_clip(tmp_path / "short.mp4", seconds=2 / 30, fps=30, draw=two_faces_passing(n_frames=90))
    events = tmp_path / "ev.jsonl"
    result = run_cli("watch", str(clip), "--events", str(events), "--model", str(placeholder_model))
    assert result.returncode == 0, result.stderr
    tracks = _events(events)[-1]["tracks"]
    assert len(tracks) == 2 and all(t["n_scores"] == 1 for t in tracks), tracks


def test_a_face_that_comes_close_enough_to_fill_the_frame_keeps_its_track(placeholder_model: Path,
                                                                            tmp_path: Path) -> None:
    """A face that fills the frame is too large for the detector's whole-frame pass: it is found zoomed out.
    Before, the track was lost as the face came close and a new one began."""
    import cv2
    from skimage import data

    from tests.support.synth_video import make_test_clip
    from tests.support.faces import ASTRO_FACE

    photo, face_side = data.astronaut(), ASTRO_FACE[2] - ASTRO_FACE[0]

    def draw(i: int) -> np.ndarray:  # from a head shot in to a crop tighter than the face, and out again
        margin = -0.08 + abs(i - 30) / 30 * 0.6
        x0, y0, x1, y1 = (ASTRO_FACE + np.array([-1, -1, 1, 1]) * margin * face_side).astype(int)
        return cv2.resize(np.ascontiguousarray(photo[max(0, y0):y1, max(0, x0):x1]), (320, 320),
                          interpolation=cv2.INTER_AREA)

    clip = make_test_clip(tmp_path / "close.mp4", seconds=4, fps=15, width=320, height=320, draw=draw)
    events = tmp_path / "ev.jsonl"
    result = run_cli("watch", str(clip), "--events", str(events), "--model", str(placeholder_model))
    assert result.returncode == 0, result.stderr
    tracks = _events(events)[-1]["tracks"]
    assert len(tracks) == 1, tracks
    assert tracks[0]["first_s"] < 0.3 and tracks[0]["last_s"] > 3.6, tracks


def test_the_frame_rate_shown_counts_frames_over_time() -> None:
    """Frames that come out in bursts (three 1 ms apart every 0.1 s: 30 fps) read as 30, not as an
    average of 1/gap (the live view showed 82-117 fps for a run paced at 30)."""
    from collections import deque

    from stream_guard.analysis import Analyzer

    analyzer = Analyzer.__new__(Analyzer)  # only the frame-rate counter is used
    analyzer._out_times = deque()
    shown = [analyzer._fps_update(10.0 + burst * 0.1 + i * 0.001) for burst in range(40) for i in range(3)]
    assert abs(shown[-1] - 30.0) < 1.5, shown[-5:]
