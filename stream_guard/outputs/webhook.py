"""Webhook output: POST each alert (JSON, or a chat message: see ``webhook_formats``) to one or more URLs.

The sink's ``write`` only runs the alert state machine and queues the payload; a sender
thread per URL delivers it with a timeout and retries (exponential back-off with jitter).
A full queue drops the new alert and counts it, so a dead receiver never slows the pipeline.

HTTP goes through the standard library's ``urllib``: one JSON POST with a timeout is all
this needs, retries are our own (they must stop when the run stops), and it keeps the core
install free of an HTTP client and its dependencies. Redirects are not followed: urllib
would re-send a redirected POST as a GET without its body (and count it delivered), and an
alert should only ever reach the URL the user gave.
"""
from __future__ import annotations

import logging
import queue
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from stream_guard import __version__
from stream_guard.errors import ConfigError
from stream_guard.model.provenance import Provenance
from stream_guard.outputs.alerts import Alert, AlertOptions, AlertSink
from stream_guard.outputs.webhook_formats import FORMATS, WebhookTarget, detect_format, render
from stream_guard.types import StreamInfo

log = logging.getLogger(__name__)
_STOP = object()
# after the drain: how long a sender gets to notice the abort (a request in flight is not waited for)
ABORT_GRACE_S = 0.2
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_FORMAT_PREFIX = re.compile(r"([a-z]+)=(.*)", re.DOTALL)  # FORMAT=URL: a URL never starts so


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Turns every 3xx into an ``HTTPError`` instead of a new request."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:
        return None


def validate_webhook_url(url: str) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host, else raise :class:`ConfigError`."""
    try:
        parts = urlsplit(url)
        host, _port = parts.hostname, parts.port  # .port raises ValueError on a bad port
    except ValueError as e:
        raise ConfigError(f"--webhook {redact(url)}: not a valid URL ({e})") from e
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"--webhook {redact(url)}: only http:// and https:// URLs are supported")
    if not host:
        raise ConfigError(f"--webhook {redact(url)}: the URL has no host")
    return url


def parse_webhook(spec: str) -> WebhookTarget:
    """``--webhook [FORMAT=]URL``: FORMAT is json, slack, discord or text; without it the URL decides
    (Slack, Google Chat and Discord webhooks get a chat message, ntfy.sh plain text, others JSON)."""
    match = _FORMAT_PREFIX.fullmatch(spec)
    if match is None:
        return WebhookTarget(validate_webhook_url(spec), detect_format(spec))
    fmt, url = match.groups()
    if fmt not in FORMATS:
        raise ConfigError(f"--webhook {fmt}=...: unknown format '{fmt}' (choose from {', '.join(FORMATS)})")
    return WebhookTarget(validate_webhook_url(url), fmt)


def redact(url: str) -> str:
    """``scheme://host[:port]`` only: webhook paths and queries often carry secret tokens."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "<invalid URL>"
    if "://" not in url:  # typed without a scheme (host/path...): its host only, as far as it can be told
        host = url.split("/", 1)[0].rsplit("@", 1)[-1]
        return f"{host}/... (no scheme://)" if host else "<invalid URL>"
    return f"{parts.scheme}://{netloc}/..."


def redirect_change(url: str, target: str) -> str:
    """What a redirect from ``url`` to ``target`` changes, in words that reveal no path or query (they
    may hold tokens): enough to fix --webhook (http to https, a / at the path's end, another path)."""
    old, new = urlsplit(url), urlsplit(target)
    changes = []
    if old.scheme != new.scheme:
        changes.append(f"{new.scheme} instead of {old.scheme}")
    if old.netloc.rsplit("@", 1)[-1] != new.netloc.rsplit("@", 1)[-1]:
        changes.append("another host")
    if new.path == old.path + "/":
        changes.append("the same path with a / at its end")
    elif old.path == new.path + "/":
        changes.append("the same path without the / at its end")
    elif old.path != new.path:
        changes.append("another path")
    if old.query != new.query:
        changes.append("another query")
    return ", ".join(changes) or "the same URL"


@dataclass(frozen=True, slots=True)
class DeliveryOptions:
    """``tries``: attempts per alert; back-off before try n+1 is ``backoff_s * 2**(n-1)`` times a
    random factor in [0.5, 1]; ``timeout_s`` per request; ``queue_size`` alerts waiting per URL;
    ``drain_s``: how long ``close`` waits for queued alerts."""

    tries: int = 3
    backoff_s: float = 0.5
    timeout_s: float = 5.0
    queue_size: int = 64
    drain_s: float = 5.0


