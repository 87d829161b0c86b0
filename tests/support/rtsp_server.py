"""A small RTSP server for tests: serves one H.264 or H.265 file in a loop at real-time pace.

Written from RFC 2326 (RTSP 1.0), RFC 3550 (RTP/RTCP), RFC 6184 (H.264 RTP payload),
RFC 7798 (H.265 RTP payload) and RFC 2617 (Basic/Digest auth). The file (H.264 or H.265,
as most IP cameras now send) is demuxed once with PyAV (no re-encode); each access unit
is split into NAL units and sent as single-NAL or fragmentation-unit RTP packets, paced
by decode timestamps. RTP timestamps keep increasing across loops.

Transports: RTP over the RTSP TCP connection (interleaved) and UDP unicast. Each
client gets its own session; by default a session starts at the first (key) frame of
the file; with ``--live`` all sessions share one timeline, so a client joins mid-GOP
as with a real camera.

Usage::

    python -m tests.support.rtsp_server --file clip.mp4 --port 8554 \
        [--path /live] [--auth user:pass [--auth-scheme any|basic|digest]] \
        [--refuse [STATUS|close]] [--live] [--session-timeout S] [-v]

Prints ``listening on rtsp://HOST:PORT/PATH`` on stdout when ready (``--port 0``
picks a free port, shown there). Stops cleanly on SIGTERM/SIGINT, and on stdin EOF
with ``--exit-on-stdin-eof`` (so a test's server dies with the test process).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import logging
import os
import random
import re
import secrets
import select
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import av

LOG = logging.getLogger("rtsp_server")

RTP_CLOCK = 90_000
PAYLOAD_TYPE = 96
MAX_RTP_PAYLOAD = 1400
RTCP_INTERVAL_S = 1.0
POLL_S = 0.2
SEND_TIMEOUT_S = 10.0
NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01

NAL_IDR, NAL_SPS, NAL_PPS, NAL_FU_A = 5, 7, 8, 28
# H.265 (RFC 7798; nal_unit_type values from ITU-T H.265 table 7-1): random-access pictures
# (BLA, IDR, CRA) are 16-21, the parameter sets 32-34, a fragmentation unit 49.
HEVC_IRAP, HEVC_VPS, HEVC_SPS, HEVC_PPS, HEVC_FU = range(16, 22), 32, 33, 34, 49

REASONS: Dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    461: "Unsupported Transport",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "RTSP Version Not Supported",
}
PUBLIC_METHODS = "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER"


# --------------------------------------------------------------------------- clip


@dataclass(frozen=True)
class AccessUnit:
    """One coded picture: send time ``dts`` and display time ``pts`` in seconds from
    the clip start, its NAL units (no start codes / length prefixes)."""

    dts: float
    pts: float
    nals: Tuple[bytes, ...]
    keyframe: bool


@dataclass(frozen=True)
class Clip:
    """The whole H.264 or H.265 (``codec`` ``hevc``) elementary stream of a file, kept in memory;
    ``vps``: H.265's video parameter set."""

    units: Tuple[AccessUnit, ...]
    duration: float
    sps: bytes
    pps: bytes
    fps: float
    width: int
    height: int
    codec: str = "h264"
    vps: bytes = b""


def split_annexb(data: bytes) -> List[bytes]:
    """NAL units of an Annex B byte stream (00 00 01 / 00 00 00 01 start codes)."""
    starts = [m.end() for m in re.finditer(b"\x00\x00\x01", data)]
    nals = []
    for i, start in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        nal = data[start:end].rstrip(b"\x00") if i + 1 < len(starts) else data[start:end]
        if nal:
            nals.append(nal)
    return nals


def split_length_prefixed(data: bytes, length_size: int) -> List[bytes]:
    """NAL units of an AVCC (MP4/MKV) sample with ``length_size``-byte big-endian lengths."""
    nals, pos = [], 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if size:
            nals.append(data[pos : pos + size])
        pos += size
    return nals


def parse_avcc(extradata: bytes) -> Tuple[int, List[bytes], List[bytes]]:
    """(NAL length size, SPS list, PPS list) from an ``avcC`` decoder configuration record."""
    length_size = (extradata[4] & 3) + 1
    pos, sps = 6, []
    for _ in range(extradata[5] & 0x1F):
        size = int.from_bytes(extradata[pos : pos + 2], "big")
        sps.append(extradata[pos + 2 : pos + 2 + size])
        pos += 2 + size
    pps = []
    for _ in range(extradata[pos]):
        size = int.from_bytes(extradata[pos + 1 : pos + 3], "big")
        pps.append(extradata[pos + 3 : pos + 3 + size])
        pos += 2 + size
    return length_size, sps, pps


