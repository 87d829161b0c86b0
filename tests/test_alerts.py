"""The alert state machine (pure) and the webhook output against a real HTTP receiver on 127.0.0.1."""
from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import numpy as np
import pytest

from stream_guard.errors import ConfigError
from stream_guard.model.contract import load_model_spec
from stream_guard.model.provenance import Provenance
from stream_guard.outputs.alerts import (
    CLEARED,
    RAISED,
    REASON_END,
    REASON_FAKE,
    REASON_GONE,
    REASON_REAL,
    REASON_SOURCE,
    Alert,
    AlertOptions,
    AlertSink,
    AlertStateMachine,
)
from stream_guard.outputs.events import JsonlEventSink
from stream_guard.outputs.webhook import (
    DeliveryOptions,
    WebhookSink,
    parse_webhook,
    redact,
    redirect_change,
    validate_webhook_url,
)
from stream_guard.outputs.webhook_formats import detect_format
from tests.conftest import run_cli, watch_events
from tests.support.faces import astronaut_head, paste
from tests.support.synth_video import make_test_clip
from tests.support.alert_frames import (
    INFO,
    NOISY_FAKE_THEN_REAL,
    face,
    result,
    verdict_sequence,
)

PAYLOAD_FIELDS = {"type", "alert", "track_id", "score", "verdict", "stream_time_s", "wall_time", "source", "box",
                  "reason"}


def _run(machine: AlertStateMachine, results) -> list[Alert]:
    return [a for r in results for a in machine.update(r)]


# --- state machine ---------------------------------------------------------------------------------

def test_noise_around_the_threshold_gives_one_raise_and_one_clear() -> None:
    alerts = _run(AlertStateMachine(AlertOptions(raise_windows=3, clear_windows=5)),
                  verdict_sequence(NOISY_FAKE_THEN_REAL))
    assert [(a.kind, a.reason, a.track_id) for a in alerts] == [(RAISED, REASON_FAKE, 3), (CLEARED, REASON_REAL, 3)]
    raised, cleared = alerts
    first_fake_run = NOISY_FAKE_THEN_REAL.index("fake", 11)
    assert raised.stream_time_s == pytest.approx((first_fake_run + 2) / 10.0)  # on the 3rd fake window
    assert cleared.stream_time_s == pytest.approx((len(NOISY_FAKE_THEN_REAL) - 2) / 10.0)  # on the 5th real window
    assert raised.verdict == "fake" and cleared.verdict == "real" and raised.source == "test-stream"


def test_only_scored_windows_count() -> None:
    machine = AlertStateMachine(AlertOptions(raise_windows=3, clear_windows=2))
    unscored = [result(i, (face(1, "fake", scored=i % 3 == 0),)) for i in range(6)]  # 2 scored windows
    assert _run(machine, unscored) == []
    assert [a.kind for a in machine.update(result(6, (face(1, "fake"),)))] == [RAISED]


def test_at_most_one_open_alert_per_track_and_tracks_are_independent() -> None:
    machine = AlertStateMachine(AlertOptions(raise_windows=2, clear_windows=2))
    frames = [result(i, (face(1, "fake"), face(2, "real" if i < 6 else "fake"))) for i in range(10)]
    alerts = _run(machine, frames)
    assert [(a.kind, a.track_id) for a in alerts] == [(RAISED, 1), (RAISED, 2)]
    assert sorted(machine.open_tracks) == [1, 2]


def test_a_face_that_leaves_with_an_open_alert_is_cleared_as_gone() -> None:
    machine = AlertStateMachine(AlertOptions(raise_windows=3, clear_windows=5, gone_after_s=1.0))
    # track 3 raises, then leaves; track 4 (never alerted) also leaves and stays silent
    frames = [result(i, (face(3, "fake"), face(4, "real"))) for i in range(5)]
    frames += [result(i, ()) for i in range(5, 30)]
    alerts = _run(machine, frames)
    assert [(a.kind, a.reason, a.track_id) for a in alerts] == [(RAISED, REASON_FAKE, 3), (CLEARED, REASON_GONE, 3)]
    gone = alerts[1]
    assert gone.stream_time_s == pytest.approx(0.4)  # when it was last seen
    assert machine.open_tracks == []


def test_a_short_absence_keeps_the_alert_open() -> None:
    machine = AlertStateMachine(AlertOptions(raise_windows=1, clear_windows=1, gone_after_s=1.0))
    frames = [result(0, (face(3, "fake"),))] + [result(i, ()) for i in range(1, 8)] + [result(8, (face(3, "fake"),))]
    assert [a.kind for a in _run(machine, frames)] == [RAISED]
    assert machine.open_tracks == [3]


