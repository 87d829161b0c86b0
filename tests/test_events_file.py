"""The ``--events`` file of a run that lasts: moved away under it (log rotation), it goes on in a new file."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_events_file_moved_away_mid_run_goes_on_in_a_new_file(tmp_path: Path) -> None:
    """logrotate's default (``create``): the file is renamed and a new one expected under its name. The run
    wrote on into the renamed file for ever, so the log could never be rotated. Now the name is opened
    anew; the new file starts with the run's start record, and no record is lost between the two."""
    events, rotated = tmp_path / "events.jsonl", tmp_path / "events.jsonl.1"
    proc = subprocess.Popen([sys.executable, "-m", "stream_guard", "watch", "demo", "--realtime",
                             "--max-frames", "150", "--events", str(events)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while sum(r["type"] == "track" for r in (_records(events) if events.exists() else [])) < 10:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        events.rename(rotated)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert events.exists(), "the run wrote on into the moved file"

    old, new = _records(rotated), _records(events)
    assert old[0]["type"] == "start" and "summary" not in {r["type"] for r in old}
    assert new[0] == old[0] and new[-1]["type"] == "summary"
    tracks = [r for r in old + new if r["type"] == "track"]
    assert sum(r["type"] == "track" for r in new) >= 10
    assert sum(t["n_scores"] for t in new[-1]["tracks"]) == len(tracks)  # every score is in one file or the other
    indexes = [r["frame_index"] for r in tracks]
    assert indexes == sorted(indexes)