def parse_hvcc(extradata: bytes) -> Tuple[int, Dict[int, List[bytes]]]:
    """(NAL length size, NAL units by type) from an ``hvcC`` decoder configuration record
    (ISO/IEC 14496-15 8.3.3): 22 bytes of profile fields, then arrays of NAL units."""
    length_size = (extradata[21] & 3) + 1
    pos, by_type = 23, {}
    for _ in range(extradata[22]):
        kind, count = extradata[pos] & 0x3F, int.from_bytes(extradata[pos + 1 : pos + 3], "big")
        pos += 3
        for _ in range(count):
            size = int.from_bytes(extradata[pos : pos + 2], "big")
            by_type.setdefault(kind, []).append(extradata[pos + 2 : pos + 2 + size])
            pos += 2 + size
    return length_size, by_type


def nal_type(nal: bytes, codec: str = "h264") -> int:
    """The ``nal_unit_type`` of a NAL unit: 5 bits of H.264's one-byte header, 6 of H.265's two."""
    return (nal[0] >> 1) & 0x3F if codec == "hevc" else nal[0] & 0x1F


def _is_random_access(nal: bytes, codec: str) -> bool:
    return nal_type(nal, codec) in HEVC_IRAP if codec == "hevc" else nal_type(nal) == NAL_IDR


def load_clip(path: str) -> Clip:
    """Demux the first video stream of ``path`` (H.264 or H.265) into memory."""
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        codec = ctx.name
        if codec not in ("h264", "hevc"):
            raise ValueError(f"{path}: video codec is {codec}, this server sends H.264 and H.265 only")
        extradata = bytes(ctx.extradata or b"")
        split, params = _nal_splitter(extradata, codec)
        raw = [
            (pkt.dts if pkt.dts is not None else pkt.pts, pkt.pts, pkt.duration, pkt.is_keyframe, split(bytes(pkt)))
            for pkt in container.demux(stream)
            if pkt.size and pkt.pts is not None
        ]
        time_base = float(stream.time_base)
        fps = float(stream.average_rate or stream.guessed_rate or 30)
        width, height = ctx.width, ctx.height
    if not raw:
        raise ValueError(f"{path}: no video packets")
    kinds = (HEVC_VPS, HEVC_SPS, HEVC_PPS) if codec == "hevc" else (NAL_SPS, NAL_PPS)
    sets = _parameter_sets(params, kinds, [nals for *_, nals in raw], codec)
    units, duration = _build_units(raw, time_base, fps, sets, codec)
    vps, sps, pps = sets if codec == "hevc" else (b"", *sets)
    return Clip(units, duration, sps, pps, fps, width, height, codec, vps)


def _nal_splitter(extradata: bytes, codec: str) -> Tuple[Callable[[bytes], List[bytes]], Dict[int, List[bytes]]]:
    """A function splitting samples into NAL units, plus the parameter sets in extradata by type."""
    if extradata[:1] == b"\x01" and codec == "hevc" and len(extradata) >= 23:
        length_size, params = parse_hvcc(extradata)
        return (lambda data: split_length_prefixed(data, length_size)), params
    if extradata[:1] == b"\x01" and len(extradata) >= 7:
        length_size, sps, pps = parse_avcc(extradata)
        return (lambda data: split_length_prefixed(data, length_size)), {NAL_SPS: sps, NAL_PPS: pps}
    params: Dict[int, List[bytes]] = {}
    for nal in split_annexb(extradata):
        params.setdefault(nal_type(nal, codec), []).append(nal)
    return split_annexb, params


def _parameter_sets(params: Dict[int, List[bytes]], kinds: Sequence[int], samples: List[List[bytes]],
                    codec: str) -> Tuple[bytes, ...]:
    """The first parameter set of each of ``kinds``, from extradata or else in-band."""
    found = []
    for kind in kinds:
        candidates = params.get(kind) or [n for nals in samples for n in nals if nal_type(n, codec) == kind]
        if not candidates:
            raise ValueError(f"no parameter set of NAL type {kind} found in the {codec} stream")
        found.append(candidates[0])
    return tuple(found)


