"""``--mqtt``: alerts, a retained state and availability on a real Mosquitto broker on 127.0.0.1."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream_guard.errors import ConfigError
from stream_guard.outputs.mqtt import parse_mqtt_url
from tests.conftest import REPO, run_cli
from tests.support.faces import two_faces_passing
from tests.support.mqtt_broker import MOSQUITTO, MosquittoBroker, Subscriber
from tests.support.synth_video import make_test_clip

pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed "
                                                                    "(tools/run_tests.sh installs it)")


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long enough (15 s, paced with --realtime) to outlive a broker restart."""
    path = tmp_path_factory.mktemp("clips") / "long.mp4"
    return make_test_clip(path, seconds=15.0, width=640, height=360, fps=30, draw=two_faces_passing(n_frames=450))


def _watch(source: Path, model: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "stream_guard", "watch", str(source), "--model", str(model), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, **(env or {})})


def _alerts_by_track(alerts: list[dict]) -> dict[int, list[str]]:
    by_track: dict[int, list[str]] = {}
    for a in alerts:
        by_track.setdefault(a["track_id"], []).append(a["alert"])
    return by_track


def test_alerts_state_and_availability_end_to_end(two_faces_clip: Path, always_fake_model: Path,
                                                  tmp_path: Path) -> None:
    """A file run with two fake faces: each face's alert is raised and cleared on ``PREFIX/alert``
    (the same records as the JSON events), ``PREFIX/state`` says a fake is on screen and then that
    none is, and ``PREFIX/availability`` goes online then offline; state and availability stay
    retained for a dashboard that connects later."""
    events = tmp_path / "events.jsonl"
    with MosquittoBroker() as broker:
        sub = Subscriber(broker, "sg/door")
        proc = _watch(two_faces_clip, always_fake_model, "--events", str(events), "--mqtt", f"{broker.url}/sg/door")
        _, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr
        assert "connection lost" not in stderr  # its own disconnect at the end is no warning
        sub.wait_for(lambda: sub.on("sg/door/availability")[-1:] == ["offline"], "offline at the end")
        sub.close()
        alerts = sub.json_on("sg/door/alert")
        states = sub.json_on("sg/door/state")
        assert sub.on("sg/door/availability") == ["online", "offline"]
        late = Subscriber(broker, "sg/door")  # a dashboard connecting after the run
        late.wait_for(lambda: len(late.messages) >= 2, "the retained messages")
        retained = {t: (p, r) for _, t, p, r in late.messages}
        late.close()
    by_track = _alerts_by_track(alerts)
    assert len(by_track) == 2 and all(kinds == ["fake", "cleared"] for kinds in by_track.values()), alerts
    assert all(a["score"] > 0.9 for a in alerts if a["alert"] == "fake")
    logged = [json.loads(line) for line in events.read_text().splitlines()]
    assert sorted(json.dumps(a, sort_keys=True) for a in alerts) == sorted(  # wall_time too: the same alert
        json.dumps(r, sort_keys=True) for r in logged if r["type"] == "alert")
    assert states[0]["fake"] is False  # published on connecting, before any face was judged
    assert any(s["fake"] and len(s["open_alerts"]) == 2 for s in states)
    assert states[-1]["fake"] is False and states[-1]["open_alerts"] == []
    assert states[-1]["source"] == str(two_faces_clip)
    assert states[0]["source_state"] == "connected" and states[-1]["source_state"] == "ended"
    assert retained["sg/door/availability"] == ("offline", True)
    assert json.loads(retained["sg/door/state"][0])["fake"] is False and retained["sg/door/state"][1] is True
    assert json.loads(retained["sg/door/state"][0])["source_state"] == "ended"


