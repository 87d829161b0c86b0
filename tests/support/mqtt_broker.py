"""A real MQTT broker (Eclipse Mosquitto) on 127.0.0.1 for tests, and a subscriber that records what it gets.

``MosquittoBroker`` writes a config in a temporary folder (optionally a password file and a TLS listener with
a self-signed certificate), starts ``mosquitto`` on a free port and can stop and start it again on the same
port, for tests of a broker that goes away.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
WAIT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MosquittoBroker:
    """``users``: name -> password (anonymous clients are refused when given); ``tls``: serve MQTT over TLS
    with a self-signed certificate for 127.0.0.1 (``cert`` is its path, to trust it)."""

    def __init__(self, users: dict[str, str] | None = None, tls: bool = False) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sg-mqtt-"))
        self.port = _free_port()
        self.tls = tls
        self.cert = self.folder / "cert.pem"
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to user 'mosquitto', who cannot read this private folder
        if users:
            passwords = self.folder / "passwords"
            for i, (user, password) in enumerate(users.items()):
                subprocess.run(["mosquitto_passwd", "-b", *([] if i else ["-c"]), str(passwords), user, password],
                               check=True, capture_output=True)
            passwords.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            key = self.folder / "key.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                            "-keyout", str(key), "-out", str(self.cert), "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
            lines += [f"certfile {self.cert}", f"keyfile {key}"]
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self) -> MosquittoBroker:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read() if self.proc.stderr else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class Subscriber:
    """Subscribes to ``TOPIC_PREFIX/#`` and records ``(arrival time, topic, payload, retained)``."""

    def __init__(self, broker: MosquittoBroker, prefix: str, user: tuple[str, str] | None = None) -> None:
        self.cond = threading.Condition()
        self.messages: list[tuple[float, str, str, bool]] = []
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        if user:
            client.username_pw_set(*user)
        if broker.tls:
            client.tls_set(ca_certs=str(broker.cert))
        subscribed = threading.Event()
        client.on_message = self._on_message
        client.on_subscribe = lambda *a: subscribed.set()
        client.on_connect = lambda c, *a: c.subscribe(f"{prefix}/#", qos=1)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        assert subscribed.wait(WAIT_S), "the test subscriber could not subscribe"
        self.client = client

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.cond:
            self.messages.append((time.monotonic(), message.topic, message.payload.decode(), bool(message.retain)))
            self.cond.notify_all()

    def on(self, topic: str) -> list[str]:
        with self.cond:
            return [p for _, t, p, _ in self.messages if t == topic]

    def json_on(self, topic: str) -> list[dict]:
        return [json.loads(p) for p in self.on(topic)]

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), f"timed out waiting for {what}: {self.messages}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
