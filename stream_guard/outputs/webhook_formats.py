"""How an alert is written for a webhook receiver: stream_guard's JSON, or a chat message.

Chat services reject a body that is not theirs (Slack answers 400 ``invalid_payload``, Discord 400
``Cannot send an empty message``), so ``--webhook`` recognises their webhook URLs and sends them a
one-line message; ``FORMAT=URL`` picks the format for any other receiver (Mattermost, Rocket.Chat,
a self-hosted ntfy).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from stream_guard.outputs.alerts import RAISED, REASON_END, REASON_GONE, REASON_REAL, REASON_SOURCE, Alert

FORMATS = ("json", "slack", "discord", "text")
_DISCORD_HOSTS = frozenset({"discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"})
_CLEARED_BECAUSE = {REASON_REAL: "it looks real again", REASON_GONE: "the face left the picture",
                    REASON_SOURCE: "the source dropped", REASON_END: "the run ended"}


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """One ``--webhook``: where to POST, and in which format (one of :data:`FORMATS`)."""

    url: str
    format: str


def detect_format(url: str) -> str:
    """The format a webhook URL's service accepts: chat services by their host, else ``json``."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host in ("hooks.slack.com", "chat.googleapis.com"):
        return "slack"  # Google Chat takes Slack's {"text": ...} too
    if host in _DISCORD_HOSTS and parts.path.startswith("/api/webhooks/"):
        return "discord"
    if host == "ntfy.sh":
        return "text"
    return "json"


def alert_message(alert: Alert) -> str:
    """One line for a person: what happened to which face, where and when."""
    where = f"in {alert.source} at {alert.stream_time_s:.1f} s"
    if alert.kind == RAISED:
        judged = [] if alert.score is None else [f"score {alert.score:.2f}"]
        if alert.provenance is not None:  # a reader can weigh the score against what it had to reach
            judged.append(f"threshold {alert.provenance.threshold_text}")
        score = f" ({', '.join(judged)})" if judged else ""
        return f"stream_guard: face {alert.track_id} looks fake{score} {where}"
    because = _CLEARED_BECAUSE.get(alert.reason, alert.reason)
    return f"stream_guard: face {alert.track_id} alert cleared, {because} ({where})"


def render(alert: Alert, fmt: str) -> tuple[bytes, str]:
    """The request body and its content type."""
    if fmt == "json":
        return json.dumps(alert.to_json(), separators=(",", ":")).encode(), "application/json"
    if fmt == "text":
        return alert_message(alert).encode(), "text/plain; charset=utf-8"
    key = "content" if fmt == "discord" else "text"
    return json.dumps({key: alert_message(alert)}).encode(), "application/json"