def test_home_assistant_discovery_announces_a_sensor_that_reads_the_state(two_faces_clip: Path,
                                                                           always_fake_model: Path) -> None:
    """``--mqtt-discovery``: a retained Home Assistant config for a binary sensor whose topics and template
    fit what the run publishes: rendered on the states it sent, it reads ON while a fake face is on screen."""
    jinja2 = pytest.importorskip("jinja2")
    with MosquittoBroker() as broker:
        ha = Subscriber(broker, "homeassistant")
        sub = Subscriber(broker, "home/door cam")
        proc = _watch(two_faces_clip, always_fake_model, "--mqtt", f"{broker.url}/home/door%20cam", "--mqtt-discovery")
        _, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr
        sub.wait_for(lambda: sub.on("home/door cam/availability")[-1:] == ["offline"], "the run's end")
        ha.wait_for(lambda: len(ha.messages) >= 1, "the discovery message")
        (_, topic, payload, _), = ha.messages
        ha.close()
        sub.close()
    assert topic == "homeassistant/binary_sensor/stream_guard_home_door_cam/fake/config"
    config = json.loads(payload)
    assert config["state_topic"] == config["json_attributes_topic"] == "home/door cam/state"
    assert config["availability_topic"] == "home/door cam/availability"
    assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
    assert config["unique_id"] == "stream_guard_home_door_cam_fake"
    template = jinja2.Template(config["value_template"])
    readings = [template.render(value_json=state) for state in sub.json_on("home/door cam/state")]
    assert readings[0] == "OFF" and "ON" in readings and readings[-1] == "OFF"


def test_discovery_needs_mqtt() -> None:
    result = run_cli("watch", "demo", "--mqtt-discovery", "--max-frames", "1")
    assert result.returncode == 2 and result.stderr_lines == ["stream-guard: error: --mqtt-discovery needs --mqtt"]


