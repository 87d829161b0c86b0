"""MQTT output: alerts, a retained state and the monitor's availability on an MQTT broker.

For home-automation and NVR set-ups (Home Assistant, Node-RED, Frigate-style dashboards), under a topic
prefix (default ``stream_guard``):

- ``PREFIX/availability``: retained ``online`` while the run is connected, ``offline`` when it ends; the
  broker publishes ``offline`` itself (the last will) if the run dies or loses its connection.
- ``PREFIX/alert``: each alert raised or cleared, the webhook's JSON payload, QoS 1.
- ``PREFIX/state``: retained JSON: whether a fake face is on screen now, its open alerts, the source's state.
- with ``--mqtt-discovery``, ``homeassistant/binary_sensor/NODE/fake/config``: Home Assistant's MQTT discovery
  message, so a "Deepfake on screen" sensor appears there without configuration.

The network runs on paho-mqtt's own thread, which reconnects with back-off; messages published while the
broker is away wait in a bounded queue (QoS 1), so a broker that goes down never slows the pipeline.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from stream_guard import __version__
from stream_guard.errors import ConfigError, OutputError
from stream_guard.model.provenance import Provenance
from stream_guard.outputs.alerts import RAISED, Alert, AlertOptions, AlertSink
from stream_guard.sources.spec import redact_text, redact_url
from stream_guard.types import StreamInfo

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "stream_guard"
PORTS = {"mqtt": 1883, "mqtts": 8883}
KEEPALIVE_S = 30
FIRST_CONNECT_WAIT_S = 3.0  # at start, how long to wait for the broker's answer before going on without it
QUEUE_LIMIT = 1000  # messages kept while the broker is away
CLOSE_WAIT_S = 2.0  # at the end, how long to wait for the last messages to reach the broker
DISCOVERY_PREFIX = "homeassistant"  # Home Assistant's default discovery prefix
REFUSED_FOR_GOOD = ("Bad user name or password", "Not authorized", "Client identifier not valid",
                    "Unsupported protocol version")


@dataclass(frozen=True, slots=True)
class MqttTarget:
    """Where ``--mqtt mqtt[s]://[user[:password]@]host[:port][/prefix]`` points."""

    host: str
    port: int
    tls: bool
    prefix: str
    username: str | None = None
    password: str | None = None

    @property
    def display(self) -> str:
        """The broker without credentials, for logs and errors."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}/{self.prefix}"

    def topic(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    @property
    def node_id(self) -> str:
        """This monitor's id in Home Assistant: the prefix with anything but letters and digits as '_'."""
        return "stream_guard_" + re.sub(r"[^A-Za-z0-9]+", "_", self.prefix).strip("_").lower()


def discovery_message(target: MqttTarget) -> tuple[str, str]:
    """Home Assistant's MQTT discovery topic and config for a binary sensor "Deepfake on screen"."""
    node = target.node_id
    config = {
        "name": "Deepfake on screen", "unique_id": f"{node}_fake", "object_id": f"{node}_fake",
        "state_topic": target.topic("state"), "value_template": "{{ 'ON' if value_json.fake else 'OFF' }}",
        "json_attributes_topic": target.topic("state"),
        "availability_topic": target.topic("availability"),
        "payload_available": "online", "payload_not_available": "offline",
        "device": {"identifiers": [node], "name": f"stream_guard {target.prefix}", "manufacturer": "stream_guard",
                   "model": "live deepfake monitor", "sw_version": __version__},
    }
    return f"{DISCOVERY_PREFIX}/binary_sensor/{node}/fake/config", json.dumps(config)