class WebhookSender(threading.Thread):
    """Delivers queued alerts to one URL, in its format, on its own thread."""

    def __init__(self, target: WebhookTarget, options: DeliveryOptions = DeliveryOptions()) -> None:
        super().__init__(name=f"webhook-{redact(target.url)}", daemon=True)
        self.url = target.url
        self.format = target.format
        self.options = options
        self._q: queue.Queue[Any] = queue.Queue(maxsize=options.queue_size)
        self._abort = threading.Event()
        self._rng = random.Random()
        self._opener = urllib.request.build_opener(_RefuseRedirects())
        self.submitted = 0
        self.delivered = 0
        self.failed = 0  # tried and refused or unanswered (each said as it failed)
        self.dropped = 0  # the queue was full
        self.abandoned = 0  # still queued, retrying or in flight when the run's end left no more time

    def submit(self, alert: Alert) -> bool:
        """Queue one alert; never blocks. False (and counted) when the queue is full."""
        try:
            self._q.put_nowait(alert)
            self.submitted += 1
            return True
        except queue.Full:
            self.dropped += 1
            log.warning("webhook %s: queue full, alert dropped (%d so far)", redact(self.url), self.dropped)
            return False

    def close(self) -> None:
        """Deliver what is queued within ``drain_s``, then abandon the rest."""
        deadline = time.monotonic() + self.options.drain_s
        self.request_stop(deadline)
        self.finish(deadline)

    def request_stop(self, deadline: float) -> None:
        """Queue the end marker behind the pending alerts (waits until ``deadline``, a ``time.monotonic()``,
        at most, for room)."""
        if self.is_alive():
            try:
                self._q.put(_STOP, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                self._abort.set()

    def finish(self, deadline: float) -> None:
        """Wait until ``deadline`` for the queue to drain, then abort back-off and pending alerts; a request
        still in flight is left to its daemon thread and counted as abandoned."""
        self.join(max(0.0, deadline - time.monotonic()))
        self._abort.set()
        self.join(ABORT_GRACE_S)
        if self.is_alive():  # a request in flight: what is not delivered or failed by now is abandoned
            self.abandoned = self.submitted - self.delivered - self.failed

    def run(self) -> None:
        while True:
            if self._abort.is_set():
                self._abandon_queued()
                return
            try:
                item = self._q.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is _STOP:
                return
            if self._deliver(item):
                self.delivered += 1
            elif self._abort.is_set():  # given up while waiting to try again
                self.abandoned += 1
            else:
                self.failed += 1

    def _abandon_queued(self) -> None:
        """Count what is still queued at an aborted close as abandoned."""
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if item is not _STOP:
                self.abandoned += 1

    def _deliver(self, alert: Alert) -> bool:
        body, content_type = render(alert, self.format)
        for attempt in range(1, self.options.tries + 1):
            retry, detail = self._post(body, content_type)
            if detail is None:
                return True
            if not retry or attempt == self.options.tries:
                log.error("webhook %s: alert not delivered after %d tries: %s", redact(self.url), attempt, detail)
                return False
            delay = self.options.backoff_s * 2 ** (attempt - 1) * self._rng.uniform(0.5, 1.0)
            log.info("webhook %s: try %d failed (%s), retrying in %.2f s", redact(self.url), attempt, detail, delay)
            if self._abort.wait(delay):
                return False
        return False

    def _post(self, body: bytes, content_type: str) -> tuple[bool, str | None]:
        """One POST. Returns (worth retrying, error detail or None on success)."""
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": content_type, "User-Agent": f"stream-guard/{__version__}"})
        try:
            with self._opener.open(request, timeout=self.options.timeout_s) as response:
                response.read(65536)
                return False, None
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400:
                location = e.headers.get("Location")
                where = ""
                if location:
                    target = urllib.parse.urljoin(self.url, location)
                    where = f"to {redact(target)} ({redirect_change(self.url, target)}) "
                return False, f"HTTP {e.code} redirect {where}not followed: give --webhook the final URL"
            return e.code in RETRY_STATUS, f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:  # refused, DNS, timeout, reset
            reason = getattr(e, "reason", e)
            return True, f"{type(reason).__name__}: {reason}"


class WebhookSink(AlertSink):
    """Sends every alert to each ``--webhook`` (``[FORMAT=]URL``; see the README for the payloads)."""

    name = "webhook"

    def __init__(self, webhooks: tuple[str, ...] | list[str], alerts: AlertOptions = AlertOptions(),
                 delivery: DeliveryOptions = DeliveryOptions(), provenance: Provenance | None = None) -> None:
        super().__init__(alerts, provenance)
        self.targets = tuple(parse_webhook(w) for w in webhooks)
        self.delivery = delivery
        self.senders: list[WebhookSender] = []

    def open(self, info: StreamInfo) -> None:
        self.senders = [WebhookSender(t, self.delivery) for t in self.targets]
        for s in self.senders:
            s.start()

    def on_alert(self, alert: Alert) -> None:
        for s in self.senders:
            s.submit(alert)

    def close(self) -> None:
        """Queued alerts get :attr:`DeliveryOptions.drain_s` in all, whatever the number of URLs; those left
        are abandoned, and said."""
        deadline = time.monotonic() + self.delivery.drain_s
        for s in self.senders:
            s.request_stop(deadline)
        for s in self.senders:
            s.finish(deadline)
        for s in self.senders:
            log.info("webhook %s: %d delivered, %d failed, %d dropped, %d abandoned at the end", redact(s.url),
                     s.delivered, s.failed, s.dropped, s.abandoned)
            if s.abandoned:
                log.warning("webhook %s: %d alert(s) not delivered: still waiting for the receiver when the run "
                            "ended (%g s allowed)", redact(s.url), s.abandoned, self.delivery.drain_s)
