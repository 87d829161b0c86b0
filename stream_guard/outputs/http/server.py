"""The live view HTTP server: aiohttp on its own asyncio loop, in its own thread.

The sink thread hands it JPEG frames, H.264 fragments and event texts through ``publish_*``
(thread-safe, never blocking); each client gets the newest frame, or its own bounded queue of
fragments or events, so a slow browser only slows itself.
"""
from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
import mimetypes
import threading
from importlib import resources
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from stream_guard.errors import OutputError
from stream_guard.outputs.http.live_mp4 import Mp4Fragment
from stream_guard.outputs.http.metrics import CONTENT_TYPE, SOUND, LiveMetrics
from stream_guard.outputs.http.mp4_relay import SOUND_CLIENT_QUEUE, Mp4Relay, end_stream
from stream_guard.outputs.http.options import ServeOptions, is_loopback
from stream_guard.outputs.http.state import LiveState

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0  # SSE comment this often so proxies keep the connection
CLIENT_QUEUE = 512  # event records buffered per SSE client; a client further behind is disconnected
START_TIMEOUT_S = 10.0
VIDEO_WAIT_S = 30.0  # how long /stream.mp4 waits for a first frame before answering 503
STOP_TIMEOUT_S = 10.0
# A streaming client (video, sound, events) that takes nothing for this long is cut off: it kept its encoder
# running and its count in the viewer gauge for ever, and held up the stop.
WRITE_TIMEOUT_S = 10.0
PAGES = {"/": "index.html", "/overlay": "overlay.html"}
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Cache-Control": "no-store"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def static_files() -> dict[str, Path]:
    """The files the server may send: exactly those in this package's ``static`` folder."""
    folder = resources.files("stream_guard.outputs.http") / "static"
    return {entry.name: Path(str(entry)) for entry in folder.iterdir() if entry.is_file()}


def _names_this_machine(host_header: str | None) -> bool:
    """Whether a request's ``Host`` names this machine by loopback (``localhost``, ``127.0.0.1:8080``,
    ``[::1]:8080``, ``x.localhost``); a request without one (HTTP/1.0) is not a browser's."""
    if host_header is None:
        return True
    try:
        name = urlsplit(f"//{host_header}").hostname or ""
    except ValueError:
        return False
    return is_loopback(name) or name.endswith(".localhost")


