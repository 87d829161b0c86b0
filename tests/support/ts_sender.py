"""A live MPEG-TS stream over UDP for tests, like a camera or encoder pushing to a receiver:
a clip's packets re-muxed (real FFmpeg mpegts muxer) and sent at their own pace, the clip
looping with its timestamps running on, until stopped."""
from __future__ import annotations

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