def _build_units(
    raw: List[Tuple[int, int, Optional[int], bool, List[bytes]]],
    time_base: float,
    fps: float,
    parameter_sets: Tuple[bytes, ...],
    codec: str,
) -> Tuple[Tuple[AccessUnit, ...], float]:
    """Access units with times relative to the first DTS, the parameter sets repeated
    in-band before every random-access picture, and the loop duration."""
    raw.sort(key=lambda r: r[0])
    dts0 = raw[0][0]
    units = []
    kinds = {nal_type(p, codec) for p in parameter_sets}
    for dts, pts, _, keyframe, nals in raw:
        has_idr = any(_is_random_access(n, codec) for n in nals)
        if has_idr and not any(nal_type(n, codec) in kinds for n in nals):
            nals = [*parameter_sets, *nals]
        units.append(AccessUnit((dts - dts0) * time_base, (pts - dts0) * time_base, tuple(nals), keyframe or has_idr))
    last_duration = raw[-1][2] * time_base if raw[-1][2] else 1.0 / fps
    return tuple(units), units[-1].dts + last_duration


def _media_format(clip: Clip) -> List[str]:
    """The track's rtpmap and fmtp lines: RFC 6184 section 8.1 (H.264), RFC 7798 section 7.1 (H.265)."""
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    if clip.codec == "hevc":
        return [f"a=rtpmap:{PAYLOAD_TYPE} H265/{RTP_CLOCK}",
                f"a=fmtp:{PAYLOAD_TYPE} sprop-vps={b64(clip.vps)};sprop-sps={b64(clip.sps)};sprop-pps={b64(clip.pps)}"]
    return [f"a=rtpmap:{PAYLOAD_TYPE} H264/{RTP_CLOCK}",
            f"a=fmtp:{PAYLOAD_TYPE} packetization-mode=1;profile-level-id={clip.sps[1:4].hex().upper()};"
            f"sprop-parameter-sets={b64(clip.sps)},{b64(clip.pps)}"]


def build_sdp(clip: Clip, host: str) -> str:
    """Session description (RFC 4566) for the single video track."""
    lines = [
        "v=0",
        f"o=- {random.getrandbits(32)} 1 IN IP4 {host}",
        "s=stream_guard test stream",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "a=control:*",
        f"m=video 0 RTP/AVP {PAYLOAD_TYPE}",
        *_media_format(clip),
        f"a=framerate:{clip.fps:g}",
        "a=control:trackID=0",
    ]
    return "\r\n".join(lines) + "\r\n"


# --------------------------------------------------------------------------- RTP


def fragment_nal(nal: bytes, max_payload: int = MAX_RTP_PAYLOAD, codec: str = "h264") -> List[bytes]:
    """RTP payloads for one NAL unit: the NAL itself if it fits (single NAL unit
    packet), else FU-A fragments (RFC 6184 section 5.8) or H.265 FUs (RFC 7798 section 4.4.3)."""
    if len(nal) <= max_payload:
        return [nal]
    if codec == "hevc":
        return _hevc_fragments(nal, max_payload)
    indicator = (nal[0] & 0xE0) | NAL_FU_A
    body, step = nal[1:], max_payload - 2
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    payloads = []
    for i, chunk in enumerate(chunks):
        header = nal_type(nal) | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
        payloads.append(bytes((indicator, header)) + chunk)
    return payloads


def _hevc_fragments(nal: bytes, max_payload: int) -> List[bytes]:
    """H.265 fragmentation units: a payload header of type 49 (the NAL header's F, LayerId and
    TID kept), an FU header (start and end bits, the NAL's type), then a slice of the NAL's body."""
    header = bytes(((nal[0] & 0x81) | (HEVC_FU << 1), nal[1]))
    body, step = nal[2:], max_payload - 3
    chunks = [body[i : i + step] for i in range(0, len(body), step)]
    kind = nal_type(nal, "hevc")
    return [header + bytes((kind | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0),)) + chunk
            for i, chunk in enumerate(chunks)]


def rtp_packet(payload: bytes, seq: int, timestamp: int, ssrc: int, marker: bool) -> bytes:
    """RTP version 2 packet, no padding/extension/CSRC (RFC 3550 section 5.1)."""
    header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | PAYLOAD_TYPE, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
    return header + payload


