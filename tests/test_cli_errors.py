"""A user mistake gets one clear error line and a non-zero exit, never a traceback."""
from __future__ import annotations

import socket
from pathlib import Path

import av
import pytest

from tests.conftest import run_cli

HAS_SRT = "--enable-libsrt" in av._core.library_meta["libavformat"]["configuration"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_one_clear_line(result, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr_lines) == 1, result.stderr
    line = result.stderr_lines[0]
    assert line.startswith("stream-guard: error: ")
    for needle in needles:
        assert needle in line, line


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    _assert_one_clear_line(run_cli("watch", str(missing)), "no such file", str(missing))


def test_text_file_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    _assert_one_clear_line(run_cli("watch", str(path)), "not a video", str(path))


def test_folder_is_not_a_video(tmp_path: Path) -> None:
    _assert_one_clear_line(run_cli("watch", str(tmp_path)), "folder")


def test_unreachable_rtsp_url() -> None:
    url = f"rtsp://127.0.0.1:{_closed_port()}/live"
    result = run_cli("watch", url, timeout=60)
    _assert_one_clear_line(result, "127.0.0.1")
    assert result.returncode == 3


@pytest.mark.skipif(HAS_SRT, reason="this FFmpeg build reads SRT")
def test_an_srt_source_without_srt_in_ffmpeg_says_what_to_do() -> None:
    """PyAV's wheels are built without libsrt: FFmpeg's bare 'Protocol not found' becomes advice."""
    result = run_cli("watch", f"srt://127.0.0.1:{_closed_port()}", timeout=60)
    _assert_one_clear_line(result, "cannot read srt:// streams", "relay the stream to udp://")
    assert result.returncode == 3


def test_unknown_url_scheme() -> None:
    _assert_one_clear_line(run_cli("watch", "gopher://example/x"), "unknown URL scheme")


def test_password_is_redacted_in_errors() -> None:
    url = f"rtsp://admin:s3cret@127.0.0.1:{_closed_port()}/live"
    result = run_cli("watch", url, timeout=60)
    assert "s3cret" not in result.stderr
    _assert_one_clear_line(result, "***@127.0.0.1")


def test_output_folder_missing(two_faces_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "missing" / "out.mp4"
    _assert_one_clear_line(run_cli("watch", str(two_faces_clip), "--out", str(out)), "does not exist")


def test_bad_model_folder(two_faces_clip: Path, tmp_path: Path) -> None:
    _assert_one_clear_line(run_cli("watch", str(two_faces_clip), "--model", str(tmp_path)), "model.json")


def test_unknown_model_name_lists_the_shipped_ones(two_faces_clip: Path) -> None:
    _assert_one_clear_line(run_cli("watch", str(two_faces_clip), "--model", "deepfake-ensembel"),
                           "deepfake-ensembel not found", "deepfake-ensemble", "untrained-placeholder")


@pytest.mark.parametrize("provider", ["cuda", "warp-drive"])
def test_unavailable_provider(two_faces_clip: Path, provider: str) -> None:
    _assert_one_clear_line(run_cli("watch", str(two_faces_clip), "--provider", provider), provider)


@pytest.mark.parametrize("args, option, message", [
    (("demo", "--seconds", "0"), "--seconds", "must be a positive number of seconds"),
    (("demo", "--seconds", "nan"), "--seconds", "must be a positive number of seconds"),
    (("demo", "--seconds", "-1"), "--seconds", "must be a positive number of seconds"),
    (("watch", "demo", "--max-frames", "0"), "--max-frames", "must be at least 1"),
    (("evaluate", "--manifest", "m.tsv", "--max-frames", "-1"), "--max-frames", "must be at least 1"),
])
def test_an_out_of_range_number_is_a_usage_error(args: tuple[str, ...], option: str, message: str) -> None:
    """argparse's usage, then one error line naming the option: never a traceback, never a silent default."""
    result = run_cli(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr_lines[-1] == f"stream-guard {args[0]}: error: argument {option}: {message}"


@pytest.mark.parametrize("args, option", [
    (("watch", "demo", "--snapshots", "-"), "--snapshots"),
    (("watch", "demo", "--clips", "-"), "--clips"),
    (("demo", "--out-dir", "-"), "--out-dir"),
])
def test_a_folder_option_refuses_standard_output(args: tuple[str, ...], option: str, tmp_path: Path) -> None:
    """'-' means standard output elsewhere (``--events -``, ``--json -``); here it made a folder named '-'."""
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr_lines[-1] == (f"stream-guard {args[0]}: error: argument {option}: takes a folder; '-' "
                                       "(standard output) is not one")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seconds", ["nan", "inf"])
def test_bench_refuses_a_length_that_is_not_a_number_of_seconds(seconds: str) -> None:
    result = run_cli("bench", "--seconds", seconds, "--no-baseline")
    _assert_one_clear_line(result, "--seconds must be positive")
    assert result.returncode == 2


@pytest.mark.parametrize("command, option", [(["evaluate", "--manifest", "MANIFEST"], "--json"),
                                             (["evaluate", "--manifest", "MANIFEST"], "--plot"),
                                             (["bench", "--seconds", "1"], "--json")])
def test_a_json_output_that_cannot_be_written_fails_before_the_run(tmp_path: Path, command: list[str],
                                                                   option: str) -> None:
    """An evaluation or a benchmark can take hours: a bad --json must not wait for their end to be told."""
    manifest = tmp_path / "MANIFEST.tsv"
    manifest.write_text("file\tlabel\n")
    args = [str(manifest) if a == "MANIFEST" else a for a in command]
    for target, needle in ((tmp_path / "no_such_folder" / "out.json", "no such folder"),
                           (tmp_path, "is a folder, not a file")):
        result = run_cli(*args, option, str(target))
        _assert_one_clear_line(result, f"{option} {target}", needle)
        assert result.returncode == 5 and "running" not in result.stderr


def test_a_plot_in_a_format_it_cannot_be_is_one_error_before_the_run(tmp_path: Path) -> None:
    manifest = tmp_path / "MANIFEST.tsv"
    manifest.write_text("file\tlabel\n")
    result = run_cli("evaluate", "--manifest", str(manifest), "--plot", str(tmp_path / "roc.txt"))
    _assert_one_clear_line(result, f"--plot {tmp_path / 'roc.txt'}: name a .png, .svg, .pdf or .jpg file")
    assert result.returncode == 2


def test_a_json_report_that_cannot_be_written_is_one_error(tmp_path: Path) -> None:
    from stream_guard.errors import OutputError
    from stream_guard.evaluate import write_json

    with pytest.raises(OutputError, match="--json .*: cannot write"):
        write_json({"auc": 0.5}, tmp_path / "no_such_folder" / "out.json")


@pytest.mark.parametrize("args", [
    ("scan", "NAME"), ("verify", "NAME"), ("watch", "NAME"),
    ("evaluate", "--manifest", "MANIFEST", "--json", "FOLDER/NAME.json"),
    ("watch", "demo", "--max-frames", "1", "--out", "FOLDER/NAME.mp4"),
])
def test_a_name_too_long_for_the_file_system_is_one_line(args: tuple[str, ...], tmp_path: Path) -> None:
    """Found by the long fuzz run: such a name raised OSError from the first check that touched it."""
    manifest = tmp_path / "MANIFEST.tsv"
    manifest.write_text("file\tlabel\nclip.mp4\treal\n")
    name = "x" * 300  # over the 255 bytes a name may have on Linux file systems
    argv = [a.replace("FOLDER", str(tmp_path)).replace("MANIFEST", str(manifest)).replace("NAME", name) for a in args]
    result = run_cli(*argv)
    _assert_one_clear_line(result, name)


@pytest.mark.parametrize(("outputs", "message"), [
    (("--out", "{clip}"), "--out {clip}: is the source file: writing it would destroy the video being read"),
    (("--events", "{link}"), "--events {link}: is the source file"),  # the same file by another name
    (("--out", "{other}", "--events", "{other}"), "--events {other}: is also --out's file"),
])
def test_an_output_that_would_overwrite_the_source_is_refused(two_faces_clip: Path, tmp_path: Path,
                                                              outputs: tuple[str, ...], message: str) -> None:
    """``watch clip.mp4 --out clip.mp4`` truncated the video it was reading (lost after 8 frames), and
    ``--events`` on it appended JSON to it: refused before anything is written, the video untouched."""
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(two_faces_clip.read_bytes())
    (tmp_path / "link.mp4").symlink_to(clip)
    names = {"clip": str(clip), "link": str(tmp_path / "link.mp4"), "other": str(tmp_path / "other.mp4")}
    result = run_cli("watch", str(clip), *(o.format(**names) for o in outputs))
    _assert_one_clear_line(result, message.format(**names))
    assert result.returncode == 2 and clip.read_bytes() == two_faces_clip.read_bytes()


@pytest.mark.parametrize(("outputs", "message"), [
    (("--out", "{o}", "--clips", "{o}"), "--clips {o}: is also --out's file"),
    (("--out", "{o}", "--snapshots", "{o}"), "--snapshots {o}: is also --out's file"),
    (("--snapshots", "{ev}", "--clips", "{ev}", "--events", "{ev}/alerts.jsonl"),
     "--events {ev}/alerts.jsonl: is the log --snapshots writes in {ev}: give --events another name"),
    (("--clips", "{ev}", "--events", "{ev}/clips.jsonl"),
     "--events {ev}/clips.jsonl: is the log --clips writes in {ev}: give --events another name"),
])
def test_an_evidence_folder_and_an_output_file_on_one_path_are_refused(tmp_path: Path, outputs: tuple[str, ...],
                                                                      message: str) -> None:
    """``--out o.mp4 --clips o.mp4`` made a folder o.mp4, then lost the recording (exit 5); ``--events`` named
    like the evidence log in its folder mixed the run's events into the log ``verify`` reads."""
    names = {"o": str(tmp_path / "o.mp4"), "ev": str(tmp_path / "ev")}
    result = run_cli("watch", "demo", "--max-frames", "5", *(o.format(**names) for o in outputs))
    _assert_one_clear_line(result, message.format(**names))
    assert result.returncode == 2 and list(tmp_path.iterdir()) == []  # refused before anything was made


def test_an_evaluate_report_over_its_manifest_is_refused(tmp_path: Path) -> None:
    """``--json`` naming the manifest would replace the user's labels with the report, hours later."""
    manifest = tmp_path / "labels.tsv"
    manifest.write_text("file\tlabel\nclip.mp4\treal\n")
    result = run_cli("evaluate", "--manifest", str(manifest), "--json", str(tmp_path / "." / "labels.tsv"))
    _assert_one_clear_line(result, "is the manifest: writing it would destroy its labels")
    assert result.returncode == 2 and manifest.read_text() == "file\tlabel\nclip.mp4\treal\n"


@pytest.mark.parametrize("option", ["--snapshots", "--clips", "--report"])
def test_an_output_folder_that_is_a_file_is_named_so(two_faces_clip: Path, tmp_path: Path, option: str) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    command = "scan" if option == "--report" else "watch"
    result = run_cli(command, str(two_faces_clip), option, str(existing))
    _assert_one_clear_line(result, f"{option} {existing}: is a file, not a folder")
    assert result.returncode == 5 and existing.read_text() == "mine"