def parse_mqtt_url(url: str) -> MqttTarget:
    """Check ``--mqtt``'s URL at start-up (a mistake is one line, exit 2)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # (its text may quote part of a password)
        raise ConfigError(f"--mqtt {redact_url(url)}: not a valid URL: its port is not a number, or a password holds "
                          "# ? / or @ as it is (write them percent-encoded: %23, %3F, %2F, %40)") from None
    shown = f"{parts.scheme}://{parts.hostname or ''}" if "://" in url else f"{url.rsplit('@', 1)[-1]} (no scheme://)"
    if parts.scheme not in PORTS:
        raise ConfigError(f"--mqtt {shown}: only mqtt:// and mqtts:// URLs are supported")
    if not parts.hostname:
        raise ConfigError(f"--mqtt {shown}: the URL has no host")
    # the prefix is everything after the host, as typed: '#' and '?' are topic characters here, not URL parts
    after_host = url.split("://", 1)[1][len(parts.netloc):]
    prefix = unquote(after_host).strip("/") or DEFAULT_PREFIX
    if any(c in prefix for c in "+#\0") or "//" in prefix:
        raise ConfigError(f"--mqtt {shown}: the topic prefix {prefix!r} may not hold '+', '#' or empty levels")
    return MqttTarget(host=parts.hostname, port=port or PORTS[parts.scheme], tls=parts.scheme == "mqtts",
                      prefix=prefix, username=None if parts.username is None else unquote(parts.username),
                      password=None if parts.password is None else unquote(parts.password))


class MqttSink(AlertSink):
    """``--mqtt URL``: alerts, state and availability on an MQTT broker (see the module's docstring)."""

    name = "mqtt"

    def __init__(self, target: MqttTarget, alerts: AlertOptions, discovery: bool = False,
                 provenance: Provenance | None = None) -> None:
        super().__init__(alerts, provenance)
        self.target = target
        self.discovery = discovery
        self.dropped = 0
        self._client: Any = None
        self._answered = threading.Event()
        self._refused: str | None = None
        self._connected = False
        self._closing = False  # our own disconnect at the end is not a lost connection
        self._source = ""
        self._source_state = "connected"
        self._open: dict[int, float | None] = {}  # track id -> score when raised
        self._lock = threading.Lock()  # the state is read by paho's thread on every (re)connect

    def open(self, info: StreamInfo) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._source = redact_text(info.source_id)
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        if self.target.username is not None:
            client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            client.tls_set()  # the system's certificate authorities ($SSL_CERT_FILE moves them)
        client.will_set(self.target.topic("availability"), "offline", qos=1, retain=True)
        client.reconnect_delay_set(1, 30)
        client.max_queued_messages_set(QUEUE_LIMIT)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        self._client = client
        try:
            client.connect_async(self.target.host, self.target.port, keepalive=KEEPALIVE_S)
        except (OSError, ValueError) as e:
            raise OutputError(f"--mqtt {self.target.display}: {e}") from e
        client.loop_start()
        if not self._answered.wait(FIRST_CONNECT_WAIT_S):
            log.warning("MQTT broker %s is not answering yet; alerts wait for it (retrying in the background)",
                        self.target.display)
        self._answered.set()  # from now on a refusal is logged and retried, not fatal
        if self._refused is not None:
            client.loop_stop()
            raise OutputError(f"--mqtt {self.target.display}: the broker refused the connection ({self._refused})")

    def on_alert(self, alert: Alert) -> None:
        with self._lock:
            if alert.kind == RAISED:
                self._open[alert.track_id] = alert.score
            else:
                self._open.pop(alert.track_id, None)
        self._publish("alert", json.dumps(alert.to_json()), retain=False)
        self._publish_state()

    def event(self, record: dict[str, Any]) -> None:
        if record.get("type") in ("source", "summary"):
            with self._lock:  # the state retained after the run must not say the source is still connected
                self._source_state = str(record.get("state")) if record["type"] == "source" else "ended"
        super().event(record)  # a drop closes open alerts (published before the new state)
        if record.get("type") == "source":
            self._publish_state()

    def close(self) -> None:
        client = self._client
        if client is None:
            return
        self._publish_state()
        last = client.publish(self.target.topic("availability"), "offline", qos=1, retain=True)
        if self._connected:
            try:
                last.wait_for_publish(CLOSE_WAIT_S)
            except (RuntimeError, ValueError):
                pass  # the connection went while waiting: the broker's last will says the same
        self._closing = True
        client.disconnect()
        client.loop_stop()
        self._client = None

    def state(self) -> dict[str, Any]:
        """The retained ``PREFIX/state`` payload."""
        with self._lock:
            open_alerts = [{"track_id": tid, "score": None if s is None else round(s, 4)}
                           for tid, s in sorted(self._open.items())]
            return {"fake": bool(open_alerts), "open_alerts": open_alerts, "source": self._source,
                    "source_state": self._source_state, "wall_time": time.time()}

    def _publish_state(self) -> None:
        self._publish("state", json.dumps(self.state()), retain=True)

    def _publish(self, name: str, payload: str, retain: bool) -> None:
        if self._client is None:
            return
        info = self._client.publish(self.target.topic(name), payload, qos=1, retain=retain)
        if info.rc not in (0, 4):  # 4: not connected now, queued until the broker is back
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("MQTT broker %s: %d message(s) dropped (queue full)", self.target.display, self.dropped)

    # paho's network thread
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            if str(reason) in REFUSED_FOR_GOOD and not self._answered.is_set():  # open() is still waiting
                self._refused = str(reason)
            else:
                log.warning("MQTT broker %s refused the connection: %s", self.target.display, reason)
            self._answered.set()
            return
        self._connected = True
        self._answered.set()
        log.info("MQTT broker %s: connected", self.target.display)
        if self.discovery:  # before the state, so Home Assistant knows the sensor when its state arrives
            client.publish(*discovery_message(self.target), qos=1, retain=True)
        client.publish(self.target.topic("availability"), "online", qos=1, retain=True)
        client.publish(self.target.topic("state"), json.dumps(self.state()), qos=1, retain=True)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        log.debug("MQTT broker %s: connection attempt failed", self.target.display)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if self._connected and not self._closing:
            log.warning("MQTT broker %s: connection lost (%s); reconnecting", self.target.display, reason)
        self._connected = False
