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
