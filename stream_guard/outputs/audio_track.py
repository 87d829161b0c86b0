"""A source file's sound, carried into the annotated recording of it.

The analysis sees pictures only, so the sound is read again from the source file by the
recording itself: packets are copied as they are where the output container can hold their
codec, and re-encoded otherwise (AAC for MP4, MOV and Matroska, Opus for WebM, MP3 for AVI).
They are written beside the video as it is encoded, up to the end of the last frame written (so
a run stopped early by ``--max-frames`` or Ctrl+C keeps sound and pictures of the same length),
and on the video's clock: the source's first video frame is time 0. Where the sound's timestamps
start again (joined recordings: :mod:`stream_guard.timeline`), it goes on from where it had got to.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Mapping

import av

from stream_guard.timeline import Timeline

log = logging.getLogger(__name__)

# Codecs each container takes as they are; None: any (Matroska holds nearly everything).
_COPYABLE: dict[str, frozenset[str] | None] = {
    ".mp4": frozenset({"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}),
    ".mov": frozenset({"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"}),
    ".mkv": None,
    ".webm": frozenset({"opus", "vorbis"}),
    ".avi": frozenset({"mp3", "ac3", "pcm_s16le"}),
}
_ENCODERS = {".mp4": "aac", ".mov": "aac", ".mkv": "aac", ".webm": "libopus", ".avi": "libmp3lame"}


class AudioTrack:
    """The best audio stream of ``source``, written into ``container`` on the video's clock."""

    def __init__(self, source: av.container.InputContainer, audio: av.audio.stream.AudioStream,
                 container: av.container.OutputContainer, suffix: str, start_s: float) -> None:
        self._source = source
        self._in = audio
        self._start_s = start_s
        copyable = _COPYABLE[suffix]
        self.copied = copyable is None or audio.codec_context.name in copyable
        self._resampler: av.AudioResampler | None = None  # made at the first re-encoded frame
        if self.copied:
            self._out = container.add_stream_from_template(audio)
        else:
            rate = audio.codec_context.sample_rate or 48000
            if suffix == ".webm":
                rate = 48000  # Opus runs at 48 kHz
            self._out = container.add_stream(_ENCODERS[suffix], rate=rate)
            self._out.layout = "stereo" if audio.codec_context.channels >= 2 else "mono"
        self._container = container
        self._packets: Iterator[av.Packet] = source.demux(audio)
        self._pending: av.Packet | None = None
        self._done = False
        self._timeline = Timeline()
        self._start_written_s = -float("inf")  # where the last sound written starts, and where it ends
        self._end_written_s: float | None = None
        self.packets_written = 0

    @classmethod
    def open(cls, source_path: str | Path, container: av.container.OutputContainer, suffix: str,
             options: Mapping[str, str] | None = None, format: str | None = None) -> "AudioTrack | None":
        """The track of ``source_path``'s best audio stream, or None when it has none (or is unreadable).
        ``options`` and ``format``: how the pictures' source was opened (a URL's headers, say)."""
        try:
            source = av.open(str(source_path), metadata_errors="replace", options=dict(options or {}), format=format)
        except (av.error.FFmpegError, OSError) as e:
            log.warning("--out: the source's sound cannot be read (%s): the recording is silent", e)
            return None
        audio = source.streams.best("audio")
        video = source.streams.best("video")
        if audio is None or video is None:
            source.close()
            return None
        start_s = float(video.start_time * video.time_base) if video.start_time is not None else 0.0
        try:
            track = cls(source, audio, container, suffix, start_s)
        except (av.error.FFmpegError, ValueError) as e:
            source.close()
            log.warning("--out: the source's sound (%s) cannot be written to %s (%s): the recording is silent",
                        audio.codec_context.name, suffix, e)
            return None
        log.info("--out: the source's sound (%s) is %s", audio.codec_context.name,
                 "copied" if track.copied else f"re-encoded as {track._out.codec_context.name}")
        return track

    def write_until(self, video_s: float) -> None:
        """Write the sound that starts before ``video_s`` on the video's clock."""
        limit = video_s
        while not self._done:
            packet = self._pending or self._next_packet()
            self._pending = None
            if packet is None:
                return
            t = self._time_s(packet)
            if t >= limit:
                self._pending = packet
                return
            self._write(packet, t)

    def finish(self, end_s: float) -> None:
        """Write the sound up to ``end_s`` (the end of the last video frame), flush, close the source."""
        try:
            while not self._done:
                packet = self._pending or self._next_packet()
                self._pending = None
                if packet is None or self._time_s(packet) >= end_s:
                    break
                self._write(packet, self._time_s(packet))
            if not self.copied:
                self._encode(None)
        finally:
            self._done = True
            self._source.close()

    def _next_packet(self) -> av.Packet | None:
        try:
            for packet in self._packets:
                if packet.pts is not None and packet.size:
                    return packet
        except av.error.FFmpegError as e:  # damaged sound must not stop the recording
            log.warning("--out: the source's sound stopped early (%s)", e)
        self._done = True
        return None

    def _time_s(self, packet: av.Packet) -> float:
        t, back = self._timeline.join(float(packet.pts * packet.time_base) - self._start_s, self._end_written_s)
        if back:
            log.warning("--out: the source's sound jumped back %.1f s at %.2f s (joined recordings?): it goes on "
                        "from there", back, t)
        return t

    def _write(self, packet: av.Packet, t: float) -> None:
        if t < self._start_written_s:
            return  # a little behind what was written: a muxer takes only increasing times
        duration = float(packet.duration * packet.time_base) if packet.duration else 0.0
        if self.copied:
            if t < 0:
                return  # sound from before the first picture
            lag = 0 if packet.dts is None else packet.pts - packet.dts
            packet.pts = round(t / packet.time_base)
            if packet.dts is not None:
                packet.dts = packet.pts - lag
            packet.stream = self._out
            self._container.mux(packet)
            self.packets_written += 1
        else:
            for frame in self._in.codec_context.decode(packet):
                start = (float(frame.pts * frame.time_base) - self._start_s + self._timeline.offset_s
                         if frame.pts is not None else t)
                if start + frame.samples / frame.sample_rate <= 0:
                    continue
                frame.pts = max(0, round(start * frame.sample_rate))
                frame.time_base = Fraction(1, frame.sample_rate)
                self._encode(frame)
        self._start_written_s, self._end_written_s = t, t + duration

    def _encode(self, frame: av.AudioFrame | None) -> None:
        codec = self._out.codec_context
        if self._resampler is None:
            self._resampler = av.AudioResampler(format=codec.format, layout=codec.layout, rate=codec.sample_rate,
                                                frame_size=codec.frame_size or None)
        for converted in self._resampler.resample(frame):
            packets = self._out.encode(converted)
            self._container.mux(packets)
            self.packets_written += len(packets)
        if frame is None:
            packets = self._out.encode(None)
            self._container.mux(packets)
            self.packets_written += len(packets)