def rtcp_sender_report(ssrc: int, wall_time: float, rtp_time: int, packets: int, octets: int) -> bytes:
    """RTCP SR without report blocks (RFC 3550 section 6.4.1)."""
    ntp = wall_time + NTP_EPOCH_OFFSET
    seconds = int(ntp)
    fraction = int((ntp - seconds) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack(
        "!BBHIIIIII", 0x80, 200, 6, ssrc, seconds & 0xFFFFFFFF, fraction,
        rtp_time & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF,
    )


class InterleavedSink:
    """Sends RTP/RTCP inside the RTSP TCP connection (RFC 2326 section 10.12)."""

    def __init__(self, writer: "Connection", rtp_channel: int, rtcp_channel: int) -> None:
        self.writer = writer
        self.rtp_channel = rtp_channel
        self.rtcp_channel = rtcp_channel

    def send_rtp(self, packet: bytes) -> None:
        """Frame one RTP packet as ``$ channel length data``."""
        self.writer.send_bytes(struct.pack("!cBH", b"$", self.rtp_channel, len(packet)) + packet)

    def send_rtcp(self, packet: bytes) -> None:
        """Frame one RTCP packet on the RTCP channel."""
        self.writer.send_bytes(struct.pack("!cBH", b"$", self.rtcp_channel, len(packet)) + packet)

    def close(self) -> None:
        """Nothing to release: the connection owns the socket."""


class UdpSink:
    """Sends RTP/RTCP by UDP from a local port pair to the client's port pair."""

    def __init__(self, bind_host: str, client_host: str, client_ports: Tuple[int, int]) -> None:
        self.rtp_sock, self.rtcp_sock = _udp_port_pair(bind_host)
        self.rtp_addr = (client_host, client_ports[0])
        self.rtcp_addr = (client_host, client_ports[1])

    @property
    def server_ports(self) -> Tuple[int, int]:
        """Local (RTP, RTCP) ports."""
        return self.rtp_sock.getsockname()[1], self.rtcp_sock.getsockname()[1]

    def send_rtp(self, packet: bytes) -> None:
        """Send one RTP datagram."""
        self.rtp_sock.sendto(packet, self.rtp_addr)

    def send_rtcp(self, packet: bytes) -> None:
        """Send one RTCP datagram."""
        self.rtcp_sock.sendto(packet, self.rtcp_addr)

    def close(self) -> None:
        """Close both sockets."""
        self.rtp_sock.close()
        self.rtcp_sock.close()


def _udp_port_pair(host: str, attempts: int = 50) -> Tuple[socket.socket, socket.socket]:
    """Two UDP sockets on an even port and the next odd one (RFC 3550 section 11)."""
    for _ in range(attempts):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind((host, 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0 and port < 65535:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind((host, port + 1))
                return rtp, rtcp
            except OSError:
                rtcp.close()
        rtp.close()
    raise OSError("no free UDP port pair")


# --------------------------------------------------------------------------- sessions


@dataclass
class Timeline:
    """Where a session starts: global frame number ``first`` (frames counted across
    loops) and the monotonic clock time at which media time 0 is due."""

    first: int
    wall_zero: float


def unit_times(clip: Clip, n: int) -> Tuple[float, float, AccessUnit]:
    """(send time, display time, unit) of global frame ``n`` in media seconds."""
    loop, index = divmod(n, len(clip.units))
    unit = clip.units[index]
    offset = loop * clip.duration
    return offset + unit.dts, offset + unit.pts, unit


def live_timeline(clip: Clip, epoch: float, now: float) -> Timeline:
    """Join a timeline that started at ``epoch``: the first frame not yet due."""
    elapsed = max(0.0, now - epoch)
    loop, rest = divmod(elapsed, clip.duration)
    index = next((i for i, u in enumerate(clip.units) if u.dts >= rest), len(clip.units))
    return Timeline(int(loop) * len(clip.units) + index, epoch)


class Session:
    """One client's stream: a thread that sends the clip's RTP packets in real time."""

    def __init__(self, session_id: str, clip: Clip, sink: object, ssrc: int) -> None:
        self.id = session_id
        self.clip = clip
        self.sink = sink
        self.ssrc = ssrc
        self.seq = random.getrandbits(16)
        self.rtp_base = random.getrandbits(32)
        self.timeline: Optional[Timeline] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._packets = 0
        self._octets = 0

    @property
    def playing(self) -> bool:
        """Whether the sender thread has been started."""
        return self._thread is not None

    def rtp_time(self, media_time: float) -> int:
        """RTP timestamp of a media time (seconds on the session's timeline)."""
        assert self.timeline is not None
        first_pts = unit_times(self.clip, self.timeline.first)[1]
        return (self.rtp_base + round((media_time - first_pts) * RTP_CLOCK)) & 0xFFFFFFFF

    def play(self, timeline: Timeline) -> None:
        """Start sending from ``timeline`` (the PLAY reply must already be sent)."""
        self.timeline = timeline
        self._thread = threading.Thread(target=self._run, name=f"rtp-{self.id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the sender thread, wait for it, release the sink."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self.sink.close()

    def _run(self) -> None:
        """Pace access units by send time; send an RTCP SR about once a second."""
        assert self.timeline is not None
        n, next_report = self.timeline.first, 0.0
        try:
            while not self._stop.is_set():
                send_at, display_at, unit = unit_times(self.clip, n)
                delay = self.timeline.wall_zero + send_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                if time.monotonic() >= next_report:
                    self._send_report()
                    next_report = time.monotonic() + RTCP_INTERVAL_S
                self._send_unit(unit, self.rtp_time(display_at))
                n += 1
        except OSError as error:
            LOG.info("session %s: send failed (%s), stopping", self.id, error)

    def _send_unit(self, unit: AccessUnit, timestamp: int) -> None:
        """All RTP packets of one access unit; marker bit on the last one."""
        payloads = [p for nal in unit.nals for p in fragment_nal(nal, codec=self.clip.codec)]
        for i, payload in enumerate(payloads):
            packet = rtp_packet(payload, self.seq, timestamp, self.ssrc, marker=i == len(payloads) - 1)
            self.sink.send_rtp(packet)
            self.seq = (self.seq + 1) & 0xFFFF
            self._packets += 1
            self._octets += len(payload)

    def _send_report(self) -> None:
        """RTCP sender report mapping the wall clock to the RTP clock now."""
        assert self.timeline is not None
        media_now = time.monotonic() - self.timeline.wall_zero
        report = rtcp_sender_report(self.ssrc, time.time(), self.rtp_time(media_now), self._packets, self._octets)
        self.sink.send_rtcp(report)


# --------------------------------------------------------------------------- RTSP messages


@dataclass
class Request:
    """One parsed RTSP request; header names lower-cased."""

    method: str
    uri: str
    version: str
    headers: Dict[str, str]
    body: bytes = b""

    @property
    def cseq(self) -> str:
        """The CSeq header, echoed in the response."""
        return self.headers.get("cseq", "0")


@dataclass
class Response:
    """An RTSP response to serialize."""

    status: int
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    after_send: Optional[Callable[[], None]] = None

    def encode(self, cseq: str) -> bytes:
        """Status line, headers (CSeq first) and body."""
        lines = [f"RTSP/1.0 {self.status} {REASONS.get(self.status, 'Error')}", f"CSeq: {cseq}",
                 "Server: stream_guard-test-rtsp"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.body:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def parse_request(head: bytes) -> Request:
    """Parse a request line and headers (without body)."""
    text = head.decode("utf-8", "replace")
    first, *rest = text.split("\r\n")
    parts = first.split()
    if len(parts) != 3:
        raise ValueError(f"bad request line {first!r}")
    headers = {}
    for line in rest:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return Request(parts[0].upper(), parts[1], parts[2], headers)


def parse_transport(value: str) -> Dict[str, str]:
    """First transport spec of a Transport header as {param: value}; the profile is
    under key ``""`` (e.g. ``RTP/AVP/TCP``)."""
    spec = value.split(",")[0]
    profile, *params = [p.strip() for p in spec.split(";")]
    out = {"": profile.upper()}
    for param in params:
        name, _, val = param.partition("=")
        out[name.lower()] = val
    return out


def _port_range(value: str) -> Tuple[int, int]:
    """``"a-b"`` or ``"a"`` as (a, b)."""
    low, _, high = value.partition("-")
    return int(low), int(high) if high else int(low) + 1


# --------------------------------------------------------------------------- auth


class Authenticator:
    """RTSP Basic and/or Digest (RFC 2617, MD5, qop optional) against one user."""

    def __init__(self, credentials: str, scheme: str = "any", realm: str = "stream_guard") -> None:
        self.user, _, self.password = credentials.partition(":")
        self.scheme = scheme
        self.realm = realm
        self.nonce = secrets.token_hex(16)

    def challenges(self) -> List[Tuple[str, str]]:
        """WWW-Authenticate headers for a 401 (Digest first when both are offered)."""
        headers = []
        if self.scheme in ("any", "digest"):
            headers.append(("WWW-Authenticate", f'Digest realm="{self.realm}", nonce="{self.nonce}", algorithm=MD5'))
        if self.scheme in ("any", "basic"):
            headers.append(("WWW-Authenticate", f'Basic realm="{self.realm}"'))
        return headers

    def check(self, request: Request) -> bool:
        """Whether the Authorization header holds valid credentials."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and self.scheme in ("any", "basic"):
            return self._check_basic(value.strip())
        if scheme == "digest" and self.scheme in ("any", "digest"):
            return self._check_digest(request.method, value)
        return False

    def _check_basic(self, token: str) -> bool:
        """Compare base64 ``user:password``."""
        try:
            given = base64.b64decode(token, validate=True)
        except ValueError:
            return False
        return hmac.compare_digest(given, f"{self.user}:{self.password}".encode())

    def _check_digest(self, method: str, value: str) -> bool:
        """Recompute the digest response from the client's own fields."""
        fields = {k.lower(): v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]*)', value)}
        if fields.get("username") != self.user or fields.get("nonce") != self.nonce:
            return False
        md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
        ha1 = md5(f"{self.user}:{self.realm}:{self.password}")
        ha2 = md5(f"{method}:{fields.get('uri', '')}")
        if fields.get("qop"):
            expected = md5(f"{ha1}:{self.nonce}:{fields.get('nc', '')}:{fields.get('cnonce', '')}:{fields['qop']}:{ha2}")
        else:
            expected = md5(f"{ha1}:{self.nonce}:{ha2}")
        return hmac.compare_digest(expected, fields.get("response", "").lower())


# --------------------------------------------------------------------------- server


@dataclass(frozen=True)
class ServerConfig:
    """What the server serves and how it behaves."""

    clip: Clip
    host: str = "127.0.0.1"
    port: int = 8554
    path: str = "/live"
    auth: Optional[str] = None
    auth_scheme: str = "any"
    refuse: Optional[str] = None  # an RTSP status code as text, or "close"
    live: bool = False
    session_timeout: int = 60  # seconds without a request before a UDP session is dropped


class Connection:
    """One RTSP client connection: reads requests (and interleaved RTCP), answers them,
    owns the sessions set up on it."""

    def __init__(self, server: "RtspServer", sock: socket.socket, peer: Tuple[str, int]) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.sessions: Dict[str, Session] = {}
        self._write_lock = threading.Lock()
        self._closed = threading.Event()
        self._last_request = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"rtsp-{peer[1]}", daemon=True)

    def send_bytes(self, data: bytes) -> None:
        """Write to the socket; serialised between responses and interleaved RTP."""
        with self._write_lock:
            if self._closed.is_set():
                raise OSError("connection closed")
            self.sock.sendall(data)

    def close(self) -> None:
        """Stop this connection's sessions and close the socket (idempotent)."""
        self._closed.set()
        try:  # unblocks a sender stuck in sendall() on a full socket buffer
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for session in list(self.sessions.values()):
            session.stop()
        self.sessions.clear()
        with self._write_lock:
            self.sock.close()

    def _run(self) -> None:
        """Read loop: until the peer closes, the server stops, or an error."""
        try:
            if self.server.config.refuse == "close":
                return
            self._read_loop()
        except (OSError, ValueError) as error:
            LOG.info("%s:%d: %s", *self.peer, error)
        finally:
            self.close()
            LOG.info("%s:%d disconnected", *self.peer)

    def _read_loop(self) -> None:
        """Receive bytes and dispatch complete messages."""
        buffer = b""
        while not self.server.stopping.is_set() and not self._closed.is_set():
            readable, _, _ = select.select([self.sock], [], [], POLL_S)
            if not readable:
                if self._udp_session_expired():
                    raise OSError("UDP session timed out (no keep-alive)")
                continue
            data = self.sock.recv(65536)
            if not data:
                return
            buffer += data
            buffer = self._consume(buffer)

    def _udp_session_expired(self) -> bool:
        """RFC 2326 12.37: a UDP session without requests for its timeout is dead.
        (Interleaved sessions live as long as their TCP connection.)"""
        idle = time.monotonic() - self._last_request
        has_udp = any(isinstance(s.sink, UdpSink) for s in self.sessions.values())
        return has_udp and idle > self.server.config.session_timeout

    def _consume(self, buffer: bytes) -> bytes:
        """Handle every complete message at the start of ``buffer``; return the rest."""
        while buffer:
            if buffer[:1] == b"$":  # interleaved data from the client (RTCP receiver reports)
                if len(buffer) < 4:
                    break
                size = struct.unpack("!H", buffer[2:4])[0]
                if len(buffer) < 4 + size:
                    break
                buffer = buffer[4 + size :]
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > 65536:
                    raise ValueError("request header too long")
                break
            request = parse_request(buffer[:end])
            length = int(request.headers.get("content-length", "0") or 0)
            if len(buffer) < end + 4 + length:
                break
            request.body = buffer[end + 4 : end + 4 + length]
            buffer = buffer[end + 4 + length :]
            self._answer(request)
        return buffer

    def _answer(self, request: Request) -> None:
        """Handle one request, send the response, run its follow-up action."""
        LOG.debug("%s:%d > %s %s", *self.peer, request.method, request.uri)
        self._last_request = time.monotonic()
        try:
            response = self.server.handle(self, request)
        except Exception:  # a bug in the handler must not kill the server
            LOG.exception("error handling %s", request.method)
            response = Response(500)
        LOG.debug("%s:%d < %d", *self.peer, response.status)
        self.send_bytes(response.encode(request.cseq))
        if response.after_send is not None:
            response.after_send()


class RtspServer:
    """Accepts RTSP connections on a background thread until :meth:`stop`."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.stopping = threading.Event()
        self.epoch = time.monotonic()
        self.auth = Authenticator(config.auth, config.auth_scheme) if config.auth else None
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._connections: List[Connection] = []
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._listener is not None
        return self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        """The stream URL."""
        return f"rtsp://{self.config.host}:{self.port}{self.config.path}"

    def start(self) -> None:
        """Bind, listen and start accepting."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.config.host, self.config.port))
        listener.listen(16)
        self._listener = listener
        self._accept_thread = threading.Thread(target=self._accept_loop, name="rtsp-accept", daemon=True)
        self._accept_thread.start()

    def stop(self) -> None:
        """Stop accepting, close every connection and join all threads."""
        self.stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.thread.join()

    def _accept_loop(self) -> None:
        """Accept connections, polling so that :meth:`stop` is noticed."""
        assert self._listener is not None
        while not self.stopping.is_set():
            readable, _, _ = select.select([self._listener], [], [], POLL_S)
            if not readable:
                continue
            try:
                sock, peer = self._listener.accept()
            except OSError:
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(SEND_TIMEOUT_S)
            LOG.info("%s:%d connected", *peer)
            conn = Connection(self, sock, peer)
            with self._lock:
                self._connections = [c for c in self._connections if c.thread.is_alive()]
                self._connections.append(conn)
            conn.thread.start()

    # ----------------------------------------------------------------- methods

    def handle(self, conn: Connection, request: Request) -> Response:
        """Dispatch one request to its method handler."""
        if self.config.refuse is not None:
            return Response(int(self.config.refuse))
        if request.version != "RTSP/1.0":
            return Response(505)
        if request.method == "OPTIONS":
            return Response(200, [("Public", PUBLIC_METHODS)])
        if self.auth is not None and not self.auth.check(request):
            return Response(401, self.auth.challenges())
        handler = {
            "DESCRIBE": self._describe,
            "SETUP": self._setup,
            "PLAY": self._play,
            "TEARDOWN": self._teardown,
            "GET_PARAMETER": self._keepalive,
            "SET_PARAMETER": self._keepalive,
        }.get(request.method)
        if handler is None:
            return Response(501, [("Public", PUBLIC_METHODS)])
        if request.uri != "*" and not self._path_ok(request):
            return Response(404)
        return handler(conn, request)

    def _path_ok(self, request: Request) -> bool:
        """Whether the request URI names our stream (or a track under it)."""
        path = urlsplit(request.uri).path.rstrip("/")
        base = self.config.path.rstrip("/")
        if request.method == "DESCRIBE":
            return path == base
        return path == base or path.startswith(base + "/")

    def _describe(self, conn: Connection, request: Request) -> Response:
        """SDP of the single H.264 track."""
        sdp = build_sdp(self.config.clip, self.config.host).encode()
        base = f"rtsp://{self.config.host}:{self.port}{self.config.path.rstrip('/')}/"
        return Response(200, [("Content-Base", base), ("Content-Type", "application/sdp")], sdp)

    def _setup(self, conn: Connection, request: Request) -> Response:
        """Create a session with a TCP-interleaved or UDP-unicast sink."""
        if "session" in request.headers:
            return Response(455)  # one track only: a second SETUP is not valid
        transport = parse_transport(request.headers.get("transport", ""))
        ssrc = random.getrandbits(32)
        session_id = secrets.token_hex(8)
        if transport[""].endswith("/TCP"):
            channels = _port_range(transport.get("interleaved") or "0-1")
            sink: object = InterleavedSink(conn, *channels)
            reply = f"RTP/AVP/TCP;unicast;interleaved={channels[0]}-{channels[1]};ssrc={ssrc:08X}"
        elif "client_port" in transport and "multicast" not in transport:
            ports = _port_range(transport["client_port"])
            udp = UdpSink(self.config.host, conn.peer[0], ports)
            sink = udp
            reply = (f"RTP/AVP;unicast;client_port={ports[0]}-{ports[1]};"
                     f"server_port={udp.server_ports[0]}-{udp.server_ports[1]};ssrc={ssrc:08X}")
        else:
            return Response(461)
        conn.sessions[session_id] = Session(session_id, self.config.clip, sink, ssrc)
        return Response(200, [("Transport", reply), ("Session", f"{session_id};timeout={self.config.session_timeout}")])

    def _play(self, conn: Connection, request: Request) -> Response:
        """Start the session's sender right after the reply goes out."""
        session = conn.sessions.get(request.headers.get("session", "").split(";")[0])
        if session is None:
            return Response(454)
        if session.playing:
            return Response(200, [("Session", session.id)])
        now = time.monotonic()
        timeline = live_timeline(self.config.clip, self.epoch, now) if self.config.live else Timeline(0, now)
        session.timeline = timeline
        first_pts = unit_times(self.config.clip, timeline.first)[1]
        track_url = f"rtsp://{self.config.host}:{self.port}{self.config.path.rstrip('/')}/trackID=0"
        headers = [
            ("Session", session.id),
            ("Range", "npt=0.000-"),
            ("RTP-Info", f"url={track_url};seq={session.seq};rtptime={session.rtp_time(first_pts)}"),
        ]
        return Response(200, headers, after_send=lambda: session.play(timeline))

    def _teardown(self, conn: Connection, request: Request) -> Response:
        """Stop and forget the session."""
        session = conn.sessions.pop(request.headers.get("session", "").split(";")[0], None)
        if session is None:
            return Response(454)
        session.stop()
        return Response(200)

    def _keepalive(self, conn: Connection, request: Request) -> Response:
        """GET_PARAMETER / SET_PARAMETER with no parameters: keep-alive."""
        session_id = request.headers.get("session", "").split(";")[0]
        if session_id and session_id not in conn.sessions:
            return Response(454)
        return Response(200, [("Session", session_id)] if session_id else [])


# --------------------------------------------------------------------------- CLI


class _StopRequest:
    """Set from a signal handler or the stdin watcher; read by the main loop.
    (A plain attribute, so the signal handler takes no lock.)"""

    def __init__(self) -> None:
        self.reason: Optional[str] = None


def _watch_stdin(stop: _StopRequest, done: threading.Event) -> None:
    """Request a stop when stdin reaches EOF (the parent process is gone)."""
    fd = sys.stdin.fileno()
    while not done.is_set():
        readable, _, _ = select.select([fd], [], [], POLL_S)
        if readable and not os.read(fd, 4096):
            stop.reason = "stdin closed"
            return


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", required=True, help="H.264 video file to loop")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8554, help="0 picks a free port")
    parser.add_argument("--path", default="/live")
    parser.add_argument("--auth", metavar="USER:PASS", help="require RTSP authentication")
    parser.add_argument("--auth-scheme", choices=("any", "basic", "digest"), default="any")
    parser.add_argument("--refuse", nargs="?", const="503", metavar="STATUS|close",
                        help="answer every request with STATUS (default 503), or 'close' connections at once")
    parser.add_argument("--live", action="store_true", help="clients join one shared timeline (mid-GOP)")
    parser.add_argument("--session-timeout", type=int, default=60, metavar="S",
                        help="session timeout announced to clients; idle UDP sessions are dropped after it")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when stdin closes")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.refuse is not None and args.refuse != "close" and not args.refuse.isdigit():
        parser.error("--refuse takes a status code or 'close'")
    if not args.path.startswith("/"):
        args.path = "/" + args.path
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the server until SIGTERM/SIGINT (or stdin EOF with --exit-on-stdin-eof)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s rtsp_server %(levelname)s %(message)s")
    config = ServerConfig(load_clip(args.file), args.host, args.port, args.path, args.auth,
                          args.auth_scheme, args.refuse, args.live, args.session_timeout)
    stop = _StopRequest()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda num, _frame: setattr(stop, "reason", signal.Signals(num).name))
    server = RtspServer(config)
    server.start()
    watcher_done = threading.Event()
    watcher = threading.Thread(target=_watch_stdin, args=(stop, watcher_done), daemon=True)
    if args.exit_on_stdin_eof:
        watcher.start()
    print(f"listening on {server.url}", flush=True)
    try:
        while stop.reason is None:
            time.sleep(0.1)
    finally:
        LOG.info("stopping (%s)", stop.reason)
        watcher_done.set()
        if watcher.is_alive():
            watcher.join()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
