"""Malformed inputs: each gives one clear error line naming the input and the problem,
a non-zero exit code and no traceback. Valid videos in unusual formats (grayscale,
10-bit, 4:4:4, odd sizes, variable frame rate) are processed, every frame.
Every input is made here with PyAV and numpy."""
from __future__ import annotations

import json
import socket
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np
import pytest

from stream_guard.config import ModelOptions, OutputOptions, RunConfig, SourceOptions
from stream_guard.errors import OutputError
from stream_guard.pipeline import Pipeline
from stream_guard.types import FrameResult, StreamInfo
from tests.conftest import CliResult, run_cli
from tests.support.rtsp_fixture import RtspServerProcess


def encode(path: Path, codec: str, pix_fmt: str, width: int = 96, height: int = 64, n: int = 12,
           pts_ms: Sequence[int] | None = None, options: dict | None = None) -> Path:
    """Write ``n`` frames of a moving gradient; ``pts_ms`` gives a variable frame rate."""
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if pts_ms is not None:
            stream.time_base = Fraction(1, 1000)
            stream.codec_context.time_base = Fraction(1, 1000)
        ys, xs = np.mgrid[0:height, 0:width]
        for i in range(n):
            rgb = np.stack([(xs + 7 * i) % 256, (ys + 3 * i) % 256, np.full_like(xs, 40 * i % 256)], -1)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24").reformat(format=pix_fmt)
            frame.pts = pts_ms[i] if pts_ms is not None else i
            if pts_ms is not None:
                frame.time_base = Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        stream.layout = "mono"
        for i in range(30):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def cut_in_half(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_one_error_line(result: CliResult, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, exactly one error line containing every needle.
    (A run that got as far as processing may also log the untrained-model warning.)"""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    errors = [line for line in result.stderr_lines if line.startswith("stream-guard: error: ")]
    others = [line for line in result.stderr_lines if not line.startswith("stream-guard: error: ")]
    assert len(errors) == 1, result.stderr
    assert all("UNTRAINED" in line for line in others), result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    print(f"\n  exit {result.returncode}: {errors[0]}")
    return errors[0]


@pytest.fixture
def watch(placeholder_model: Path):
    def run(*args: str, timeout: float = 120) -> CliResult:
        return run_cli("watch", *args, "--model", str(placeholder_model), timeout=timeout)
    return run


# ------------------------------------------------------------------ broken files: refused


def test_missing_path(watch, tmp_path: Path) -> None:
    path = tmp_path / "missing.mp4"
    assert_one_error_line(watch(str(path)), 3, str(path), "no such file")


def test_zero_byte_file(watch, tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()
    assert_one_error_line(watch(str(path)), 3, str(path), "is empty (0 bytes)")


def test_random_bytes_named_mp4(watch, tmp_path: Path) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 64_000, dtype=np.uint8).tobytes())
    assert_one_error_line(watch(str(path)), 3, str(path), "not a video")


@pytest.mark.parametrize("text", ["meeting notes\n" * 100, "hello\n"])
def test_text_file(watch, tmp_path: Path, text: str) -> None:
    """A text file shorter than an MP4 box header was called a truncated MP4."""
    path = tmp_path / "notes.txt"
    path.write_text(text)
    assert_one_error_line(watch(str(path)), 3, str(path), "not a video")


def _encoded_picture(kind: str, image: np.ndarray) -> bytes:
    if kind == "heic":  # a tiled photo, as iPhones save them: FFmpeg gives each tile as a stream
        import io

        import pillow_heif
        data = io.BytesIO()
        pillow_heif.from_bytes("RGB", (image.shape[1], image.shape[0]), image.tobytes()).save(data, tile_size=64)
        return data.getvalue()
    ok, data = cv2.imencode({"jpeg": ".jpg", "png": ".png", "avif": ".avif"}[kind], image)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("ext,kind", [(".png", "png"), (".jpg", "jpeg"), (".mp4", "png"), (".heic", "heic"),
                                      (".avif", "avif")])
def test_still_image_is_not_a_video(watch, tmp_path: Path, ext: str, kind: str) -> None:
    """HEIC and AVIF pictures (ISO media files, as MP4s are) were watched as a video of one frame, or of one
    tile of the photo."""
    path = tmp_path / f"photo{ext}"  # a PNG renamed .mp4 is still caught by its content
    path.write_bytes(_encoded_picture(kind, np.zeros((120, 160, 3), np.uint8)))
    assert_one_error_line(watch(str(path)), 3, str(path),
                          f"is a still image ({kind}), not a video (stream-guard scan judges pictures)")


def test_audio_only_container(watch, tmp_path: Path) -> None:
    path = audio_only(tmp_path / "voice.m4a")
    assert_one_error_line(watch(str(path)), 3, str(path), "has no video stream (only audio)")


def test_truncated_mp4_without_its_index(watch, tmp_path: Path) -> None:
    """The usual MP4 (index at the end) cut in half: nothing can be decoded."""
    full = encode(tmp_path / "full.mp4", "libx264", "yuv420p", 160, 120, n=60)
    half = cut_in_half(full, tmp_path / "half.mp4")
    assert_one_error_line(watch(str(half)), 3, str(half), "truncated", "'mdat'", "no frame can be decoded")


def test_truncated_mp4_through_a_pipe_is_said_so(placeholder_model: Path, tmp_path: Path) -> None:
    """The same cut-off download piped in (``cat half.mp4 | stream-guard watch -``) ended with exit 0 and a
    "1 damaged packet" warning, as if complete: no file to measure, its index says how many frames it lacks."""
    import subprocess
    import sys

    from tests.conftest import REPO

    full = encode(tmp_path / "full.mp4", "libx264", "yuv420p", 160, 120, n=90, options={"movflags": "faststart"})
    half = cut_in_half(full, tmp_path / "half.mp4")
    with half.open("rb") as data:
        proc = subprocess.run([sys.executable, "-m", "stream_guard", "watch", "-", "--model", str(placeholder_model)],
                              stdin=data, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 3, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert "truncated: decoded" in error and "its index lists 90 frames, the data ended after" in error, proc.stderr


def test_truncated_mp4_keeps_the_frames_it_decoded(watch, tmp_path: Path) -> None:
    """An MP4 with its index first (faststart), cut in half: the frames that decode are
    analysed and written to --out, then the run reports the truncation and exits 3."""
    full = encode(tmp_path / "full.mp4", "libx264", "yuv420p", 160, 120, n=90, options={"movflags": "faststart"})
    half = cut_in_half(full, tmp_path / "half.mp4")
    out, events = tmp_path / "out.mp4", tmp_path / "ev.jsonl"
    line = assert_one_error_line(watch(str(half), "--out", str(out), "--events", str(events)), 3, str(half),
                                 "truncated: decoded", "frames then the data ended")
    decoded = int(line.split("truncated: decoded ")[1].split()[0])
    summary = json.loads(events.read_text().splitlines()[-1])
    assert summary["type"] == "summary" and "truncated" in summary["error"]
    assert 0 < decoded < 90 and summary["frames_processed"] == decoded
    assert count_frames(out) == decoded  # what was decoded is in the output, finalised


def test_a_file_with_damaged_packets_is_read_past_them(watch, tmp_path: Path) -> None:
    """A download with a few bad bytes: three of its packets cannot be decoded. The whole file was refused
    as "not a video file FFmpeg can read" (the first bad packet came while its first frame was decoded);
    the damaged packets are now skipped and said, and every frame that decodes is analysed and written."""
    full = encode(tmp_path / "full.mp4", "libx264", "yuv420p", 160, 120, n=90)
    with av.open(str(full)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    data = bytearray(full.read_bytes())
    for i in (1, 30, 50):  # the payload after each packet's NAL length, overwritten
        pos, size = packets[i]
        data[pos + 4:pos + size] = b"\xff" * (size - 4)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    out, events = tmp_path / "out.mp4", tmp_path / "ev.jsonl"
    result = watch(str(damaged), "--out", str(out), "--events", str(events))
    assert result.returncode == 0, result.stderr
    assert "3 damaged video packets were skipped in all" in result.stderr
    summary = json.loads(events.read_text().splitlines()[-1])
    assert summary["error"] is None and 60 < summary["frames_processed"] < 90
    assert count_frames(out) == summary["frames_processed"]


def test_mp4_cut_inside_its_header(watch, tmp_path: Path) -> None:
    """Cut before the video track says which codec it holds (found by the fuzz test): one line, exit 3."""
    full = encode(tmp_path / "full.mp4", "libx264", "yuv420p", 160, 120, n=30, options={"movflags": "faststart"})
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: data.index(b"stsd")])  # the sample description (the codec) is gone
    assert_one_error_line(watch(str(cut)), 3, str(cut), "no decodable picture")


def test_one_pixel_video(watch, tmp_path: Path) -> None:
    path = encode(tmp_path / "dot.mp4", "libx264", "yuv444p", 1, 1)
    assert_one_error_line(watch(str(path)), 3, str(path), "1x1 is too small", "minimum 16x16")


def test_8k_video_is_refused_unless_the_limit_is_raised(watch, tmp_path: Path) -> None:
    path = encode(tmp_path / "8k.mp4", "libx264", "yuv420p", 7680, 4320, n=2, options={})
    assert_one_error_line(watch(str(path)), 3, str(path), "7680x4320", "above the limit", "--max-megapixels")
    events = tmp_path / "ev.jsonl"
    result = watch(str(path), "--max-megapixels", "34", "--events", str(events), timeout=240)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    summary = json.loads(events.read_text().splitlines()[-1])
    assert summary["frames_processed"] == 2


def test_a_stream_that_grows_past_the_limit_mid_way_is_stopped_there(watch, tmp_path: Path) -> None:
    """Only the first frame was held to --max-megapixels: recordings joined with ``cat`` (or an encoder
    that switches resolution) brought 33 MP frames in, 1 GB of memory for a run limited to 1 MP."""
    small = encode(tmp_path / "small.ts", "libx264", "yuv420p", 320, 240, n=20)
    big = encode(tmp_path / "big.ts", "libx264", "yuv420p", 7680, 4320, n=2, options={})
    joined = tmp_path / "joined.ts"
    joined.write_bytes(small.read_bytes() + big.read_bytes())
    events = tmp_path / "ev.jsonl"
    result = watch(str(joined), "--max-megapixels", "1", "--events", str(events), timeout=240)
    assert_one_error_line(result, 3, f"{joined} at frame 20: frame size 7680x4320 (33.2 MP) is above the limit "
                                     "of 1 MP")
    summary = json.loads(events.read_text().splitlines()[-1])
    assert summary["frames_processed"] == 20


# ------------------------------------------------------------------ valid but unusual: processed


@pytest.mark.parametrize("name,codec,pix_fmt,size", [
    ("gray.mkv", "ffv1", "gray", (96, 64)),
    ("ten_bit.mp4", "libx264", "yuv420p10le", (96, 64)),
    ("ten_bit_444.mkv", "ffv1", "yuv444p10le", (96, 64)),
    ("full_chroma.mp4", "libx264", "yuv444p", (96, 64)),
    ("rgb.mkv", "ffv1", "bgr0", (96, 64)),
    ("odd_size.mkv", "ffv1", "yuv444p", (97, 63)),
])
def test_unusual_pixel_formats_are_processed(watch, tmp_path: Path, name: str, codec: str, pix_fmt: str,
                                             size: tuple[int, int]) -> None:
    path = encode(tmp_path / name, codec, pix_fmt, *size, n=12)
    out, events = tmp_path / "out.mp4", tmp_path / "ev.jsonl"
    result = watch(str(path), "--out", str(out), "--events", str(events))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert (records[0]["width"], records[0]["height"]) == size
    assert records[-1]["frames_processed"] == 12 and records[-1]["error"] is None
    assert count_frames(out) == 12


def test_variable_frame_rate_is_processed(watch, tmp_path: Path) -> None:
    gaps = [33, 33, 100, 10, 250, 33, 5, 66, 33, 400, 33]
    pts = np.concatenate([[0], np.cumsum(gaps)]).tolist()
    path = encode(tmp_path / "vfr.mp4", "libx264", "yuv420p", 96, 64, n=len(pts), pts_ms=pts)
    with av.open(str(path)) as container:  # the input really is variable-rate
        decoded = [round(float(f.time) * 1000) for f in container.decode(video=0)]
    assert np.diff(decoded).tolist() == gaps
    events = tmp_path / "ev.jsonl"
    result = watch(str(path), "--events", str(events), "--out", str(tmp_path / "out.mp4"))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert json.loads(events.read_text().splitlines()[-1])["frames_processed"] == len(pts)


# ------------------------------------------------------------------ network sources


def test_unknown_url_scheme(watch) -> None:
    assert_one_error_line(watch("gopher://example.org/x"), 2, "unknown URL scheme 'gopher://'")


def test_unreachable_host(watch) -> None:
    url = "rtsp://no-such-camera.invalid:554/live"  # .invalid never resolves (RFC 6761)
    assert_one_error_line(watch(url, timeout=60), 3, url, "cannot resolve host name 'no-such-camera.invalid'")


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_closed_port(watch, scheme: str) -> None:
    """FFmpeg's http reader retries a refused connection until the open times out, which said only
    "nothing came in 5 s"."""
    url = f"{scheme}://127.0.0.1:{closed_port()}/live"
    assert_one_error_line(watch(url, timeout=60), 3, url, "cannot connect (Connection refused)")


@pytest.mark.parametrize("refuse,needle", [(503, "Server Error"), ("close", "closed the connection")])
def test_rtsp_server_that_refuses(watch, two_faces_clip: Path, refuse, needle: str) -> None:
    with RtspServerProcess(two_faces_clip, refuse=refuse) as server:
        assert_one_error_line(watch(server.url, timeout=60), 3, server.url, needle)


def test_rtsp_server_that_asks_for_credentials(watch, two_faces_clip: Path) -> None:
    with RtspServerProcess(two_faces_clip, auth="viewer:hunter2") as server:
        assert_one_error_line(watch(server.url, timeout=60), 3, server.url, "asks for credentials")
        wrong = server.url_with_credentials("viewer", "wrong-password")
        line = assert_one_error_line(watch(wrong, timeout=60), 3, "***@127.0.0.1", "rejected the credentials")
        assert "wrong-password" not in line


# ------------------------------------------------------------------ a failing output in a run


class ExplodingSink:
    """An output that breaks after a few frames."""

    name = "exploding"
    lossless = True

    def __init__(self, after: int) -> None:
        self.after = after
        self.written = 0
        self.closed = 0

    def open(self, info: StreamInfo) -> None:
        pass

    def write(self, result: FrameResult) -> None:
        if self.written == self.after:
            raise OutputError("disk full (simulated)")
        self.written += 1

    def close(self) -> None:
        self.closed += 1


class FailsToFinishSink(ExplodingSink):
    """An output that takes every frame and then cannot finish what it wrote (a clip on a full disk)."""

    name = "unfinished"

    def close(self) -> None:
        super().close()
        raise OutputError("cannot finish (simulated)")


class FailsToOpenSink(ExplodingSink):
    """An output that cannot even start (a folder that cannot be written)."""

    name = "unopened"

    def open(self, info: StreamInfo) -> None:
        raise OutputError("--unopened: cannot write there (simulated)")


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_events_summary_names_an_output_that_failed_as_it_closed(two_faces_clip: Path, placeholder_model: Path,
                                                                      tmp_path: Path) -> None:
    """The run exits 5 for an output that could not finish; the events log's summary must say which,
    not ``failed_outputs: []``."""
    events = tmp_path / "ev.jsonl"
    bad = FailsToFinishSink(after=-1)
    config = RunConfig(source=SourceOptions(str(two_faces_clip)), model=ModelOptions(model_dir=placeholder_model),
                       outputs=OutputOptions(events_path=events))
    summary = Pipeline(config, extra_sinks=[bad]).run()
    assert summary.failed_outputs == ("unfinished",) and bad.closed == 1
    logged = _events(events)
    assert logged[-1]["type"] == "summary" and logged[-1]["failed_outputs"] == ["unfinished"]


def test_a_run_that_stops_at_start_up_still_ends_its_events_log(two_faces_clip: Path, placeholder_model: Path,
                                                                tmp_path: Path) -> None:
    """An output that cannot open stops the run before its first frame; the events log, already opened
    with its ``start`` record, ends with a summary that says why, as every run's records do."""
    events = tmp_path / "ev.jsonl"
    bad = FailsToOpenSink(after=-1)
    config = RunConfig(source=SourceOptions(str(two_faces_clip)), model=ModelOptions(model_dir=placeholder_model),
                       outputs=OutputOptions(events_path=events))
    with pytest.raises(OutputError, match="simulated"):
        Pipeline(config, extra_sinks=[bad]).run()
    assert bad.closed == 1
    logged = _events(events)
    assert [r["type"] for r in logged] == ["start", "summary"]
    assert logged[1]["frames_processed"] == 0 and logged[1]["failed_outputs"] == ["unopened"]
    assert "cannot write there" in logged[1]["error"]


@pytest.mark.parametrize("option", ["--out", "--events"])
def test_a_disk_that_fills_up_makes_the_run_fail(watch, two_faces_clip: Path, tmp_path: Path, option: str) -> None:
    """The recording failed (no space left) and the run still exited 0: a script would have kept a broken
    file as a whole one. /dev/full answers every write as a full disk does."""
    full = tmp_path / "out.mp4"
    full.symlink_to("/dev/full")
    result = watch(str(two_faces_clip), option, str(full))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 5, result.stderr
    assert "No space left on device" in result.stderr
    name = "file" if option == "--out" else "events"
    assert result.stderr_lines[-1] == (f"stream-guard: error: output '{name}' failed during the run: what it wrote "
                                       "is incomplete (the error is above)"), result.stderr


def test_events_on_standard_output_end_the_run_when_their_reader_goes_away(placeholder_model: Path,
                                                                           tmp_path: Path) -> None:
    """``watch SOURCE --events - | head -1``: the run went on to the end of the source (for ever on a
    live stream), then failed with a broken-pipe error. With nothing else to give, it ends as a filter
    does, quietly; with another output (``--out``) that output is still written whole."""
    import subprocess
    import sys

    from tests.conftest import REPO

    def head_1(*args: str) -> tuple[int, str]:
        proc = subprocess.Popen([sys.executable, "-m", "stream_guard", "watch", "demo", "--events", "-", "--model",
                                 str(placeholder_model), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        assert proc.stdout is not None and json.loads(proc.stdout.readline())["type"] == "start"
        proc.stdout.close()  # the reader goes away
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the run went on after its only reader went away") from None
        return proc.returncode, err

    code, err = head_1()
    assert code == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err and "ERROR" not in err, err
    frames = [int(line.split()[0]) for line in err.splitlines() if " frames in " in line]
    assert len(frames) == 1 and frames[0] < 600, err  # 20 s of demo at 30 fps: it stopped early

    out = tmp_path / "out.mp4"
    code, err = head_1("--out", str(out), "--max-frames", "90")
    assert code == 5 and "Broken pipe" in err, err
    assert count_frames(out) == 90


def test_a_failing_output_does_not_stop_the_others(two_faces_clip: Path, placeholder_model: Path,
                                                   tmp_path: Path) -> None:
    out, events = tmp_path / "out.mp4", tmp_path / "ev.jsonl"
    bad = ExplodingSink(after=10)
    config = RunConfig(source=SourceOptions(str(two_faces_clip)), model=ModelOptions(model_dir=placeholder_model),
                       outputs=OutputOptions(out_path=out, events_path=events))
    summary = Pipeline(config, extra_sinks=[bad]).run()
    assert summary.error is None and summary.frames_processed == 90
    assert summary.failed_outputs == ("exploding",)
    assert bad.written == 10 and bad.closed == 1
    assert count_frames(out) == 90


_EVENTS_ON_A_DISK_THAT_FILLS_UP = """
import resource, sys
from pathlib import Path
from stream_guard.outputs import events
from tests.support.alert_frames import INFO, face, result

events.REOPEN_S = 0.0  # try the file again at the next frame
sink = events.JsonlEventSink(Path(sys.argv[1]))
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, hard))  # the disk takes 3000 bytes...
sink.open(INFO)
for i in range(40):
    sink.write(result(i, (face(1, "real"),)))
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # ...then there is room again
for i in range(40, 50):
    sink.write(result(i, (face(1, "real"),)))
sink.event({"type": "summary"})
try:
    sink.close()
except Exception as e:
    print(e)
"""


def test_an_events_file_the_disk_refuses_is_written_again_when_there_is_room(tmp_path: Path) -> None:
    """On a full disk the events output died for the rest of the run. Now the file is opened again once
    there is room, after an events_lost record that counts the records lost meanwhile; the run is told.
    The refusal is real: a file-size limit (RLIMIT_FSIZE), raised again mid-run."""
    import subprocess
    import sys

    from tests.conftest import REPO

    path = tmp_path / "events.jsonl"
    proc = subprocess.run([sys.executable, "-c", _EVENTS_ON_A_DISK_THAT_FILLS_UP, str(path)], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = path.read_text().splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            records.append(None)  # the line the disk cut short
    assert records.count(None) <= 1 and records[0]["type"] == "start"
    gap = next(r for r in records if r and r["type"] == "events_lost")
    after = records[records.index(gap) + 1:]
    assert [r["frame_index"] for r in after if r["type"] == "track"] == list(range(40, 50))
    assert after[-1]["type"] == "summary"
    before = [r["frame_index"] for r in records[:records.index(gap)] if r and r["type"] == "track"]
    assert before == list(range(len(before))) and gap["records"] == 40 - len(before)  # each lost one counted
    assert gap["error"] == "File too large"
    assert proc.stdout.strip() == f"--events {path}: {gap['records']} record(s) could not be written (the errors " \
                                  "are above)"
    assert proc.stderr.count("cannot write (File too large)") == 1  # said once, not once a frame


def test_out_keep_refuses_to_rotate_away_the_video_it_reads(watch, two_faces_clip: Path, tmp_path: Path) -> None:
    """Checking an old segment again with the monitor's own options deleted it: it is one of the files
    --out-keep counts, and the oldest."""
    old = tmp_path / "door_20200101T000000.000Z.mp4"
    old.write_bytes(two_faces_clip.read_bytes())
    assert_one_error_line(watch(str(old), "--out", str(tmp_path / "door.mp4"), "--out-segment", "1", "--out-keep",
                                "1"), 2, "--out-keep 1", "is one of the segments", "could be deleted")
    assert old.read_bytes() == two_faces_clip.read_bytes()
