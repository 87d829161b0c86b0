"""A live MPEG-TS stream over UDP for tests, like a camera or encoder pushing to a receiver:
a clip's packets re-muxed (real FFmpeg mpegts muxer) and sent at their own pace, the clip
looping with its timestamps running on, until stopped; or a TS file's own bytes, sent as they
are (:class:`RawUdpTsSender`: a multiplex, a stream joined between keyframes)."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import av


class UdpTsSender(threading.Thread):
    """Sends ``clip`` (every stream) to ``udp://127.0.0.1:port`` in real time until :meth:`stop`."""

    def __init__(self, clip: Path, port: int) -> None:
        super().__init__(name="ts-sender", daemon=True)
        self.clip = clip
        self.url = f"udp://127.0.0.1:{port}"
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(10)

    def run(self) -> None:
        with av.open(f"{self.url}?pkt_size=1316", "w", format="mpegts") as out:
            with av.open(str(self.clip)) as probe:
                streams = {s.index: out.add_stream_from_template(s) for s in probe.streams}
            started, offset_s = time.monotonic(), 0.0
            while not self._stopping.is_set():
                offset_s += self._send_once(out, streams, started, offset_s)

    def _send_once(self, out: av.container.OutputContainer, streams: dict, started: float,
                   offset_s: float) -> float:
        """Send the clip once, shifted by ``offset_s``; the shift for the next time, in seconds."""
        length = 0.0
        with av.open(str(self.clip)) as src:
            for packet in src.demux():
                if packet.dts is None or self._stopping.is_set():
                    continue
                t = float(packet.dts * packet.time_base)
                length = max(length, t + float((packet.duration or 0) * packet.time_base))
                wait = started + offset_s + t - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                shift = round(offset_s / packet.time_base)
                packet.pts += shift
                packet.dts += shift
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
        return length + 0.04  # a gap between loops, so no stream's timestamps repeat (priming, flush)


class RawUdpTsSender(threading.Thread):
    """Sends the bytes of an MPEG-TS file (``data``: whole 188-byte packets) to
    ``udp://127.0.0.1:port`` at the file's mean bit rate over ``seconds``, seven packets a datagram,
    looping, as a head-end or an encoder does; the receiver joins wherever the stream is when it
    starts listening. Sending starts ``delay_s`` after :meth:`start`, from byte ``offset``."""

    def __init__(self, data: bytes, seconds: float, port: int, offset: int = 0, delay_s: float = 0.0) -> None:
        super().__init__(name="raw-ts-sender", daemon=True)
        self.data, self.offset, self.delay_s = data, offset - offset % 188, delay_s
        self.bytes_per_s = len(data) / seconds
        self.url = f"udp://127.0.0.1:{port}"
        self._port = port
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(10)

    def run(self) -> None:
        if self._stopping.wait(self.delay_s):
            return
        sent, started = 0, time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not self._stopping.is_set():
                at = (self.offset + sent) % len(self.data)
                datagram = self.data[at:at + 7 * 188]
                sock.sendto(datagram, ("127.0.0.1", self._port))
                sent += len(datagram)
                wait = started + sent / self.bytes_per_s - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
