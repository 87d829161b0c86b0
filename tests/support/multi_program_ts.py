"""A multiplex for tests: an MPEG-TS carrying several programs, as a broadcaster's or an IPTV
head-end's feed does. Each program is a clip re-muxed by FFmpeg's real mpegts muxer on PIDs of its
own; their transport packets are then interleaved and one Program Association Table lists them all
(FFmpeg's muxer writes one program per file, and PyAV cannot ask it for more)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support.synth_video import remux

TS_PACKET = 188
PAT_PID, SDT_PID = 0x0000, 0x0011


@dataclass(frozen=True)
class Program:
    clip: Path  # every stream of it is carried
    number: int  # the program (service) number
    first_pid: int  # its streams get PIDs from here on; its PMT is on first_pid + 0x1000


def _crc32_mpeg2(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _pat_packet(programs: list[Program], continuity: int) -> bytes:
    entries = b"".join(p.number.to_bytes(2, "big") + (0xE000 | (p.first_pid + 0x1000)).to_bytes(2, "big")
                       for p in programs)
    length = 5 + len(entries) + 4  # the header after section_length, the entries, the CRC
    section = bytes([0x00, 0xB0 | length >> 8, length & 0xFF, 0x00, 0x01, 0xC1, 0x00, 0x00]) + entries
    section += _crc32_mpeg2(section).to_bytes(4, "big")
    packet = bytes([0x47, 0x40, 0x00, 0x10 | continuity % 16, 0x00]) + section  # payload start, pointer 0
    return packet + b"\xff" * (TS_PACKET - len(packet))


def _single_program_ts(program: Program, out: Path) -> list[bytes]:
    options = {"mpegts_service_id": str(program.number), "mpegts_start_pid": str(program.first_pid),
               "mpegts_pmt_start_pid": str(program.first_pid + 0x1000)}
    remux(program.clip, out, "mpegts", options)
    data = out.read_bytes()
    return [data[i:i + TS_PACKET] for i in range(0, len(data), TS_PACKET)]


def _pid(packet: bytes) -> int:
    return (packet[1] & 0x1F) << 8 | packet[2]


def make_multi_program_ts(path: Path, programs: list[Program]) -> Path:
    """Write ``path``: the programs' packets interleaved in proportion to their length (so they
    play side by side); each PAT of the first program is replaced by one listing every program,
    the other programs' PATs and service tables are dropped."""
    feeds = [_single_program_ts(p, path.with_name(f"{path.stem}.program{p.number}.ts")) for p in programs]
    taken = [0] * len(feeds)
    out: list[bytes] = []
    continuity = 0
    while any(t < len(f) for t, f in zip(taken, feeds)):
        i = min((k for k in range(len(feeds)) if taken[k] < len(feeds[k])), key=lambda k: taken[k] / len(feeds[k]))
        packet = feeds[i][taken[i]]
        taken[i] += 1
        if _pid(packet) == PAT_PID:
            if i == 0:
                out.append(_pat_packet(programs, continuity))
                continuity += 1
        elif _pid(packet) != SDT_PID or i == 0:
            out.append(packet)
    path.write_bytes(b"".join(out))
    return path
