"""Virtual camera output (``--virtual-cam``): the annotated video as a webcam that OBS or a
video-call app can pick, through pyvirtualcam (v4l2loopback on Linux, OBS Virtual Camera
on Windows and macOS).

The sink is lossy: it runs on its own thread, gets the newest annotated frame, sends it and
waits for the camera's next frame slot (``sleep_until_next_frame``), so the camera keeps
its own steady rate and a slow camera never slows the analysis.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np

from stream_guard.errors import OutputError
from stream_guard.outputs.video_file import fit_to_encoder
from stream_guard.types import FrameResult, StreamInfo

log = logging.getLogger(__name__)
DEFAULT_FPS = 30.0
INSTALL_PACKAGE = "pip install 'stream-guard[virtualcam]'"


def device_hint() -> str:
    """What to install for a virtual camera device on this platform."""
    if sys.platform.startswith("linux"):
        return ("load v4l2loopback: sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback "
                "devices=1 exclusive_caps=1 card_label=stream_guard")
    if sys.platform == "darwin":
        return ("install OBS Studio (https://obsproject.com), click Start Virtual Camera once, "
                "then Stop Virtual Camera, and quit OBS")
    return "install OBS Studio 26 or later (https://obsproject.com): it brings the OBS Virtual Camera"


class VirtualCameraSink:
    """Sends ``result.annotated`` (RGB) to a virtual camera at the stream's size (made even)
    and frame rate (``fps`` overrides it; 30 when the stream has none)."""

    name = "virtual-cam"
    lossless = False

    def __init__(self, fps: float | None = None, device: str | None = None) -> None:
        self.fps = fps
        self.device = device
        self._cam: Any = None
        self.size: tuple[int, int] | None = None  # (width, height) sent to the camera
        self.frames_sent = 0

    def open(self, info: StreamInfo) -> None:
        try:
            import pyvirtualcam
        except ImportError as e:
            raise OutputError(f"--virtual-cam needs pyvirtualcam: {INSTALL_PACKAGE}") from e
        width, height = max(2, info.width - info.width % 2), max(2, info.height - info.height % 2)
        fps = self.fps or info.fps or DEFAULT_FPS
        try:
            self._cam = pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                            device=self.device)
        except (RuntimeError, ValueError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise OutputError(f"--virtual-cam: no virtual camera available ({first}); {device_hint()}") from e
        self.size = (width, height)
        log.info("virtual camera %s (%s): %dx%d at %.2f fps", self._cam.device, self._cam.backend, width, height,
                 fps)

    def write(self, result: FrameResult) -> None:
        if self._cam is None or self.size is None:
            return
        image = fit_to_encoder(result.annotated, *self.size)
        self._cam.send(np.ascontiguousarray(image, dtype=np.uint8))
        self.frames_sent += 1
        self._cam.sleep_until_next_frame()

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            cam.close()
