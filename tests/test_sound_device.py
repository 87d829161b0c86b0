"""--sound: a sound device's sound beside a live source that has none (a screen, a window, a webcam).

Real parts: Xvfb, PipeWire with its PulseAudio server and a null sink (a desktop without speakers),
GStreamer's pulsesrc, x11grab, the encoders."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import av
import numpy as np
import pytest

from stream_guard.sources.sound_device import (LOSS_CHECK_S, PICTURE_GAP_S, DeviceSoundSource, PictureClock,
                                               SoundDeviceError, _SampleClock, find_sound_source, recorder_command)
from stream_guard.types import SOUND_CHANNELS, SOUND_RATE, Frame, SoundChunk, StreamInfo
from tests.conftest import run_cli
from tests.support.desktop_sound import ROOM, SINK, BeepFlasher, PulseServer, beeping, pulse_server
from tests.support.pipewire_session import Session, missing_programs, pipewire_session
from tests.support.stream_receiver import free_port
from tests.support.synth_video import make_test_clip
from tests.test_live_sound import _beeps, _flashes, _sound

FPS = 25
REGION = (320, 240)
# The flash follows the beep: the flasher hears it one PipeWire period (21 ms) after it was played, and
# x11grab sees the flash at its next grab (up to a frame later). A beep placed right leads its flash by
# about that; the bounds are what viewers notice (ITU-R BT.1359: sound more than 45 ms early or 125 ms
# late), early counted beyond that reaction time. Measured: -0.046 to +0.027 s with one source, +0.010 to
# +0.044 s mixed (-0.063 to +0.015 s before the mixed sources were stamped on the system clock).
FLASH_AFTER_BEEP_S = (-0.1, 0.021 + 1 / FPS + 0.045)


@pytest.fixture(scope="module")
def desktop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Session, PulseServer]]:
    missing = missing_programs() + [p for p in ("pipewire-pulse", "pw-cli") if shutil.which(p) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (tools/run_tests.sh installs them)")
    folder = tmp_path_factory.mktemp("desktop_sound")
    with pipewire_session(folder) as session, pulse_server(session, folder) as server:
        yield session, server


@pytest.fixture
def session_env(desktop: tuple[Session, PulseServer], xvfb: int, monkeypatch: pytest.MonkeyPatch) -> Session:
    """This process and the CLI it starts reach the desktop's sound server and X display."""
    session, _ = desktop
    monkeypatch.setenv("XDG_RUNTIME_DIR", session.env["XDG_RUNTIME_DIR"])
    monkeypatch.setenv("DISPLAY", f":{xvfb}")
    return session


def _region() -> str:
    return f"screen@{REGION[0]}x{REGION[1]}+0+0"


def _video_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        return float(video.duration * video.time_base)