def test_alert_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="--alert-raise"):
        AlertOptions(raise_windows=0)
    with pytest.raises(ConfigError, match="--alert-clear"):
        AlertOptions(clear_windows=0)


class _Recorder(AlertSink):
    def __init__(self, options: AlertOptions) -> None:
        super().__init__(options)
        self.alerts: list[Alert] = []

    def on_alert(self, alert: Alert) -> None:
        self.alerts.append(alert)


def test_source_drop_and_end_of_run_close_open_alerts() -> None:
    sink = _Recorder(AlertOptions(raise_windows=1))
    sink.write(result(0, (face(1, "fake"),)))
    sink.event({"type": "source", "state": "reconnecting"})
    sink.write(result(1, (face(2, "fake"),)))
    sink.event({"type": "source", "state": "connected"})  # nothing to close
    sink.event({"type": "summary"})
    assert [(a.kind, a.track_id, a.reason) for a in sink.alerts] == [
        (RAISED, 1, REASON_FAKE), (CLEARED, 1, REASON_SOURCE), (RAISED, 2, REASON_FAKE), (CLEARED, 2, REASON_END)]


def test_events_log_alerts_next_to_their_causes() -> None:
    """The JSON Lines events carry each alert (the webhook's payload): a source record before the
    alerts it closes, the end-of-run clears before the summary, which stays the last line."""
    out = io.StringIO()
    sink = JsonlEventSink(out, AlertOptions(raise_windows=2))
    sink.open(INFO)
    sink.write(result(0, (face(1, "fake"),)))
    sink.write(result(1, (face(1, "fake"),)))
    sink.event({"type": "source", "state": "reconnecting"})
    sink.write(result(2, (face(2, "fake"),)))
    sink.write(result(3, (face(2, "fake"),)))
    sink.event({"type": "summary"})
    sink.close()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["type"], r.get("alert"), r.get("reason")) for r in records if r["type"] != "track"] == [
        ("start", None, None), ("alert", RAISED, REASON_FAKE), ("source", None, None),
        ("alert", CLEARED, REASON_SOURCE), ("alert", RAISED, REASON_FAKE), ("alert", CLEARED, REASON_END),
        ("summary", None, None)]
    assert all(set(r) == PAYLOAD_FIELDS for r in records if r["type"] == "alert")
    raised = [r for r in records if r.get("alert") == RAISED]
    assert [(r["track_id"], r["stream_time_s"]) for r in raised] == [(1, 0.1), (2, 0.3)]


# --- webhook ---------------------------------------------------------------------------------------

