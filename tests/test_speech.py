"""Spoken alerts: real espeak-ng writing WAV files (no audio device needed)."""
from __future__ import annotations

import shutil
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from stream_guard.errors import OutputError
from stream_guard.outputs.alerts import AlertOptions
from stream_guard.outputs.speech import SpeechSink, find_backend
from tests.support.alert_frames import INFO, NOISY_FAKE_THEN_REAL, verdict_sequence

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed (apt install espeak-ng; tools/run_tests.sh does)")


def _rms(path: Path) -> tuple[float, float]:
    """(RMS of 16-bit samples, duration in seconds)."""
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2
        samples = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64)
        return float(np.sqrt(np.mean(samples ** 2))) if samples.size else 0.0, w.getnframes() / w.getframerate()


@needs_espeak
def test_raise_and_clear_are_spoken(tmp_path: Path) -> None:
    sink = SpeechSink(AlertOptions(raise_windows=3, clear_windows=5), wav_dir=tmp_path / "speech")
    sink.open(INFO)
    try:
        for r in verdict_sequence(NOISY_FAKE_THEN_REAL):
            sink.write(r)  # only queues: speech happens on the sink's own thread
    finally:
        sink.close()
    assert sink.spoken == ["Warning: face 3 looks fake", "Face 3 cleared"]
    assert [p.name for p in sink.wav_files] == ["alert-0001.wav", "alert-0002.wav"]
    for path in sink.wav_files:
        rms, seconds = _rms(path)
        assert seconds > 0.3, f"{path.name}: only {seconds:.2f} s"
        assert rms > 300, f"{path.name}: silent (RMS {rms:.0f} of 32767)"


def test_no_speech_engine_is_a_one_line_output_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyttsx3", None)  # import pyttsx3 -> ImportError
    with pytest.raises(OutputError) as info:
        find_backend(which=lambda name: None)
    message = str(info.value)
    assert "\n" not in message and "espeak-ng" in message and "pyttsx3" in message


def test_a_failing_engine_is_reported_at_open() -> None:
    def broken():
        raise RuntimeError("no audio driver")

    sink = SpeechSink(backend=broken)
    with pytest.raises(OutputError, match="no audio driver"):
        sink.open(INFO)
    sink.close()


class _FakeEngine:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def say(self, text: str) -> None:
        self.calls.append(("say", text))

    def save_to_file(self, text: str, path: str) -> None:
        self.calls.append(("save", text, path))

    def runAndWait(self) -> None:  # noqa: N802 - pyttsx3's name
        self.calls.append(("run",))

    def stop(self) -> None:
        self.calls.append(("stop",))


def test_pyttsx3_is_used_where_espeak_ng_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyttsx3 is a true edge here (not installed): a stand-in module checks the calls we make."""
    engine = _FakeEngine()
    fake = type(sys)("pyttsx3")
    fake.init = lambda: engine
    monkeypatch.setitem(sys.modules, "pyttsx3", fake)
    sink = SpeechSink(AlertOptions(raise_windows=1, clear_windows=1), backend=find_backend(which=lambda name: None))
    sink.open(INFO)
    try:
        for r in verdict_sequence(["fake", "real"], track_id=5):
            sink.write(r)
    finally:
        sink.close()
    assert engine.calls == [("say", "Warning: face 5 looks fake"), ("run",), ("say", "Face 5 cleared"), ("run",),
                            ("stop",)]


def test_espeak_that_cannot_reach_a_sound_device_is_a_failure_said(tmp_path: Path) -> None:
    """With no sound device espeak-ng prints "error: No such file or directory" and exits 0: alerts were
    counted as spoken, in silence, with no warning."""
    from stream_guard.outputs.speech import EspeakBackend

    fake = tmp_path / "espeak-ng"
    fake.write_text("#!/bin/sh\necho 'error: No such file or directory' >&2\nexit 0\n")
    fake.chmod(0o755)
    with pytest.raises(OSError, match="could not play the speech: error: No such file or directory"):
        EspeakBackend(str(fake)).say("face 1 looks fake", None)
    EspeakBackend(str(fake)).say("face 1 looks fake", tmp_path / "a.wav")  # writing a file needs no device
