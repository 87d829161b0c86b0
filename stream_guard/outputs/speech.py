"""Spoken alerts (``--speak``): "Warning: face 3 looks fake" when an alert is raised,
"Face 3 cleared" when it is cleared.

Speech runs on its own thread through espeak-ng (a subprocess) or, where espeak-ng is
missing, pyttsx3. Utterances wait in a small queue; when speech falls behind, new ones
are dropped and counted rather than slowing the pipeline.
"""
from __future__ import annotations

import logging
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Protocol

from stream_guard.errors import OutputError
from stream_guard.outputs.alerts import RAISED, Alert, AlertOptions, AlertSink
from stream_guard.types import StreamInfo

log = logging.getLogger(__name__)
_STOP = object()
INSTALL_HINT = ("--speak needs a speech engine: install espeak-ng (Debian/Ubuntu: apt install espeak-ng; "
                "macOS: brew install espeak-ng) or pyttsx3 (pip install pyttsx3)")


def alert_text(alert: Alert) -> str:
    """What is said for one alert."""
    if alert.kind == RAISED:
        return f"Warning: face {alert.track_id} looks fake"
    return f"Face {alert.track_id} cleared"


class SpeechBackend(Protocol):
    name: str

    def say(self, text: str, wav_path: Path | None) -> None:
        """Speak ``text`` (blocking), or write it to ``wav_path`` instead when given."""

    def close(self) -> None: ...


class EspeakBackend:
    """espeak-ng as a subprocess, one per utterance."""

    name = "espeak-ng"

    def __init__(self, executable: str, timeout_s: float = 30.0) -> None:
        self.executable = executable
        self.timeout_s = timeout_s

    def say(self, text: str, wav_path: Path | None) -> None:
        cmd = [self.executable] + (["-w", str(wav_path)] if wav_path is not None else []) + ["--", text]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        if proc.returncode != 0:
            raise OSError(f"espeak-ng exited with {proc.returncode}: {proc.stderr.strip()[-200:]}")
        if wav_path is None and "error" in proc.stderr.lower():  # no sound device: it says so, and exits 0
            raise OSError(f"espeak-ng could not play the speech: {proc.stderr.strip()[-200:]}")

    def close(self) -> None:
        pass


class Pyttsx3Backend:
    """pyttsx3 (SAPI5 on Windows, NSSpeechSynthesizer on macOS, espeak on Linux); created on
    the speech thread and used only there."""

    name = "pyttsx3"

    def __init__(self, module: Any) -> None:
        self._engine = module.init()

    def say(self, text: str, wav_path: Path | None) -> None:
        if wav_path is not None:
            self._engine.save_to_file(text, str(wav_path))
        else:
            self._engine.say(text)
        self._engine.runAndWait()

    def close(self) -> None:
        self._engine.stop()


def find_backend(which: Callable[[str], str | None] = shutil.which) -> Callable[[], SpeechBackend]:
    """A factory for the first available engine (espeak-ng, then pyttsx3), else :class:`OutputError`."""
    exe = which("espeak-ng")
    if exe is not None:
        return lambda: EspeakBackend(exe)
    try:
        import pyttsx3
    except ImportError:
        raise OutputError(INSTALL_HINT) from None
    return lambda: Pyttsx3Backend(pyttsx3)


class SpeechSink(AlertSink):
    """Speaks every alert. ``wav_dir``: write each utterance to ``alert-NNNN.wav`` there
    instead of playing it (for tests, and machines with no audio device)."""

    name = "speech"

    def __init__(self, alerts: AlertOptions = AlertOptions(), wav_dir: Path | None = None,
                 backend: Callable[[], SpeechBackend] | None = None, queue_size: int = 4) -> None:
        super().__init__(alerts)
        self.wav_dir = wav_dir
        self._backend_factory = backend
        self._q: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self.spoken: list[str] = []  # texts said so far (with wav_dir: their files are wav_files)
        self.wav_files: list[Path] = []
        self.dropped = 0

    def open(self, info: StreamInfo) -> None:
        factory = self._backend_factory or find_backend()
        if self.wav_dir is not None:
            try:
                self.wav_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(f"speech: cannot create {self.wav_dir} ({e.strerror})") from e
        started = threading.Event()
        errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(factory, started, errors), name="speech",
                                        daemon=True)
        self._thread.start()
        started.wait()
        if errors:
            self._thread.join()
            raise OutputError(f"--speak: the speech engine failed to start ({errors[0]})") from errors[0]

    def on_alert(self, alert: Alert) -> None:
        try:
            self._q.put_nowait(alert_text(alert))
        except queue.Full:
            self.dropped += 1
            log.warning("speech: falling behind, alert not spoken (%d dropped)", self.dropped)

    def close(self) -> None:
        if self._thread is None:
            return
        self._q.put(_STOP)  # blocks only while speech finishes what is queued (a few utterances)
        self._thread.join()
        self._thread = None

    def _run(self, factory: Callable[[], SpeechBackend], started: threading.Event,
             errors: list[BaseException]) -> None:
        try:
            backend = factory()
        except Exception as e:  # noqa: BLE001 - reported by open() as an OutputError
            errors.append(e)
            started.set()
            return
        started.set()
        try:
            while (text := self._q.get()) is not _STOP:
                wav = None if self.wav_dir is None else self.wav_dir / f"alert-{len(self.spoken) + 1:04d}.wav"
                try:
                    backend.say(text, wav)
                except (OSError, subprocess.SubprocessError, RuntimeError) as e:
                    log.error("speech: could not say %r: %s", text, e)
                    continue
                self.spoken.append(text)
                if wav is not None:
                    self.wav_files.append(wav)
        finally:
            backend.close()