class LiveServer:
    """Serves pages, MJPEG, SSE, JSON and metrics for one run."""

    def __init__(self, options: ServeOptions, state: LiveState, metrics: LiveMetrics,
                 sound_codec: str | None = None) -> None:
        """``sound_codec``: the RFC 6381 name of the sound sent beside the H.264 video
        (``/sound.mp4``), None when there is none."""
        self.options = options
        self.state = state
        self.metrics = metrics
        self._token = None if options.token is None else options.token.encode("utf-8")
        self._files = static_files()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._closing = False
        self._subscribers: set[asyncio.Queue] = set()
        self._streaming: set[asyncio.BaseTransport] = set()  # clients being written to (one that reads nothing waits)
        self._jpeg: bytes | None = None
        self._jpeg_seq = 0
        self._frame_event: asyncio.Event | None = None
        self.mjpeg_clients = 0  # read by the sink thread to decide whether to encode
        self.mp4_clients = 0  # the same for H.264: viewers connected or waiting for a first frame
        self.sound_codec = sound_codec
        self._mp4: dict[str, Mp4Relay] = {}  # "video", "sound": made on the loop
        metrics.viewers.labels("h264").set_function(lambda: self.mp4_clients)
        metrics.viewers.labels("mjpeg").set_function(lambda: self.mjpeg_clients)
        self.port: int | None = None

    # ---- lifecycle (sink thread) ----

    def start(self) -> None:
        """Bind and serve; raises OutputError when the address cannot be bound."""
        self._thread = threading.Thread(target=self._serve, name="http-live-view", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise OutputError(f"--serve {self._where()}: the server did not start in {START_TIMEOUT_S:.0f} s")
        if self._error is not None:
            self._thread.join(STOP_TIMEOUT_S)
            raise self._bind_error(self._error)

    def stop(self) -> None:
        """End every client's stream, stop listening, end the thread. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            future.result(STOP_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - report, then stop the loop anyway
            log.warning("live view: shutdown incomplete: %s", e)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT_S)

    def publish_frame(self, jpeg: bytes) -> None:
        """Make ``jpeg`` the newest frame (thread-safe)."""
        if self._loop is not None and not self._closing:
            self._loop.call_soon_threadsafe(self._set_frame, jpeg)

    def publish_mp4_start(self, init: bytes, codec: str, track: str = "video") -> None:
        """A new encoding of ``track`` (``video``: H.264, ``sound``) began: its init segment and
        RFC 6381 codec name (thread-safe)."""
        self._on_loop(lambda: self._mp4[track].start(init, codec))

    def publish_mp4_fragments(self, fragments: list[Mp4Fragment], track: str = "video") -> None:
        """Fragments of ``track``'s current encoding, in order (thread-safe)."""
        if fragments:
            self._on_loop(lambda: self._mp4[track].add(fragments))

    def publish_mp4_end(self) -> None:
        """The H.264 encoding, and the sound with it, stopped: their viewers' streams end (thread-safe)."""
        self._on_loop(self._end_mp4)

    def _end_mp4(self) -> None:
        for relay in self._mp4.values():
            relay.end()

    def _on_loop(self, call: Callable[[], object]) -> None:
        if self._loop is not None and not self._closing:
            self._loop.call_soon_threadsafe(call)

    def publish_events(self, texts: list[str]) -> None:
        """Send JSON event texts to every SSE client (thread-safe)."""
        if texts and self._loop is not None and not self._closing:
            self._loop.call_soon_threadsafe(self._fan_out, texts)

    # ---- loop thread ----

    def _where(self) -> str:
        return f"{self.options.display_host}:{self.options.port}"

    def _bind_error(self, e: BaseException) -> OutputError:
        if isinstance(e, OSError) and e.errno == errno.EADDRINUSE:
            return OutputError(f"--serve {self._where()}: port {self.options.port} is already in use")
        if isinstance(e, OSError):
            return OutputError(f"--serve {self._where()}: cannot listen ({e.strerror or e})")
        return OutputError(f"--serve {self._where()}: cannot listen ({e})")

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._start())
            except Exception as e:  # noqa: BLE001 - handed to start() on the sink thread
                self._error = e
                if self._runner is not None:
                    loop.run_until_complete(self._runner.cleanup())
                return
            finally:
                self._ready.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _start(self) -> None:
        self._frame_event = asyncio.Event()
        self._mp4 = {"video": Mp4Relay(), "sound": Mp4Relay(SOUND_CLIENT_QUEUE)}
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/overlay", self._page)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/stream.mjpg", self._mjpeg)
        app.router.add_get("/stream.mp4", self._h264)
        app.router.add_get("/sound.mp4", self._sound)
        app.router.add_get("/events", self._events)
        app.router.add_get("/api/status", self._status)
        app.router.add_get("/api/tracks", self._tracks)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._health)
        # no access log: query strings may hold the token
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _shutdown(self) -> None:
        self._closing = True
        for q in list(self._subscribers):
            self._close_queue(q)
        self._set_frame(None)
        self._end_mp4()
        for transport in list(self._streaming):  # a client that reads nothing would wait out the clean-up
            transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _send(self, request: web.Request, response: web.StreamResponse, data: bytes) -> None:
        """Write to a streaming client, cutting it off (:class:`ConnectionResetError`) when it has taken nothing
        for :data:`WRITE_TIMEOUT_S`."""
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the client has gone")
        self._streaming.add(transport)
        try:
            await asyncio.wait_for(response.write(data), WRITE_TIMEOUT_S)
        except asyncio.TimeoutError:
            transport.abort()
            raise ConnectionResetError(f"the client took nothing for {WRITE_TIMEOUT_S:g} s") from None
        finally:
            self._streaming.discard(transport)

    def _set_frame(self, jpeg: bytes | None) -> None:
        if jpeg is not None:
            self._jpeg = jpeg
            self._jpeg_seq += 1
        event, self._frame_event = self._frame_event, asyncio.Event()
        if event is not None:
            event.set()

    def _fan_out(self, texts: list[str]) -> None:
        for q in list(self._subscribers):
            for text in texts:
                try:
                    q.put_nowait(text)
                except asyncio.QueueFull:  # this client is too far behind: end its stream (it reconnects)
                    self._close_queue(q)
                    break

    def _close_queue(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)
        end_stream(q)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is not None and not self._authorized(request):
            raise web.HTTPUnauthorized(text="401: a valid token is required\n",
                                       headers={"WWW-Authenticate": 'Bearer realm="stream_guard"', **SECURITY_HEADERS})
        if self._token is None and not _names_this_machine(request.headers.get("Host")):
            # Without a token only this machine may ask; a web page whose name an attacker points at 127.0.0.1
            # (DNS rebinding) would run in the browser here, and read the video and its data, but under that name.
            raise web.HTTPForbidden(text="403: without a token (STREAM_GUARD_TOKEN) the live view answers only to "
                                         "localhost and loopback addresses\n", headers=SECURITY_HEADERS)
        try:
            response = await handler(request)
        except web.HTTPException as e:
            e.headers.update(SECURITY_HEADERS)
            raise
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
        return response

    def _authorized(self, request: web.Request) -> bool:
        assert self._token is not None
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            return hmac.compare_digest(header[7:].strip().encode("utf-8"), self._token)
        given = request.query.get("token")
        return given is not None and hmac.compare_digest(given.encode("utf-8"), self._token)

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return self._file(PAGES[request.path])

    async def _static(self, request: web.Request) -> web.StreamResponse:
        return self._file(request.match_info["name"])

    def _file(self, name: str) -> web.StreamResponse:
        path = self._files.get(name)  # only names listed from our own folder: no traversal possible
        if path is None:
            raise web.HTTPNotFound()
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return web.Response(body=path.read_bytes(), content_type=ctype,
                            charset="utf-8" if ctype.startswith("text/") or ctype.endswith("javascript") else None)

    async def _status(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state.status())

    async def _tracks(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state.tracks())

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok", "state": self.state.source_state})

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        response = web.Response(body=self.metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no",
                                               **SECURITY_HEADERS})
        await response.prepare(request)
        q: asyncio.Queue = asyncio.Queue(maxsize=CLIENT_QUEUE)
        self._subscribers.add(q)
        try:
            for record in self.state.replay():
                await self._send(request, response, _sse(json.dumps(record, separators=(",", ":"), default=str)))
            while not self._closing:
                try:
                    text = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    await self._send(request, response, b": keep-alive\n\n")
                    continue
                if text is None:
                    break
                await self._send(request, response, _sse(text))
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self._subscribers.discard(q)
        return response

    async def _mjpeg(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame",
                                               **SECURITY_HEADERS})
        await response.prepare(request)
        self.mjpeg_clients += 1
        sent = 0
        try:
            while not self._closing:
                if self._jpeg is None or self._jpeg_seq == sent:
                    assert self._frame_event is not None
                    try:
                        await asyncio.wait_for(self._frame_event.wait(), KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        pass
                    continue
                sent, jpeg = self._jpeg_seq, self._jpeg
                await self._send(request, response, b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d"
                                 b"\r\n\r\n" % len(jpeg) + jpeg + b"\r\n")
                self.metrics.video_bytes.labels("mjpeg").inc(len(jpeg))
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            self.mjpeg_clients -= 1
        return response

    async def _h264(self, request: web.Request) -> web.StreamResponse:
        self.mp4_clients += 1  # the sink starts encoding when it sees a viewer
        try:
            # the page learns here, before it sets up its decoders, whether a sound stream goes with the video
            sound = {} if self.sound_codec is None else {"X-Sound": f'audio/mp4; codecs="{self.sound_codec}"'}
            return await self._send_mp4(request, "video", "h264", sound)
        finally:
            self.mp4_clients -= 1

    async def _sound(self, request: web.Request) -> web.StreamResponse:
        """The source's sound, for a page that also plays ``/stream.mp4`` (it comes only while the video is watched)."""
        if self.sound_codec is None:
            raise web.HTTPNotFound(text="404: this run has no sound (the source has none, or it is not paced)\n")
        return await self._send_mp4(request, "sound", SOUND)

    async def _send_mp4(self, request: web.Request, track: str, counted_as: str,
                        headers: dict[str, str] | None = None) -> web.StreamResponse:
        relay = self._mp4[track]
        joined = await relay.join(VIDEO_WAIT_S)
        if joined is None:
            raise web.HTTPServiceUnavailable(text="503: no video yet (the source is not sending frames)\n")
        q, codec = joined
        kind = "video" if track == "video" else "audio"
        response = web.StreamResponse(headers={"Content-Type": f'{kind}/mp4; codecs="{codec}"', **(headers or {}),
                                               **SECURITY_HEADERS})
        try:
            await response.prepare(request)
            while (data := await q.get()) is not None:
                await self._send(request, response, data)
                self.metrics.video_bytes.labels(counted_as).inc(len(data))
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            relay.leave(q)
        return response


def _sse(text: str) -> bytes:
    return b"data: " + text.encode("utf-8") + b"\n\n"


def describe(options: ServeOptions, port: int) -> str:
    """The one line printed at start: where to point a browser (never the token)."""
    base = f"http://{options.display_host}:{port}"
    auth = " (token required: Authorization: Bearer or ?token=)" if options.token else ""
    return f"stream-guard: live view at {base}/ (OBS overlay {base}/overlay, metrics {base}/metrics){auth}"