def _whole_beeps(wave: np.ndarray, start_s: float, least_s: float = 0.18) -> list[float]:
    """Onsets of the beeps heard whole: loud for at least 0.18 s of their 0.2 s. The recording's sound may
    begin inside a beep that was played before the recorder started, and the silence the run puts before
    its first sound makes that tail look like an onset (measured in CI: tails found 0.17 s after their
    beeps' onsets, once 0.5 s into the sound). ``least_s``: how long counts as whole."""
    loud = np.flatnonzero(np.abs(wave) > 0.1)
    if not len(loud):
        return []
    breaks = np.flatnonzero(np.diff(loud) > SOUND_RATE // 2)
    starts, ends = loud[np.r_[0, breaks + 1]], loud[np.r_[breaks, len(loud) - 1]]
    return [start_s + a / SOUND_RATE for a, b in zip(starts, ends) if b - a >= least_s * SOUND_RATE]


def _assert_each_beep_has_its_flash(flashes: list[float], beeps: list[float], video_s: float) -> None:
    """Each beep has its flash just after it. A flash at the very start may have lost its beep to the
    start, and a beep in the last moment of the recording its flash to the end (the sound goes on as
    long as the run, the pictures stop at the last frame analysed), so those are not judged."""
    judged = [beep for beep in beeps if beep + FLASH_AFTER_BEEP_S[1] < video_s]
    assert judged, (flashes, beeps, video_s)
    for beep in judged:
        lead = min((f - beep for f in flashes), key=abs)
        assert FLASH_AFTER_BEEP_S[0] < lead < FLASH_AFTER_BEEP_S[1], (flashes, beeps, video_s)


def test_a_screen_recording_carries_the_desktop_sound_in_sync(
        desktop: tuple[Session, PulseServer], session_env: Session, xvfb: int, tmp_path: Path,
        placeholder_model: Path) -> None:
    sink = SINK
    out = tmp_path / "call.mp4"
    with BeepFlasher(session_env, sink, xvfb, REGION) as flasher, beeping(session_env, sink):
        result = run_cli("watch", _region(), "--sound", "desktop", "--model", str(placeholder_model), "--out",
                         str(out), "--input-option", f"framerate={FPS}", "--max-frames", str(8 * FPS), "-v")
    assert result.returncode == 0, result.stderr
    assert f"recording {sink}.monitor (Monitor of {sink})" in result.stderr
    assert flasher.flashes >= 6
    sound = _sound(out)
    assert sound is not None, "the recording is silent"
    codec, wave, start_s = sound
    assert codec == "aac"
    flashes, beeps = _flashes(out), _whole_beeps(wave, start_s)
    assert len(beeps) >= 5, beeps
    video_s = _video_seconds(out)
    _assert_each_beep_has_its_flash(flashes, beeps, video_s)
    assert abs(start_s + len(wave) / SOUND_RATE - video_s) < 0.3  # sound all along the pictures


def _band(wave: np.ndarray, hz: float) -> np.ndarray:
    """The part of ``wave`` within 10 % of ``hz``."""
    spectrum = np.fft.rfft(wave)
    freqs = np.fft.rfftfreq(len(wave), 1 / SOUND_RATE)
    spectrum[np.abs(freqs - hz) > hz / 10] = 0
    return np.fft.irfft(spectrum, len(wave))


def test_two_sources_are_mixed_and_stay_in_sync(
        desktop: tuple[Session, PulseServer], session_env: Session, xvfb: int, tmp_path: Path,
        placeholder_model: Path) -> None:
    """Both sides of a call: what the computer plays (1 kHz beeps) and a second source (500 Hz). The second
    side must be heard all along; its beeps are counted when heard for half their length, as a loaded CI
    machine can glitch the players and the sound server too (a beep cut to 0.14 s, the CPU given to others)."""
    out = tmp_path / "call.mp4"
    room = ROOM
    with BeepFlasher(session_env, SINK, xvfb, REGION), beeping(session_env, SINK), beeping(session_env, room, hz=500):
        result = run_cli("watch", _region(), "--sound", f"desktop, {room}.monitor,DESKTOP", "--model",
                         str(placeholder_model), "--out", str(out), "--input-option", f"framerate={FPS}",
                         "--max-frames", str(7 * FPS), "-v")
    assert result.returncode == 0, result.stderr
    assert f"--sound {room}.monitor: recording {room}.monitor (Monitor of {room})" in result.stderr
    sound = _sound(out)
    assert sound is not None
    _, wave, start_s = sound
    flashes = _flashes(out)
    desk, other = _whole_beeps(_band(wave, 1000), start_s), _whole_beeps(_band(wave, 500), start_s, least_s=0.1)
    assert len(desk) >= 4 and len(other) >= 4, (desk, other)
    _assert_each_beep_has_its_flash(flashes, desk, _video_seconds(out))


def test_both_mixed_sources_go_on_after_the_recorder_stalls(desktop: tuple[Session, PulseServer],
                                                          session_env: Session) -> None:
    """A loaded machine can leave the recorder unscheduled for a moment; the sound from both sources must
    come back after it, not only that of the source whose clock the mixer follows."""
    command = recorder_command([f"{SINK}.monitor", f"{ROOM}.monitor"])
    second = SOUND_RATE * SOUND_CHANNELS * 4
    data = bytearray()
    with beeping(session_env, SINK), beeping(session_env, ROOM, hz=500):
        recorder = subprocess.Popen(command, env=session_env.env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        assert recorder.stdout is not None
        try:
            while len(data) < 5.5 * second and (chunk := recorder.stdout.read(second // 10)):
                data += chunk
                if len(data) == 15 * second // 10:
                    recorder.send_signal(signal.SIGSTOP)
                    time.sleep(0.3)
                    recorder.send_signal(signal.SIGCONT)
        finally:
            recorder.kill()
            recorder.wait()
    wave = np.frombuffer(bytes(data), np.float32).reshape(-1, SOUND_CHANNELS)[:, 0]
    assert len(wave) >= 5 * SOUND_RATE
    last = wave[-2 * SOUND_RATE:]  # each source beeps once a second
    assert np.abs(_band(last, 1000)).max() > 0.3 and np.abs(_band(last, 500)).max() > 0.3


def test_the_sound_comes_back_after_the_sound_server_restarts(
        desktop: tuple[Session, PulseServer], session_env: Session, tmp_path: Path, placeholder_model: Path) -> None:
    _, server = desktop
    out = tmp_path / "call.mp4"
    with ThreadPoolExecutor(1) as pool:
        with beeping(session_env, SINK):
            run = pool.submit(run_cli, "watch", _region(), "--sound", "desktop", "--model", str(placeholder_model),
                              "--out", str(out), "--input-option", f"framerate={FPS}", "--max-frames", str(10 * FPS))
            deadline = time.monotonic() + 60
            while not out.exists() and time.monotonic() < deadline:  # the run has started
                time.sleep(0.05)
            # the sound starts about 1 s into the recording: 3 s hold two beeps before the stop, whatever their phase
            time.sleep(3.0)
            server.stop()  # the player fails with it
        time.sleep(1.5)
        server.start()
        with beeping(session_env, SINK):
            result = run.result(timeout=120)
    assert result.returncode == 0, result.stderr
    assert "the recorder stopped; trying again every second" in result.stderr
    assert "--sound desktop: recording again" in result.stderr
    sound = _sound(out)
    assert sound is not None
    _, wave, start_s = sound
    beeps = _beeps(wave, start_s)
    end_s = start_s + len(wave) / SOUND_RATE
    # before the stop (at most 3 s in), and again after the restart (the first beep then comes after 5 s)
    assert [b for b in beeps if b < 4.0] and len([b for b in beeps if b > end_s - 4.0]) >= 2, (beeps, end_s)


def test_the_desktop_app_adds_the_sound_to_live_sources_only(
        desktop: tuple[Session, PulseServer], session_env: Session, tmp_path: Path, placeholder_model: Path) -> None:
    import tkinter as tk

    from stream_guard.config import ModelOptions, OutputOptions, RunConfig, SourceOptions
    from stream_guard.gui.app import StreamGuardApp
    from tests.test_gui import pump_until

    port = free_port(socket.SOCK_DGRAM)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", port))
    receiver.settimeout(0.2)
    config = RunConfig(source=SourceOptions(spec="demo", sound_device="desktop"),
                       model=ModelOptions(model_dir=placeholder_model),
                       outputs=OutputOptions(stream_to=f"udp://127.0.0.1:{port}"))
    app = StreamGuardApp(tk.Tk(className="stream_guard_test"), config, show_dialogs=False)
    received = bytearray()
    try:
        with beeping(session_env, SINK):
            app.set_source(_region())
            assert app.start(), app.last_error
            assert app.pipeline_thread.pipeline.config.source.sound_device == "desktop"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(received) < 400_000:
                pump_until(app, lambda: True)
                with contextlib.suppress(socket.timeout):
                    received += receiver.recv(65536)
            assert app.stop()
        app.set_source(str(make_test_clip(tmp_path / "clip.mp4", seconds=0.5)))
        assert app.start(), app.last_error  # a file: its own sound, no error for --sound
        assert app.pipeline_thread.pipeline.config.source.sound_device is None
        assert pump_until(app, lambda: not app.running) and app.last_error is None
    finally:
        app.close()
        receiver.close()
    (tmp_path / "sent.ts").write_bytes(received)
    sound = _sound(tmp_path / "sent.ts")
    assert sound is not None and _beeps(sound[1], sound[2]), "the stream sent on has no beeps"


def test_a_sound_source_is_found_by_part_of_its_description(desktop: tuple[Session, PulseServer],
                                                             session_env: Session) -> None:
    sink = SINK
    assert find_sound_source("desktop").name == f"{sink}.monitor"
    assert find_sound_source("monitor of CALL").name == f"{sink}.monitor"  # any case, a part
    assert find_sound_source(f"{sink}.monitor").monitor


def test_doctor_names_what_desktop_and_mic_would_record(desktop: tuple[Session, PulseServer],
                                                       session_env: Session) -> None:
    sink = SINK
    result = run_cli("doctor")
    line = next(line for line in result.stdout.splitlines() if "sound (--sound)" in line)
    assert re.match(r"^\[\s*ok\] sound \(--sound\)", line), line
    # headless: the only source is the output's monitor, which PipeWire also makes the default input
    assert f"desktop = {sink}.monitor; mic = {sink}.monitor; 2 source(s)" in line, line


def test_an_unknown_sound_source_is_one_line_listing_those_there(
        desktop: tuple[Session, PulseServer], session_env: Session, tmp_path: Path, placeholder_model: Path) -> None:
    sink = SINK
    result = run_cli("watch", _region(), "--sound", "headset", "--model", str(placeholder_model),
                     "--out", str(tmp_path / "unused.mp4"), "--max-frames", "5")
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert lines == [f"stream-guard: error: --sound headset: no such sound source; the sound server's sources: "
                     f"{sink}.monitor (Monitor of {sink}); {ROOM}.monitor (Monitor of {ROOM})"], result.stderr


def test_no_sound_server_is_one_line_exit_3(xvfb: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            placeholder_model: Path) -> None:
    nowhere = tmp_path / "run"
    nowhere.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(nowhere))
    monkeypatch.delenv("PULSE_SERVER", raising=False)
    monkeypatch.setenv("DISPLAY", f":{xvfb}")
    result = run_cli("watch", _region(), "--sound", "mic", "--model", str(placeholder_model),
                     "--out", str(tmp_path / "unused.mp4"), "--max-frames", "5")
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1] == \
        "stream-guard: error: --sound: no PulseAudio or PipeWire sound server answers for this user"
    assert not (tmp_path / "unused.mp4").exists()


def test_sound_for_a_file_is_a_configuration_error(tmp_path: Path, placeholder_model: Path) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", seconds=0.5)
    result = run_cli("watch", str(clip), "--sound", "desktop", "--model", str(placeholder_model),
                     "--out", str(tmp_path / "out.mp4"))
    assert result.returncode == 2
    assert "--sound desktop" in result.stderr and "is not a live source" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sound_that_no_output_carries_is_not_recorded(xvfb: int, monkeypatch: pytest.MonkeyPatch,
                                                      placeholder_model: Path) -> None:
    monkeypatch.setenv("DISPLAY", f":{xvfb}")
    result = run_cli("watch", _region(), "--sound", "desktop", "--model", str(placeholder_model), "--max-frames", "3")
    assert result.returncode == 0, result.stderr
    assert "no output carries sound" in result.stderr


class _Pictures:
    """A live picture source for the sound wrapper: ``frames`` grey pictures at 25 fps, stamped now."""

    source_id = "pictures"

    def __init__(self, frames: int) -> None:
        self.count, self.opens, self.closes = frames, 0, 0

    def open(self) -> StreamInfo:
        self.opens += 1
        return StreamInfo(self.source_id, 64, 48, 25.0, None, True)

    def frames(self) -> Iterator[Frame]:
        start = time.monotonic()
        for i in range(self.count):
            time.sleep(0.04)
            yield Frame(np.zeros((48, 64, 3), np.uint8), i, i * 0.04, start + i * 0.04 + 0.01, self.source_id)

    def close(self) -> None:
        self.closes += 1


def _recorders() -> int:
    """This process's sound recorders (children: another test run's are not counted)."""
    out = subprocess.run(["pgrep", "-P", str(os.getpid()), "-fc", "pulsesrc device=@DEFAULT_MONITOR@"],
                         capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def test_each_connection_records_and_stops_its_own_sound(desktop: tuple[Session, PulseServer],
                                                         session_env: Session) -> None:
    chunks: list[SoundChunk] = []
    source = DeviceSoundSource(_Pictures(50), "desktop", chunks.append)
    for connection in range(2):  # a reconnect closes the source and opens it again
        info = source.open()
        assert info.has_sound and _recorders() == 1
        chunks.clear()
        list(source.frames())
        source.close()
        assert _recorders() == 0
        got_s = sum(c.duration_s for c in chunks)
        assert 0.7 < got_s < 1.2, (connection, got_s)  # the 2 s of pictures but their first second
        assert all(b.pts_s > a.pts_s for a, b in zip(chunks, chunks[1:]))
        assert 0.9 < chunks[0].pts_s < 1.3 and chunks[-1].pts_s < 2.1


def test_a_device_that_cannot_be_recorded_fails_the_first_open_and_frees_the_pictures(
        desktop: tuple[Session, PulseServer], session_env: Session) -> None:
    pictures = _Pictures(1)
    with pytest.raises(SoundDeviceError, match="no such sound source"):
        DeviceSoundSource(pictures, "nothing-like-this", lambda chunk: None).open()
    assert pictures.opens == 0 or pictures.closes == pictures.opens


def _frame(pts_s: float, received_s: float) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), 0, pts_s, received_s, "x")


def test_the_picture_clock_uses_the_least_delayed_recent_frame() -> None:
    clock = PictureClock()
    assert clock.pts_at(100.0) is None  # no picture yet: nowhere to place sound
    clock.note(_frame(0.0, 100.05))  # decoded 50 ms after it was taken
    clock.note(_frame(0.04, 100.05))  # 10 ms
    clock.note(_frame(0.08, 100.11))  # 30 ms
    assert clock.pts_at(100.2) is None  # the first second: a live source's first frames come in a burst
    clock.note(_frame(0.96, 101.0))  # 40 ms
    assert clock.pts_at(101.06) == pytest.approx(1.06 - 0.01)  # the 10 ms frame is still in the last second
    clock.note(_frame(1.5, 101.53))  # a second later, only this frame counts
    assert clock.pts_at(101.6) == pytest.approx(1.5 + 0.07)
    assert clock.pts_at(101.53 + PICTURE_GAP_S + 0.1) is None  # the pictures stopped: the source is down


def test_the_sample_clock_counts_samples_and_re_anchors_on_loss_or_a_fast_device() -> None:
    clock = _SampleClock()
    block = 960 / SOUND_RATE
    stamps = [clock.stamp(10.0 + block * (i + 1) + jitter, 960) for i, jitter in
              enumerate([0.0, 0.015, 0.002, 0.019, 0.0])]
    assert stamps == pytest.approx([10.0 + block * i for i in range(5)])  # arrival jitter does not move them
    # half a second of samples never came (the recorder's buffer overflowed): every block after is late
    after = [clock.stamp(10.0 + block * (i + 1) + 0.5, 960) for i in range(5, 5 + 2 * round(LOSS_CHECK_S / block))]
    assert after[-1] == pytest.approx(10.0 + block * (4 + len(after)) + 0.5)  # caught up within the check
    early = clock.stamp(10.0 + block * (5 + len(after)) + 0.4, 960)  # arrived before its count says it was taken
    assert early == pytest.approx(10.0 + block * (4 + len(after)) + 0.4)


def test_blocks_read_late_in_a_burst_keep_their_places() -> None:
    """This process was not scheduled for 0.4 s (a loaded machine): the blocks recorded meanwhile waited
    in the pipe and come together. Each keeps its place; none is stamped where another was (which put
    them over each other, and the outputs dropped the overlap: beeps lost from a recording in CI)."""
    clock = _SampleClock()
    block = 960 / SOUND_RATE
    stamps = [clock.stamp(10.0 + block * (i + 1), 960) for i in range(10)]
    stall_end = 10.0 + block * 10 + 0.4
    stamps += [clock.stamp(stall_end + 0.0001 * i, 960) for i in range(round(0.4 / block))]
    stamps += [clock.stamp(10.0 + block * (i + 1), 960) for i in range(len(stamps), len(stamps) + 60)]
    assert stamps == pytest.approx([10.0 + block * i for i in range(len(stamps))])


def test_the_sample_clock_follows_a_device_clock_that_runs_slow() -> None:
    """A device 0.1 % slow delivers each 20 ms block 20 us later than the count says: after 100 s the
    count alone would be 0.1 s behind; the stamps stay within 25 ms of when the blocks were taken."""
    clock = _SampleClock()
    block = 960 / SOUND_RATE
    worst = 0.0
    for i in range(5000):
        taken_s = 10.0 + i * block * 1.001
        worst = max(worst, abs(clock.stamp(taken_s + block * 1.001, 960) - taken_s))
    assert worst < 0.025
