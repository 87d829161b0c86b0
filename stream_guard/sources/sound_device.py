"""Sound from a sound device, beside a live source that has none of its own (``--sound``).

A screen, a window or a webcam brings pictures only; the call on that screen is heard through the
computer's speakers, and the person in front of the webcam through its microphone. ``--sound
desktop`` records what the computer plays (the default output's monitor), ``--sound mic`` the
default input, and ``--sound NAME`` any PulseAudio or PipeWire source by (part of) its name or
description, as the sound server lists them (pulsectl); ``desktop,mic`` mixes several. GStreamer's
``pulsesrc`` records them in a child process (PulseAudio and PipeWire's PulseAudio server both speak
its protocol; ``audiomixer`` mixes) and writes 48 kHz stereo float to a pipe.

**Placing the sound by the pictures.** The device's samples carry no time the pictures share, so
each 20 ms block is stamped on the monotonic clock by counting samples from the first block's
arrival (steady, no jitter, and a burst of blocks read late keeps its spacing), re-anchored when the
count and the arrival times part for longer than a slow read explains (lost samples, a device clock
faster or slower than ours). :class:`PictureClock`
maps that time to the pictures' clock from the frames' own ``pts_s`` and ``wallclock_s`` (the
least-delayed frame of the last second), so the outputs place the sound as they place a stream's
own.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from typing import IO, Callable, Iterator, Sequence

import numpy as np

from stream_guard.errors import ConfigError, SourceError
from stream_guard.sources.base import FrameSource, OpensInWith
from stream_guard.sources.child_process import end_child
from stream_guard.types import SOUND_CHANNELS, SOUND_RATE, Frame, SoundChunk, StreamInfo

log = logging.getLogger(__name__)

GST_LAUNCH = "gst-launch-1.0"
GST_PACKAGES = "Debian/Ubuntu: sudo apt install gstreamer1.0-tools gstreamer1.0-plugins-good"
DEVICE_ALIASES = {"desktop": "@DEFAULT_MONITOR@", "mic": "@DEFAULT_SOURCE@"}
BLOCK_SAMPLES = SOUND_RATE // 50  # 20 ms
START_TIMEOUT_S = 5.0
# A block that arrives late says only that this process was slow to read it: the blocks queued behind it
# come in a burst, on time again by its end. Only when every block of a window came late were samples
# lost (the recorder's buffer overflowed) or does the device's clock run slow; the count catches up then.
LOSS_CHECK_S, MAX_LATE_S = 0.5, 0.25  # every block of 0.5 s later than 0.25 s: samples were lost
SLOW_CHECK_S, SLOW_S = 2.0, 0.02  # every block of 2 s later than 20 ms: the device's clock runs slow
PICTURE_GAP_S = 2.0  # no picture for this long: the source is down, its sound is not placed
# A live source's first frames are not yet on time: x11grab hands over the frames it owes since it
# opened in a burst, stamped when they were due (0.75 s of them came within 6 ms). Sound placed by
# them came out up to 0.14 s late; it is kept only once the pictures have come for this long.
SETTLE_S = 1.0
_BLOCK_BYTES = BLOCK_SAMPLES * SOUND_CHANNELS * 4


NO_SERVER = "no PulseAudio or PipeWire sound server answers for this user"


class SoundDeviceError(SourceError):
    """The sound device named by ``--sound`` cannot be recorded."""


@dataclasses.dataclass(frozen=True)
class SoundSource:
    """A PulseAudio source (PipeWire's too) as its server lists it."""

    name: str
    description: str
    monitor: bool  # it records what an output plays, not a microphone or line input

    def __str__(self) -> str:
        return f"{self.name} ({self.description})"


SoundSources = tuple[list[SoundSource], str | None, str | None]  # what list_sound_sources() returns


def list_sound_sources() -> SoundSources:
    """The sound server's sources, and the names of its default output's monitor and its default input
    (None where there is none); :class:`SoundDeviceError` when no server answers."""
    try:
        import pulsectl
    except (ImportError, OSError) as e:  # OSError: libpulse itself is missing
        raise SoundDeviceError(f"--sound needs PulseAudio's client library (libpulse0) and pulsectl ({e})") from e
    try:
        with pulsectl.Pulse("stream_guard") as pulse:
            info = pulse.server_info()
            sources = [SoundSource(s.name, s.description, s.monitor_of_sink != 0xFFFFFFFF)
                       for s in pulse.source_list()]
    except pulsectl.PulseError as e:
        raise SoundDeviceError(f"--sound: {NO_SERVER}") from e
    names = {s.name for s in sources}
    monitor = f"{info.default_sink_name}.monitor" if info.default_sink_name else None
    return (sources, monitor if monitor in names else None,
            info.default_source_name if info.default_source_name in names else None)


def find_sound_source(choice: str, listing: SoundSources | None = None) -> SoundSource:
    """The source ``--sound`` names: ``desktop`` (the default output's monitor), ``mic`` (the default
    input), a source's exact name, or text that one source's name or description contains (any case);
    among ``listing``, or the server's sources now."""
    sources, monitor, default_input = listing or list_sound_sources()
    listed = "; ".join(map(str, sources)) or "none"
    wanted = {"desktop": monitor, "mic": default_input}.get(choice.lower(), choice)
    if wanted is None:
        what = "output" if choice.lower() == "desktop" else "input"
        raise SoundDeviceError(f"--sound {choice}: the sound server has no default {what}; its sources: {listed}")
    exact = [s for s in sources if s.name == wanted]
    if exact:
        return exact[0]
    like = [s for s in sources if wanted.lower() in s.name.lower() or wanted.lower() in s.description.lower()]
    if len(like) == 1:
        return like[0]
    if not like:
        raise SoundDeviceError(f"--sound {choice}: no such sound source; the sound server's sources: {listed}")
    raise SoundDeviceError(f"--sound {choice}: {len(like)} sound sources match: "
                           f"{'; '.join(map(str, like))}: give more of the name")


def recorded_name(choice: str, source: SoundSource) -> str:
    """What the recorder asks the server for: ``desktop`` and ``mic`` as the server's defaults (so a
    reconnect follows a new default output), anything else as the source found for it."""
    return DEVICE_ALIASES.get(choice.lower(), source.name)


def check_sound_device_support() -> None:
    """Raise a one-line :class:`ConfigError` where ``--sound`` cannot work: not Linux, or no GStreamer
    with ``pulsesrc``."""
    if not sys.platform.startswith("linux"):
        raise ConfigError("--sound records through PulseAudio or PipeWire, on Linux only; elsewhere, record the "
                          "sound apart (OBS, Audacity) or stream the source with its sound")
    if shutil.which(GST_LAUNCH) is None:
        raise ConfigError(f"--sound needs GStreamer's {GST_LAUNCH} ({GST_PACKAGES})")


def split_choices(choices: str) -> list[str]:
    """``--sound``'s value as the sources it names, in order, each once: ``desktop,mic`` is two."""
    parts: list[str] = []
    for part in (p.strip() for p in choices.split(",")):
        if part and part.lower() not in (p.lower() for p in parts):
            parts.append(part)
    if not parts:
        raise ConfigError(f"--sound {choices!r}: name a sound source (desktop, mic, or part of a source's name)")
    return parts


def recorder_command(devices: Sequence[str]) -> list[str]:
    """The child that records ``devices`` (several are mixed: both sides of a call) and writes 48 kHz
    stereo float32, interleaved, to stdout."""
    caps = f"audio/x-raw,format=F32LE,rate={SOUND_RATE},channels={SOUND_CHANNELS},layout=interleaved"
    out = ["fdsink", "fd=1", "sync=false"]

    def source(device: str, *options: str) -> list[str]:
        return ["pulsesrc", f"device={device}", "client-name=stream_guard", "buffer-time=100000",
                "latency-time=10000", *options, "!", "audioconvert", "!", "audioresample", "!", caps]

    if len(devices) == 1:
        return [GST_LAUNCH, "-q", *source(devices[0]), "!", *out]
    command = [GST_LAUNCH, "-q", "audiomixer", "name=mix", "!", caps, "!", *out]
    for device in devices:
        # The mixer places each source's sound by its timestamps. By default a source counts them in
        # samples on its own clock, so one that lost sound in a stall (the recorder not scheduled for a
        # moment) stays behind the mix for good and the mixer drops all it gives after: one side of a
        # call gone for the rest of the run. Stamped on the system clock as they are read, both recover.
        command += [*source(device, "provide-clock=false", "slave-method=re-timestamp"), "!", "mix."]
    return command


def _explain(choice: str, stderr: str) -> str:
    text = stderr.lower()
    if "no such entity" in text:
        return (f"--sound {choice}: no such sound source (it was there when the run started); "
                f"'stream-guard doctor' says what desktop and mic are now")
    if "connection refused" in text or "failed to connect" in text:
        return f"--sound {choice}: {NO_SERVER}"
    if "no element" in text and "pulsesrc" in text:
        return f"--sound needs GStreamer's pulsesrc ({GST_PACKAGES})"
    detail = next((line.strip() for line in stderr.splitlines() if line.strip().startswith("ERROR")), "")
    return f"--sound {choice}: cannot record ({detail or 'the recorder stopped'})"


class PictureClock:
    """Maps a ``time.monotonic()`` moment to the pictures' clock (:attr:`Frame.pts_s`).

    Updated by the capture thread with every frame, read by the sound recorder's thread. The
    offset is that of the least-delayed of the last second's frames: a frame's ``wallclock_s`` is
    when it was received, late by however long it took to read and decode."""

    def __init__(self) -> None:
        self._offsets: deque[tuple[float, float]] = deque()  # (wallclock_s, pts_s - wallclock_s)
        self._first_s: float | None = None  # the first frame's wallclock_s
        self._lock = threading.Lock()

    def note(self, frame: Frame) -> None:
        with self._lock:
            if self._first_s is None:
                self._first_s = frame.wallclock_s
            self._offsets.append((frame.wallclock_s, frame.pts_s - frame.wallclock_s))
            while self._offsets[0][0] < frame.wallclock_s - 1.0:
                self._offsets.popleft()

    def pts_at(self, monotonic_s: float) -> float | None:
        """``monotonic_s`` on the pictures' clock; None until the pictures have come for
        :data:`SETTLE_S`, or while none has come for :data:`PICTURE_GAP_S` (the source is down: its
        sound would have nowhere to go)."""
        with self._lock:
            if (self._first_s is None or monotonic_s - self._first_s < SETTLE_S
                    or monotonic_s - self._offsets[-1][0] > PICTURE_GAP_S):
                return None
            return monotonic_s + max(offset for _, offset in self._offsets)


class _LatenessWindow:
    """The least lateness of the blocks that arrived in the last ``length_s``, once that has passed."""

    def __init__(self, length_s: float) -> None:
        self.length_s = length_s
        self._start_s: float | None = None
        self._least = float("inf")

    def add(self, arrived_s: float, late_s: float) -> float | None:
        """Count a block; at the end of a window, return its least lateness and start the next."""
        if self._start_s is None:
            self._start_s = arrived_s
        self._least = min(self._least, late_s)
        if arrived_s - self._start_s < self.length_s:
            return None
        least, self._start_s, self._least = self._least, arrived_s, float("inf")
        return least

    def restart(self) -> None:
        self._start_s, self._least = None, float("inf")


class _SampleClock:
    """Monotonic time of each block's first sample, counted from an anchor. The count is re-anchored
    at once when it runs ahead of the arrivals (a block cannot come before it was recorded: the anchor
    was late, or the device's clock runs fast), and moved on by the least lateness of a window when
    every block of :data:`LOSS_CHECK_S` came more than :data:`MAX_LATE_S` late (lost samples) or every
    block of :data:`SLOW_CHECK_S` more than :data:`SLOW_S` late (its clock runs slow)."""

    def __init__(self) -> None:
        self._anchor: float | None = None
        self._samples = 0
        self._windows = ((_LatenessWindow(LOSS_CHECK_S), MAX_LATE_S), (_LatenessWindow(SLOW_CHECK_S), SLOW_S))

    def stamp(self, arrived_s: float, samples: int) -> float:
        captured_s = arrived_s - samples / SOUND_RATE  # at the latest
        if self._anchor is None or self._anchor + self._samples / SOUND_RATE > captured_s:
            self._re_anchor(captured_s)
        else:
            late_s = captured_s - (self._anchor + self._samples / SOUND_RATE)
            for window, limit_s in self._windows:
                least = window.add(arrived_s, late_s)
                if least is not None and least > limit_s:
                    self._re_anchor(self._anchor + self._samples / SOUND_RATE + least)
                    break
        assert self._anchor is not None
        counted_s = self._anchor + self._samples / SOUND_RATE
        self._samples += samples
        return counted_s

    def _re_anchor(self, captured_s: float) -> None:
        self._anchor, self._samples = captured_s, 0
        for window, _ in self._windows:
            window.restart()


class DeviceSoundRecorder:
    """Records the ``--sound`` sources (mixed, when there are several) in a child process and publishes
    :class:`SoundChunk` items stamped on the pictures' clock, from its own thread. A recorder that
    dies is restarted every second; sound problems never stop the pictures."""

    def __init__(self, choice: str, devices: Sequence[str], publish: Callable[[SoundChunk], None],
                 clock: PictureClock) -> None:
        self.choice = choice
        self.devices = tuple(devices)
        self._publish = publish
        self._clock = clock
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._first_block = threading.Event()
        self._errors: IO[bytes] | None = None

    def start(self) -> None:
        """Start recording; raise :class:`SoundDeviceError` if the device gives no sound within
        :data:`START_TIMEOUT_S` (no such device, no sound server)."""
        self._proc = self._spawn()
        self._thread = threading.Thread(target=self._run, name="sound-device", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._first_block.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                error = self._failure(self._proc)
                self.stop()
                raise SoundDeviceError(error)

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            end_child(self._proc, wait_s=3)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=3)

    def _spawn(self) -> subprocess.Popen:
        # stderr to a file, not a pipe: a pipe nobody reads would stall a long run's recorder once full
        if self._errors is not None:
            self._errors.close()
        self._errors = tempfile.TemporaryFile()
        return subprocess.Popen(recorder_command(self.devices), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=self._errors)

    def _failure(self, proc: subprocess.Popen) -> str:
        if proc.poll() is None:
            return f"--sound {self.choice}: the device gave no sound within {START_TIMEOUT_S:.0f} s"
        assert self._errors is not None
        self._errors.seek(0)
        return _explain(self.choice, self._errors.read().decode(errors="replace"))

    def _run(self) -> None:
        proc = self._proc
        while proc is not None and not self._stop.is_set():
            self._read(proc)
            proc.wait()
            if self._stop.is_set() or not self._first_block.is_set():
                return
            log.warning("%s: the recorder stopped; trying again every second", self._failure(proc))
            while not self._stop.wait(1.0):
                proc = self._proc = self._spawn()
                if proc.stdout is not None and proc.stdout.peek(1):  # type: ignore[union-attr]
                    log.warning("--sound %s: recording again", self.choice)
                    break
                proc.wait()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        clock = _SampleClock()
        buffer = bytearray(_BLOCK_BYTES)
        view = memoryview(buffer)
        while not self._stop.is_set():
            got = 0
            while got < _BLOCK_BYTES:
                n = proc.stdout.readinto(view[got:])
                if not n:
                    return
                got += n
            captured_s = clock.stamp(time.monotonic(), BLOCK_SAMPLES)
            self._first_block.set()
            pts_s = self._clock.pts_at(captured_s)
            if pts_s is None:
                continue
            samples = np.frombuffer(buffer, np.float32).reshape(BLOCK_SAMPLES, SOUND_CHANNELS).T.copy()
            self._publish(SoundChunk(samples, pts_s))


class DeviceSoundSource(OpensInWith):
    """A live :class:`FrameSource` with a sound device's sound: the pictures are ``inner``'s, the
    sound comes from ``choice`` (``--sound``) for as long as each connection lasts. A device that
    cannot be recorded fails the first open (a user error); on a reconnect it only costs the sound."""

    def __init__(self, inner: FrameSource, choice: str, publish: Callable[[SoundChunk], None]) -> None:
        self.inner = inner
        self.source_id = inner.source_id
        self.choice = choice
        self._parts = split_choices(choice)
        self._publish = publish
        self._clock = PictureClock()
        self._recorder: DeviceSoundRecorder | None = None
        self._devices: list[str] | None = None  # found at the first open

    def open(self) -> StreamInfo:
        first = self._devices is None
        if self._devices is None:
            self._devices = self._find_all()
        info = self.inner.open()
        self._clock = PictureClock()
        recorder = DeviceSoundRecorder(self.choice, self._devices, self._publish, self._clock)
        try:
            recorder.start()
            self._recorder = recorder
        except SoundDeviceError as e:
            if first:
                self.inner.close()
                raise
            log.warning("%s: this connection goes on without sound", e)
        return dataclasses.replace(info, has_sound=True)

    def _find_all(self) -> list[str]:
        """What to ask the server for, one per source (two names for one source would double its sound)."""
        devices: list[str] = []
        taken: dict[str, str] = {}
        listing = list_sound_sources()  # one query of the server for every part
        for part in self._parts:
            source = find_sound_source(part, listing)
            if part.lower() == "mic" and source.monitor:
                log.warning("--sound mic: the default input is %s, which records an output, not a microphone",
                            source)
            if source.name in taken:
                log.warning("--sound %s is %s, as %s is: recorded once", part, source, taken[source.name])
                continue
            log.info("--sound %s: recording %s", part, source)
            taken[source.name] = part
            devices.append(recorded_name(part, source))
        return devices

    def frames(self) -> Iterator[Frame]:
        for frame in self.inner.frames():
            self._clock.note(frame)
            yield frame

    def close(self) -> None:
        if self._recorder is not None:
            self._recorder.stop()
            self._recorder = None
        self.inner.close()
