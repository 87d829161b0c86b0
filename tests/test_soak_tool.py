"""tools.soak's own bookkeeping (the soak itself is a long run, outside the test suite)."""
from __future__ import annotations

import threading
import urllib.error
from pathlib import Path

from stream_guard.config import OutputOptions
from tools.soak import LiveViewClient, _all_outputs


def test_all_outputs_keep_the_recording_options_they_join(tmp_path: Path) -> None:
    """--all-outputs with --out-segment once recorded one whole file: the segments were dropped."""
    base = OutputOptions(out_path=tmp_path / "soak.mp4", out_segment_s=30.0, events_path=tmp_path / "events.jsonl")
    outputs, url = _all_outputs(base, tmp_path)
    assert (outputs.out_path, outputs.out_segment_s, outputs.events_path) == (base.out_path, 30.0, base.events_path)
    assert outputs.snapshots == tmp_path / "snapshots" and outputs.clips == tmp_path / "clips"
    assert outputs.serve is not None and url == f"http://127.0.0.1:{outputs.serve.port}"


def test_the_client_counts_failures_once_served_and_says_what_they_were() -> None:
    client = LiveViewClient("http://127.0.0.1:9", threading.Event())
    refused = urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))
    client._failed("/stream.mp4", refused)  # the run is still loading its models
    assert client.failures == 0
    client.served = True
    client._failed("/stream.mp4", refused)
    client._failed("/metrics", ConnectionResetError(104, "Connection reset by peer"))
    assert client.failures == 2
    assert client.errors == {"/stream.mp4: URLError: [Errno 111] Connection refused": 1,
                             "/metrics: ConnectionResetError: [Errno 104] Connection reset by peer": 1}