class Receiver:
    """An HTTP server on 127.0.0.1 that records JSON POSTs and answers with scripted statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.bodies: list[dict] = []  # the JSON ones
        self.raw: list[tuple[str, bytes]] = []  # (content type, body) of every delivered request
        self.requests = 0
        self.gets = 0  # a redirected POST that a client turned into a GET
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.changed:
                    receiver.requests += 1
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    if status == 200:
                        receiver.raw.append((self.headers["Content-Type"], body))
                        if self.headers["Content-Type"] == "application/json":
                            receiver.bodies.append(json.loads(body))
                    receiver.changed.notify_all()
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/moved/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                with receiver.changed:
                    receiver.gets += 1
                    receiver.changed.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, predicate, timeout: float = 30.0) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)


@pytest.fixture
def receiver_factory() -> Iterator:
    made: list[Receiver] = []

    def make(statuses: list[int] | None = None) -> Receiver:
        r = Receiver(statuses)
        r.thread.start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.server.shutdown()
        r.server.server_close()
        r.thread.join(10)


def _feed(sink: WebhookSink, verdicts) -> None:
    """Run the sink over a verdict sequence, then close it (which delivers what is queued)."""
    sink.open(INFO)
    try:
        for r in verdict_sequence(verdicts):
            sink.write(r)
    finally:
        sink.close()


FAST = DeliveryOptions(tries=3, backoff_s=0.01, timeout_s=5.0, drain_s=30.0)


def test_webhook_posts_exactly_one_fake_and_one_cleared(receiver_factory) -> None:
    receiver = receiver_factory()
    sink = WebhookSink([receiver.url], AlertOptions(raise_windows=3, clear_windows=5), FAST)
    _feed(sink, NOISY_FAKE_THEN_REAL)
    assert [b["alert"] for b in receiver.bodies] == ["fake", "cleared"]
    for body in receiver.bodies:
        assert body.keys() == PAYLOAD_FIELDS
        assert body["type"] == "alert" and body["track_id"] == 3 and body["source"] == "test-stream"
        assert body["box"] == [10.0, 8.0, 30.0, 32.0] and 0.0 <= body["score"] <= 1.0
    assert receiver.bodies[0]["reason"] == "fake_windows" and receiver.bodies[1]["reason"] == "real_windows"
    assert sink.senders[0].delivered == 2 and sink.senders[0].failed == 0


def test_a_webhook_alert_names_the_model_and_threshold_that_raised_it(receiver_factory,
                                                                      placeholder_model) -> None:
    provenance = Provenance.of(load_model_spec(placeholder_model), 0.6)
    receiver = receiver_factory()
    sink = WebhookSink([receiver.url], AlertOptions(raise_windows=1), FAST, provenance=provenance)
    _feed(sink, NOISY_FAKE_THEN_REAL)
    assert receiver.bodies and all(b.keys() == PAYLOAD_FIELDS | set(provenance.to_json()) for b in receiver.bodies)
    assert all(b["threshold"] == 0.6 and b["model_sha256"] == provenance.model_sha256 for b in receiver.bodies)


def test_webhook_retries_after_server_errors(receiver_factory) -> None:
    receiver = receiver_factory(statuses=[500, 500, 200])
    sink = WebhookSink([receiver.url], AlertOptions(raise_windows=1), FAST)
    sink.open(INFO)
    try:
        sink.write(result(0, (face(7, "fake"),)))
        assert receiver.wait_for(lambda: receiver.bodies)
    finally:
        sink.close()
    assert receiver.requests == 3
    assert [b["track_id"] for b in receiver.bodies] == [7]
    assert sink.senders[0].delivered == 1 and sink.senders[0].failed == 0


def test_webhook_gives_up_after_its_tries_and_does_not_retry_client_errors(receiver_factory) -> None:
    failing = receiver_factory(statuses=[503] * 10)
    refusing = receiver_factory(statuses=[404] * 10)
    sink = WebhookSink([failing.url, refusing.url], AlertOptions(raise_windows=1), FAST)
    sink.open(INFO)
    try:
        sink.write(result(0, (face(1, "fake"),)))
    finally:
        sink.close()
    assert failing.requests == 3 and refusing.requests == 1
    assert [s.failed for s in sink.senders] == [1, 1]


def test_webhook_does_not_follow_redirects(receiver_factory, caplog) -> None:
    """urllib would turn a redirected POST into a bodyless GET and call it delivered."""
    moved = receiver_factory(statuses=[302] * 5)
    permanent = receiver_factory(statuses=[308] * 5)
    sink = WebhookSink([moved.url, permanent.url], AlertOptions(raise_windows=1), FAST)
    sink.open(INFO)
    with caplog.at_level(logging.ERROR, logger="stream_guard.outputs.webhook"):
        try:
            sink.write(result(0, (face(1, "fake"),)))
        finally:
            sink.close()
    assert (moved.requests, moved.gets, permanent.requests, permanent.gets) == (1, 0, 1, 0)
    assert [(s.delivered, s.failed) for s in sink.senders] == [(0, 1), (0, 1)]
    assert "redirect" in caplog.text and "secret-token" not in caplog.text
    assert "(another path) not followed" in caplog.text  # what to fix, without the path itself


@pytest.mark.parametrize(("url", "target", "said"), [
    ("http://hooks.local/t/abc", "https://hooks.local/t/abc", "https instead of http"),
    ("https://hooks.local/t/abc", "https://hooks.local/t/abc/", "the same path with a / at its end"),
    ("https://hooks.local/t/abc/", "https://hooks.local/t/abc", "the same path without the / at its end"),
    ("https://u:p@hooks.local/t/abc?k=1", "https://hooks.local:8443/t/xyz?k=2", "another host, another path, "
     "another query"),
    ("https://hooks.local/t", "https://hooks.local/t", "the same URL"),
])
def test_a_redirect_says_what_it_changes_without_the_path(url: str, target: str, said: str) -> None:
    assert redirect_change(url, target) == said


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A TCP port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/hook"


def test_an_unresponsive_receiver_never_blocks_the_pipeline(black_hole: str, caplog) -> None:
    """Nor the end of the run beyond its drain time, whatever the number of receivers (three took 20 s, one
    11 s, for 5 s promised), and the alerts abandoned then are said."""
    sink = WebhookSink([black_hole] * 3, AlertOptions(raise_windows=1, clear_windows=1),
                       DeliveryOptions(tries=3, backoff_s=0.2, timeout_s=5.0, queue_size=2, drain_s=1.0))
    sink.open(INFO)
    slowest = 0.0
    try:
        for i in range(40):  # 40 alerts: fake/cleared alternating, far more than the queue holds
            t0 = time.monotonic()
            sink.write(result(i, (face(1, "fake" if i % 2 == 0 else "real"),)))
            slowest = max(slowest, time.monotonic() - t0)
    finally:
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="stream_guard.outputs.webhook"):
            sink.close()
        closing = time.monotonic() - t0
    assert slowest < 1.0  # write() only queues (a generous bound: it never waits for the network)
    assert closing < 3.0  # drain_s and a grace per receiver, plus slack; not a request's 5 s time-out
    for sender in sink.senders:
        assert sender.dropped > 0 and sender.delivered == 0 and sender.abandoned > 0
        assert sender.dropped + sender.failed + sender.abandoned == 40
    assert caplog.text.count("not delivered: still waiting for the receiver when the run ended") == 3


def test_webhook_urls_are_validated_at_start_up() -> None:
    assert validate_webhook_url("https://hooks.example.com/x?token=abc")
    for bad, why in [("ftp://example.com/x", "only http"), ("http:///path", "no host"),
                     ("example.com/hook", "only http"), ("http://example.com:99999/", "not a valid URL")]:
        with pytest.raises(ConfigError, match=why):
            validate_webhook_url(bad)
    assert redact("https://user:pw@hooks.example.com:8443/services/T0/B0/secret") == "https://hooks.example.com:8443/..."


def test_chat_formats_are_delivered_as_each_service_wants(receiver_factory) -> None:
    """Slack (and Google Chat) take {"text": ...}, Discord {"content": ...}, ntfy plain text; a person reads them."""
    slack, discord, text, plain = (receiver_factory() for _ in range(4))
    sink = WebhookSink([f"slack={slack.url}", f"discord={discord.url}", f"text={text.url}", plain.url],
                       AlertOptions(raise_windows=3, clear_windows=5), FAST)
    _feed(sink, NOISY_FAKE_THEN_REAL)
    raised, cleared = [json.loads(body)["text"] for _, body in slack.raw]
    assert re.fullmatch(r"stream_guard: face 3 looks fake \(score 0\.\d\d\) in test-stream at \d+\.\d s", raised)
    assert re.fullmatch(r"stream_guard: face 3 alert cleared, it looks real again \(in test-stream at \d+\.\d s\)",
                        cleared)
    assert [ct for ct, _ in slack.raw + discord.raw] == ["application/json"] * 4
    assert [json.loads(body) for _, body in discord.raw] == [{"content": raised}, {"content": cleared}]
    assert text.raw == [("text/plain; charset=utf-8", raised.encode()), ("text/plain; charset=utf-8", cleared.encode())]
    assert [b["alert"] for b in plain.bodies] == ["fake", "cleared"]  # a URL of no known service: the JSON


def test_a_chat_message_names_the_threshold_the_score_was_judged_at(receiver_factory, placeholder_model) -> None:
    slack = receiver_factory()
    sink = WebhookSink([f"slack={slack.url}"], AlertOptions(raise_windows=3, clear_windows=5), FAST,
                       provenance=Provenance.of(load_model_spec(placeholder_model), 0.6))
    _feed(sink, NOISY_FAKE_THEN_REAL)
    raised = json.loads(slack.raw[0][1])["text"]
    assert re.fullmatch(r"stream_guard: face 3 looks fake \(score 0\.\d\d, threshold 0\.600\) in test-stream at "
                        r"\d+\.\d s", raised)


def test_webhook_formats_follow_the_url_unless_given() -> None:
    assert detect_format("https://hooks.slack.com/services/T0/B0/x") == "slack"
    assert detect_format("https://chat.googleapis.com/v1/spaces/A/messages?key=k&token=t") == "slack"
    assert detect_format("https://discord.com/api/webhooks/1/abc") == "discord"
    assert detect_format("https://discord.com/channels/1/2") == "json"
    assert detect_format("https://ntfy.sh/my-door-alerts") == "text"
    assert detect_format("https://hooks.example.com/sg?token=a=b") == "json"
    assert parse_webhook("https://hooks.example.com/x?token=a=b").format == "json"  # '=' in a URL is no prefix
    target = parse_webhook("slack=https://chat.example.com/hooks/abc")  # Mattermost takes Slack's payload
    assert (target.url, target.format) == ("https://chat.example.com/hooks/abc", "slack")
    assert parse_webhook("json=https://hooks.slack.com/services/x").format == "json"
    with pytest.raises(ConfigError, match=r"unknown format 'teams' \(choose from json, slack, discord, text\)"):
        parse_webhook("teams=https://example.com/hook")
    with pytest.raises(ConfigError, match="only http"):
        parse_webhook("slack=ftp://example.com/hook")


def test_cli_rejects_a_bad_webhook_in_one_line(tmp_path) -> None:
    res = run_cli("watch", "demo", "--webhook", "ftp://example.com/hook", "--max-frames", "1")
    assert res.returncode == 2
    assert res.stderr_lines == ["stream-guard: error: --webhook ftp://example.com/...: "
                                "only http:// and https:// URLs are supported"]
    # typed without https://: its host is named, its path (often a secret token) is not
    res = run_cli("watch", "demo", "--webhook", "hooks.slack.com/services/T0/B0/s3cret", "--max-frames", "1")
    assert res.returncode == 2
    assert res.stderr_lines == ["stream-guard: error: --webhook hooks.slack.com/... (no scheme://): "
                                "only http:// and https:// URLs are supported"]
    res = run_cli("watch", "demo", "--webhook", "teams=https://example.com/hook", "--max-frames", "1")
    assert res.returncode == 2
    assert res.stderr_lines == ["stream-guard: error: --webhook teams=...: unknown format 'teams' "
                                "(choose from json, slack, discord, text)"]
    res = run_cli("watch", "demo", "--alert-raise", "0")
    assert res.returncode == 2 and "--alert-raise" in res.stderr and "Traceback" not in res.stderr


def test_pipeline_alerts_each_fake_face_once_end_to_end(receiver_factory, two_faces_clip, always_fake_model,
                                                        tmp_path) -> None:
    from stream_guard.config import (
        ModelOptions,
        OutputOptions,
        RunConfig,
        SourceOptions,
    )
    from stream_guard.pipeline import Pipeline

    receiver = receiver_factory()
    config = RunConfig(source=SourceOptions(str(two_faces_clip)), model=ModelOptions(model_dir=always_fake_model),
                       outputs=OutputOptions(webhooks=(receiver.url,), alerts=AlertOptions(raise_windows=3),
                                             events_path=tmp_path / "events.jsonl"))
    summary = Pipeline(config).run()
    assert summary.failed_outputs == () and len(summary.tracks) == 2
    by_track: dict[int, list[dict]] = {}
    for body in receiver.bodies:
        by_track.setdefault(body["track_id"], []).append(body)
    assert len(by_track) == 2
    for bodies in by_track.values():
        assert [b["alert"] for b in bodies] == ["fake", "cleared"]
        assert bodies[0]["verdict"] == "fake" and bodies[0]["score"] > 0.9
        assert bodies[1]["reason"] in ("gone", "end_of_stream")
        assert two_faces_clip.name in bodies[0]["source"]
    # the events log the same alerts (each output decides them on its own, from the same frames), down to
    # their wall_time, by which a receiver may match them up
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    logged = [r for r in logged if r["type"] == "alert"]
    assert sorted(logged, key=json.dumps) == sorted(receiver.bodies, key=json.dumps)


@pytest.mark.parametrize("hidden_s, tracks, raised", [(1.0, [1], 1), (1.8, [1], 1), (2.6, [1, 2], 2)])
def test_a_face_hidden_for_a_moment_keeps_its_id_and_its_alert(placeholder_model, tmp_path, hidden_s: float,
                                                                tracks: list[int], raised: int) -> None:
    """A hand over the face or a head turned away for under 2 s (the alerts' `gone` time): the same face id
    when it comes back, so one alert, not a second one (a second spoken warning, webhook, snapshot)."""
    head = astronaut_head()

    def draw(i: int) -> np.ndarray:
        t = i / 30
        frame = np.full((360, 640, 3), 90, np.uint8)
        if not 3.0 <= t < 3.0 + hidden_s:
            paste(frame, head, (320 + 6 * np.sin(2 * t), 180), 180)  # a little head motion: detector jitter
        return frame

    clip = make_test_clip(tmp_path / "hidden.mp4", seconds=6 + hidden_s, width=640, height=360, draw=draw)
    records = watch_events(clip, placeholder_model, tmp_path / "events.jsonl", "--threshold", "0")
    assert sorted({r["track_id"] for r in records if r["type"] == "track"}) == tracks
    assert sum(1 for r in records if r["type"] == "alert" and r["alert"] == RAISED) == raised
