"""``@FILE`` on the command line: options read from a file (argparse's fromfile, shell-like words)."""
from __future__ import annotations

from pathlib import Path

from stream_guard.cli import _parser
from tests.conftest import run_cli

WATCH_OPTIONS = """\
# the front door camera: credentials live here, not in the process list
watch "rtsp://viewer:p@ss word@door.local/stream"
--webhook https://hooks.example.com/a   # first receiver
--webhook https://hooks.example.com/b
--clips '/srv/stream guard/clips' --clip-pad 8

--alert-raise 4
"""


def test_an_options_file_is_read_as_command_line_words(tmp_path: Path) -> None:
    options = tmp_path / "door.args"
    options.write_text(WATCH_OPTIONS)
    args = _parser().parse_args([f"@{options}", "--alert-raise", "6"])  # later options override the file's
    assert args.command == "watch" and args.source == "rtsp://viewer:p@ss word@door.local/stream"
    assert args.webhook == ["https://hooks.example.com/a", "https://hooks.example.com/b"]
    assert args.clips == Path("/srv/stream guard/clips") and args.clip_pad_s == 8.0
    assert args.alert_raise == 6


def test_options_file_errors_are_one_line(tmp_path: Path) -> None:
    missing = run_cli(f"@{tmp_path / 'nowhere.args'}")
    assert missing.returncode == 2 and missing.stderr_lines[-1].startswith("stream-guard: error: ")
    assert "nowhere.args" in missing.stderr_lines[-1]
    unclosed = tmp_path / "unclosed.args"
    unclosed.write_text('demo --out-dir "/tmp/x\n')
    bad = run_cli(f"@{unclosed}")
    assert bad.returncode == 2 and bad.stderr_lines[-1] == (
        "stream-guard: error: options file line 'demo --out-dir \"/tmp/x': No closing quotation")


def test_a_hash_inside_a_word_is_not_a_comment_and_a_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    """As a shell reads it: ``#`` starts a comment only at the start of a word, outside quotes. shlex's comments
    ended any word at a ``#``: ``--out take#2.mp4`` became ``take``, a password ``pa#ss`` was cut (and leaked in
    the error). Notepad's byte-order mark made the first word an unknown command."""
    options = tmp_path / "take.args"
    options.write_bytes("\ufeffwatch rtsp://viewer:pa#ss@door.local/s --out take#2.mp4  # the second take\n"
                        "--clips 'a #b'\n".encode("utf-8"))
    args = _parser().parse_args([f"@{options}"])
    assert args.command == "watch" and args.source == "rtsp://viewer:pa#ss@door.local/s"
    assert args.out == Path("take#2.mp4") and args.clips == Path("a #b")


def test_options_files_that_are_not_utf8_or_name_themselves_are_one_line(tmp_path: Path) -> None:
    latin = tmp_path / "latin.args"
    latin.write_bytes(b"demo --seconds 1 --out-dir caf\xe9\n")
    looped = tmp_path / "self.args"
    looped.write_text(f"demo --seconds 1 @{looped}\n")
    for options, message in ((latin, "is not UTF-8 text"), (looped, "names itself")):
        result = run_cli(f"@{options}")
        assert result.returncode == 2 and len(result.stderr_lines) == 1 and message in result.stderr, result.stderr
