"""``watch -``: a video piped in by another program (``yt-dlp -o - URL | stream-guard watch -``,
``ffmpeg ... -f mpegts - | stream-guard watch -``), through a real, unseekable pipe."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import pytest

from tests.conftest import REPO
from tests.support.synth_video import make_clip_with_sound, remux
from tests.test_live_sound import BURST, FPS, _assert_in_sync


def _watch_stdin(data: bytes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_guard", "watch", "-", *args], input=data,
                          capture_output=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize("container", ["mpegts", "matroska", "mp4+faststart"])
def test_a_piped_video_is_analysed_and_recorded_with_its_sound(container: str, tmp_path: Path,
                                                              placeholder_model: Path) -> None:
    """Every frame, read as a file is (the pipe holds the writer back), and ``--out`` keeps the sound,
    which cannot be read again from the source as a file's is: taken as it is decoded, in sync."""
    clip = make_clip_with_sound(tmp_path / "clip.mp4", seconds=3.0, fps=FPS, burst=BURST, flash=True)
    piped = tmp_path / "piped"
    remux(clip, piped, container.split("+")[0], {"movflags": "faststart"} if "faststart" in container else None)
    out, events = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    result = _watch_stdin(piped.read_bytes(), "--out", str(out), "--events", str(events), "--model",
                          str(placeholder_model))
    assert result.returncode == 0, result.stderr.decode()
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert (records[0]["source"], records[0]["live"]) == ("stdin", False)
    assert (records[-1]["frames_processed"], records[-1]["frames_dropped"]) == (3 * FPS, 0)
    with av.open(str(out)) as recording:
        assert recording.streams.video[0].frames == 3 * FPS and recording.streams.audio
    _assert_in_sync(out)


def test_what_cannot_be_read_from_a_pipe_is_one_line(tmp_path: Path) -> None:
    """Nothing, text, or an MP4 with its index at its end (a pipe cannot go back for it): one line that
    says which files can be piped."""
    clip = make_clip_with_sound(tmp_path / "clip.mp4", seconds=3.0, fps=FPS)
    remux(clip, tmp_path / "late_index.mp4", "mp4")
    for data in (b"", b"meeting notes\n" * 50, (tmp_path / "late_index.mp4").read_bytes()):
        result = _watch_stdin(data)
        stderr = result.stderr.decode()
        assert result.returncode == 3 and stderr.count("\n") == 1, stderr
        assert "stdin: no video FFmpeg can read from a pipe came" in stderr and "(-movflags +faststart)" in stderr


def test_a_terminal_on_stdin_is_named_at_once() -> None:
    """``watch -`` typed without a pipe: FFmpeg would wait for a video typed in; say what to do instead."""
    import pty

    parent, child = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "stream_guard", "watch", "-"], stdin=child,
                                capture_output=True, timeout=60, cwd=REPO)
    finally:
        import os

        os.close(parent)
        os.close(child)
    assert result.returncode == 3, result.stderr.decode()
    assert "stdin: is the terminal, not a video: pipe one in" in result.stderr.decode()


def test_ctrl_c_is_prompt_when_the_program_piping_in_stalls(tmp_path: Path, placeholder_model: Path) -> None:
    """The program upstream sent part of a video and then nothing, its end of the pipe still open: the capture
    thread waits in a read that cannot be broken off, and the stop waited 5 s for it (6.3 s in all); the
    recording is finalised with every frame that came."""
    import signal
    import time

    clip = make_clip_with_sound(tmp_path / "clip.mp4", seconds=6.0, fps=FPS, burst=BURST, flash=True)
    piped = tmp_path / "piped.ts"
    remux(clip, piped, "mpegts")
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "stream_guard", "watch", "-", "--out", str(out), "--model",
                             str(placeholder_model)], stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert proc.stdin is not None
    try:
        proc.stdin.write(piped.read_bytes()[: piped.stat().st_size // 2])  # then nothing, the pipe left open
        proc.stdin.flush()
        time.sleep(8)  # every frame that came is analysed; the capture thread waits for more
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    print(f"\nstopped in {stop_s:.2f} s")
    assert proc.returncode == 130 and stop_s < 4.0, (stop_s, stderr)
    with av.open(str(out)) as recording:
        assert 0 < recording.streams.video[0].frames < 6 * FPS
