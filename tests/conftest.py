"""Shared fixtures: a random-weights model in the real contract, synthetic face clips,
and a helper that runs the real ``stream-guard`` command in a subprocess."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterator
from pathlib import Path

import pytest

from stream_guard.model.contract import OperatingPoint
from tests.support.faces import one_face_moving, two_faces_passing
from tests.support.synth_video import make_test_clip
from tools.placeholder_model import write_placeholder_model

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def placeholder_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained model folder of the same contract as the shipped one."""
    folder = tmp_path_factory.mktemp("model")
    write_placeholder_model(folder)
    return folder


QUIET = OperatingPoint("quiet", 0.9, 0.1, 0.3)


@pytest.fixture(scope="session")
def pointed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The placeholder network, its threshold 0.5, with a named threshold ``quiet`` at 0.9
    (:data:`QUIET`: measured to flag 10 % of reals and catch 30 % of fakes)."""
    import dataclasses

    spec = write_placeholder_model(tmp_path_factory.mktemp("pointed"))
    dataclasses.replace(spec, operating_points=(QUIET,)).save()
    return spec.folder


@pytest.fixture(scope="session")
def always_fake_model(tmp_path_factory: pytest.TempPathFactory):
    """The placeholder network with its calibration set to a = 0, b = 6: every window scores
    sigmoid(6) = 0.998, so every face turns fake after the smoother's first windows."""
    import dataclasses

    from tools.placeholder_model import write_placeholder_model

    spec = write_placeholder_model(tmp_path_factory.mktemp("fake_model"))
    dataclasses.replace(spec, calibration_a=0.0, calibration_b=6.0).save()
    return spec.folder


@pytest.fixture(scope="session")
def two_faces_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "two_faces.mp4"
    return make_test_clip(path, seconds=3.0, width=640, height=360, fps=30, draw=two_faces_passing(n_frames=90))


@pytest.fixture(scope="session")
def face_clip_720p(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "face_720p.mp4"
    return make_test_clip(path, seconds=3.0, width=1280, height=720, fps=30, draw=one_face_moving())


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(*args: str, timeout: float = 120, cwd: Path | None = None) -> CliResult:
    """Run ``python -m stream_guard ARGS`` for real and capture its output."""
    proc = subprocess.run([sys.executable, "-m", "stream_guard", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or REPO)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def watch_events(clip: Path, model: Path, events: Path, *args: str) -> list[dict]:
    """Run ``watch CLIP --model MODEL --events EVENTS ARGS`` for real; the records it logged."""
    result = run_cli("watch", str(clip), "--model", str(model), "--events", str(events), *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in events.read_text().splitlines()]


@pytest.fixture(scope="session")
def xvfb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private Xvfb server for the whole session; yields its display number."""
    from tests.support.xvfb import running_xvfb

    try:
        with running_xvfb(tmp_path_factory.mktemp("xvfb") / "xvfb.log") as number:
            yield number
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's chromium, headless, driven by Playwright (which never downloads a browser here)."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); tools/run_tests.sh installs it")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
