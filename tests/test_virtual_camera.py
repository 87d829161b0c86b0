"""Virtual camera output, tested at the pyvirtualcam boundary (no camera device exists here)."""
from __future__ import annotations

import glob
import sys
from pathlib import Path

import numpy as np
import pytest

from stream_guard.config import ModelOptions, OutputOptions, RunConfig, SourceOptions
from stream_guard.errors import OutputError
from stream_guard.outputs.virtual_camera import VirtualCameraSink
from stream_guard.pipeline import Pipeline
from stream_guard.types import StreamInfo
from tests.conftest import run_cli
from tests.support.alert_frames import result

pyvirtualcam = pytest.importorskip("pyvirtualcam", reason="pyvirtualcam not installed (pip install -e '.[test]')")


class FakeCamera:
    """Stands in for ``pyvirtualcam.Camera``: records what it is given."""

    made: list["FakeCamera"] = []

    def __init__(self, width: int, height: int, fps: float, *, fmt=None, device=None, **kw) -> None:
        self.width, self.height, self.fps, self.fmt, self.device = width, height, fps, fmt, device
        self.backend = "fake"
        self.frames: list[np.ndarray] = []
        self.sleeps = 0
        self.closed = False
        FakeCamera.made.append(self)

    def send(self, frame: np.ndarray) -> None:
        assert not self.closed
        self.frames.append(frame.copy())

    def sleep_until_next_frame(self) -> None:
        self.sleeps += 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_camera(monkeypatch: pytest.MonkeyPatch) -> type[FakeCamera]:
    FakeCamera.made = []
    monkeypatch.setattr(pyvirtualcam, "Camera", FakeCamera)
    return FakeCamera


def _info(width: int, height: int, fps: float | None) -> StreamInfo:
    return StreamInfo("test", width, height, fps, None, is_live=True)


def test_frames_go_to_the_camera_at_the_stream_size_and_rate(fake_camera) -> None:
    sink = VirtualCameraSink()
    sink.open(_info(64, 48, 25.0))
    for i in range(12):
        sink.write(result(i, (), width=64, height=48))
    sink.close()
    (cam,) = fake_camera.made
    assert (cam.width, cam.height, cam.fps, cam.fmt) == (64, 48, 25.0, pyvirtualcam.PixelFormat.RGB)
    assert len(cam.frames) == 12 and cam.sleeps == 12 and cam.closed
    for i, frame in enumerate(cam.frames):
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        assert int(frame[0, 0, 0]) == i  # the annotated frame itself, in order


def test_odd_sizes_are_made_even_and_frames_resized(fake_camera) -> None:
    sink = VirtualCameraSink()
    sink.open(_info(65, 49, None))
    sink.write(result(0, (), width=65, height=49))
    sink.write(result(1, (), width=128, height=96))  # a live source reconnected at another size
    sink.close()
    (cam,) = fake_camera.made
    assert (cam.width, cam.height, cam.fps) == (64, 48, 30.0)  # no fps known -> 30
    assert [f.shape for f in cam.frames] == [(48, 64, 3), (48, 64, 3)]


def test_pipeline_feeds_the_camera_the_annotated_video(fake_camera, two_faces_clip: Path,
                                                       placeholder_model: Path) -> None:
    config = RunConfig(source=SourceOptions(str(two_faces_clip)), model=ModelOptions(model_dir=placeholder_model),
                       outputs=OutputOptions(virtual_cam=True))
    summary = Pipeline(config).run()
    assert summary.frames_processed == 90 and summary.failed_outputs == ()
    (cam,) = fake_camera.made
    assert (cam.width, cam.height, cam.fps) == (640, 360, 30.0)
    # lossy by design: the camera keeps its own rate and takes the newest frame, so any count 1..90
    assert 1 <= len(cam.frames) <= 90 and cam.closed
    assert all(f.shape == (360, 640, 3) and f.dtype == np.uint8 for f in cam.frames)


def test_missing_pyvirtualcam_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyvirtualcam", None)
    with pytest.raises(OutputError, match=r"pip install 'stream-guard\[virtualcam\]'"):
        VirtualCameraSink().open(_info(64, 48, 30.0))


@pytest.mark.skipif(not sys.platform.startswith("linux") or bool(glob.glob("/dev/video*")),
                    reason="needs a Linux machine without any video device")
def test_no_virtual_camera_device_is_a_clear_error(two_faces_clip: Path, placeholder_model: Path) -> None:
    with pytest.raises(OutputError) as info:
        VirtualCameraSink().open(_info(64, 48, 30.0))
    assert "v4l2loopback" in str(info.value) and "\n" not in str(info.value)
    res = run_cli("watch", str(two_faces_clip), "--model", str(placeholder_model), "--virtual-cam")
    assert res.returncode == 5
    (line,) = res.stderr_lines[-1:]
    assert line.startswith("stream-guard: error: --virtual-cam: no virtual camera available")
    assert "modprobe v4l2loopback" in line and "Traceback" not in res.stderr