def test_a_killed_run_is_announced_offline_by_the_broker(long_clip: Path, placeholder_model: Path) -> None:
    """SIGKILL leaves no chance to say goodbye: the broker publishes the run's last will."""
    with MosquittoBroker() as broker:
        sub = Subscriber(broker, "stream_guard")
        proc = _watch(long_clip, placeholder_model, "--realtime", "--mqtt", broker.url)
        try:
            sub.wait_for(lambda: "online" in sub.on("stream_guard/availability"), "online")
            proc.kill()
            proc.wait(30)
            sub.wait_for(lambda: sub.on("stream_guard/availability")[-1:] == ["offline"], "the last will",
                         timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            sub.close()


def test_alerts_raised_while_the_broker_is_down_arrive_when_it_is_back(long_clip: Path, always_fake_model: Path,
                                                                       tmp_path: Path) -> None:
    """The broker is down when the run starts and for its first alerts: the run goes on (a warning,
    no error), and once the broker is up the queued alerts and the current state reach it."""
    events = tmp_path / "events.jsonl"
    broker = MosquittoBroker()
    try:
        proc = _watch(long_clip, always_fake_model, "--realtime", "--events", str(events), "--mqtt",
                      f"{broker.url}/cam")
        deadline = time.monotonic() + 60
        while '"type":"alert"' not in (events.read_text() if events.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline, "no alert was raised"
            time.sleep(0.1)
        broker.start()
        started = time.time()
        sub = Subscriber(broker, "cam")
        try:
            sub.wait_for(lambda: any(a["alert"] == "fake" for a in sub.json_on("cam/alert")), "the queued alert",
                         timeout=45)
            sub.wait_for(lambda: any(s["fake"] for s in sub.json_on("cam/state")), "a state with the fake face")
            first = sub.json_on("cam/alert")[0]
            assert first["alert"] == "fake" and first["wall_time"] < started  # raised while the broker was down
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
        finally:
            sub.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        broker.__exit__(None, None, None)
    assert proc.returncode == 130, stderr
    assert "is not answering yet" in stderr and "Traceback" not in stderr


def test_credentials_and_tls(two_faces_clip: Path, always_fake_model: Path, tmp_path: Path) -> None:
    """A broker that wants a password over TLS: the right one delivers (trusting the broker's certificate
    through $SSL_CERT_FILE), a wrong one stops the run at start with one line, exit 5, no password shown."""
    with MosquittoBroker(users={"monitor": "s3cret-pw"}, tls=True) as broker:
        sub = Subscriber(broker, "stream_guard", user=("monitor", "s3cret-pw"))
        trust = {"SSL_CERT_FILE": str(broker.cert)}
        good = _watch(two_faces_clip, always_fake_model, "--mqtt", broker.url.replace("://", "://monitor:s3cret-pw@"),
                      env=trust)
        _, stderr = good.communicate(timeout=180)
        assert good.returncode == 0, stderr
        sub.wait_for(lambda: sub.on("stream_guard/availability")[-1:] == ["offline"], "the run's end")
        assert len(_alerts_by_track(sub.json_on("stream_guard/alert"))) == 2
        sub.close()

        bad = _watch(two_faces_clip, always_fake_model, "--mqtt",
                     broker.url.replace("://", "://monitor:wrong-pw@"), env=trust)
        _, stderr = bad.communicate(timeout=180)
        untrusted = _watch(two_faces_clip, always_fake_model, "--max-frames", "5", "--mqtt",
                           broker.url.replace("://", "://monitor:s3cret-pw@"))
        _, untrusted_err = untrusted.communicate(timeout=180)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert bad.returncode == 5, stderr
    assert lines == [f"stream-guard: error: --mqtt mqtts://127.0.0.1:{broker.port}/stream_guard: the broker "
                     f"refused the connection (Not authorized)"], stderr
    assert "wrong-pw" not in stderr and "s3cret" not in untrusted_err
    # a certificate the system does not trust: no connection, a warning, and the run still finishes
    assert untrusted.returncode == 0, untrusted_err
    assert "is not answering yet" in untrusted_err


@pytest.mark.parametrize("url, message", [
    ("http://broker.local", "--mqtt http://broker.local: only mqtt:// and mqtts:// URLs are supported"),
    ("u:pw@broker.local", "--mqtt broker.local (no scheme://): only mqtt:// and mqtts:// URLs are supported"),
    ("mqtt://", "--mqtt mqtt://: the URL has no host"),
    ("mqtt://broker.local:99999", "--mqtt mqtt://broker.local:99999: not a valid URL: its port is not a number, or "
                                  "a password holds # ? / or @ as it is (write them percent-encoded: %23, %3F, %2F, "
                                  "%40)"),
    ("mqtt://u:p#w@broker.local:1/x", "--mqtt mqtt://***@broker.local:1/x: not a valid URL: its port is not a number, "
                                      "or a password holds # ? / or @ as it is (write them percent-encoded: %23, "
                                      "%3F, %2F, %40)"),
    ("mqtt://u:pw@broker.local/a/#", "--mqtt mqtt://broker.local: the topic prefix 'a/#' may not hold '+', '#' "
                                     "or empty levels"),
])
def test_bad_urls_are_one_line_exit_2(url: str, message: str, two_faces_clip: Path) -> None:
    with pytest.raises(ConfigError) as e:
        parse_mqtt_url(url)
    assert str(e.value) == message
    result = run_cli("watch", str(two_faces_clip), "--mqtt", url)
    assert result.returncode == 2 and result.stderr_lines == [f"stream-guard: error: {message}"]


def test_url_parts() -> None:
    t = parse_mqtt_url("mqtts://me:p%40ss@broker.local/home/door/")
    assert (t.host, t.port, t.tls, t.prefix, t.username, t.password) == ("broker.local", 8883, True, "home/door",
                                                                         "me", "p@ss")
    assert t.display == "mqtts://broker.local:8883/home/door" and t.topic("alert") == "home/door/alert"
    assert parse_mqtt_url("mqtt://broker.local").prefix == "stream_guard"
    assert parse_mqtt_url("mqtt://broker.local:1884").port == 1884
