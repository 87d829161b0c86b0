"""A desktop's sound for ``--sound`` tests: PipeWire's PulseAudio server (real, started in a
:func:`pipewire_session`), a speaker-less output to play into (a null sink, as a headless desktop
has), a player of beeps, and :class:`BeepFlasher`, which turns a window white the moment a beep
reaches the output's monitor.

Why a flash that follows the sound rather than a picture and a beep from one player: a player's
picture and sound each go through buffering of their own (the sound through the player's and the
sound server's), so when the beep "plays" is not known to better than a few hundred ms. Flashing on
what the monitor gives makes the flash come a known, short time after the sound was there to record.
"""
from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from Xlib import display

from stream_guard.sources.sound_device import recorder_command
from stream_guard.types import SOUND_CHANNELS, SOUND_RATE
from tests.support.pipewire_session import Session, _wait_for

SINK = "call_out"
ROOM = "room"
BLOCK = SOUND_RATE // 100  # 10 ms


class PulseServer:
    """``pipewire-pulse`` in ``session``, which a test may stop and start again (a sound server restarting)."""

    def __init__(self, session: Session, folder: Path) -> None:
        self.session, self.folder = session, folder
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = (self.folder / "pipewire-pulse.log").open("ab")
        self._proc = subprocess.Popen(["pipewire-pulse"], env=self.session.env, stdout=log, stderr=log,
                                      stdin=subprocess.DEVNULL)
        _wait_for(self._answers, 10, "pipewire-pulse")

    def _answers(self) -> bool:
        probe = subprocess.run(["gst-launch-1.0", "-q", "pulsesrc", f"device={SINK}.monitor", "num-buffers=1", "!",
                                "fakesink"],
                               env=self.session.env, capture_output=True, timeout=10)
        return probe.returncode == 0

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)
            self._proc = None


@contextlib.contextmanager
def pulse_server(session: Session, folder: Path) -> Iterator[PulseServer]:
    """PipeWire's PulseAudio server in ``session`` with two null sinks: :data:`SINK`, the default output,
    and :data:`ROOM`, whose monitor stands in for a microphone."""
    _add_sink(session, SINK)
    _add_sink(session, ROOM)
    # the default output, as a desktop's settings make it: another sink that comes and goes does not take over
    subprocess.run(["pw-metadata", "0", "default.configured.audio.sink", f'{{ "name": "{SINK}" }}'], env=session.env,
                   check=True, capture_output=True, timeout=10)
    server = PulseServer(session, folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _add_sink(session: Session, name: str) -> None:
    subprocess.run(["pw-cli", "create-node", "adapter", "{ factory.name=support.null-audio-sink "
                    f"node.name={name} media.class=Audio/Sink object.linger=true audio.position=[FL FR] }}"],
                   env=session.env, check=True, capture_output=True, timeout=10)
    _wait_for(lambda: session.node_id(name) is not None, 10, f"the null sink {name}")


@contextlib.contextmanager
def beeping(session: Session, sink: str, hz: int = 1000) -> Iterator[None]:
    """Play a 0.2 s beep of ``hz`` every second into ``sink``."""
    proc = subprocess.Popen(["gst-launch-1.0", "-q", "audiotestsrc", "wave=ticks", f"freq={hz}", "volume=0.5",
                             f"sine-periods-per-tick={hz // 5}", "is-live=true", "!", "audioconvert", "!",
                             "pulsesink", f"device={sink}"], env=session.env, stdin=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=5)


class BeepFlasher(threading.Thread):
    """A black ``size`` window at the top left of X display ``number`` that turns white for 0.3 s as
    each beep reaches ``sink``'s monitor (recorded in 10 ms blocks). ``flashes`` counts them."""

    def __init__(self, session: Session, sink: str, number: int, size: tuple[int, int]) -> None:
        super().__init__(name="beep-flasher", daemon=True)
        self._display = display.Display(f":{number}")
        screen = self._display.screen()
        self._pixels = (screen.black_pixel, screen.white_pixel)
        self._window = screen.root.create_window(0, 0, size[0], size[1], 0, screen.root_depth,
                                                 background_pixel=screen.black_pixel, override_redirect=True)
        self._window.map()
        self._display.sync()
        command = recorder_command([f"{sink}.monitor"])
        command[command.index("latency-time=10000")] = "latency-time=5000"
        self._recorder = subprocess.Popen(command, env=session.env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.flashes = 0

    def _paint(self, white: bool) -> None:
        self._window.change_attributes(background_pixel=self._pixels[white])
        self._window.clear_area()
        self._display.sync()

    def run(self) -> None:
        assert self._recorder.stdout is not None
        quiet_since, white_until = time.monotonic(), None
        size = BLOCK * SOUND_CHANNELS * 4
        while data := self._recorder.stdout.read(size):
            now = time.monotonic()
            if white_until is not None and now > white_until:
                self._paint(False)
                white_until = None
            if np.abs(np.frombuffer(data, np.float32)).max() > 0.1:
                if now - quiet_since > 0.5:
                    self._paint(True)
                    self.flashes += 1
                    white_until = now + 0.3
                quiet_since = now

    def __enter__(self) -> "BeepFlasher":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._recorder.terminate()
        self._recorder.wait(timeout=5)
        self.join(timeout=5)
        self._window.destroy()
        self._display.close()
