"""A desktop window showing the annotated video, drawn with Tk.

Tk rather than OpenCV's GUI: stream_guard ships opencv-python-headless, and GUI
builds of OpenCV crash or hang next to PyAV's x11grab screen capture in one process.
No Pillow either: frames reach Tk as PPM bytes.

Tk is single-threaded: the pipeline calls ``open``, ``write`` and ``close`` on one
thread (the sink's own), and this class creates, drives and destroys Tk there. There
is no ``mainloop``; each ``write`` pumps pending window events with ``update()``.
"""
from __future__ import annotations

import os
import sys
import tkinter as tk
from typing import Callable

import cv2
import numpy as np

from stream_guard import WINDOW_TITLE
from stream_guard.errors import OutputError
from stream_guard.types import FrameResult, StreamInfo

NO_DISPLAY_MESSAGE = "no display: --show needs a desktop session (DISPLAY is not set)"


class TkWindowSink:
    """Shows ``result.annotated`` in a window, scaled down to fit ``max_size``.

    Closing the window, or pressing ``q`` or ``Escape`` in it, calls ``on_close``
    once (the pipeline uses it to stop); later writes are ignored.
    """

    name = "window"
    lossless = False

    def __init__(
        self,
        title: str = WINDOW_TITLE,
        on_close: Callable[[], None] | None = None,
        max_size: tuple[int, int] = (1280, 720),
    ) -> None:
        if max_size[0] < 1 or max_size[1] < 1:
            raise ValueError(f"max_size must be positive, got {max_size}")
        self.title = title
        self.max_size = (int(max_size[0]), int(max_size[1]))
        self._on_close = on_close
        self._root: tk.Tk | None = None
        self._photo: tk.PhotoImage | None = None
        self._label: tk.Label | None = None
        self._closing = False
        self.closed_by_user = False

    @property
    def tk_root(self) -> tk.Tk | None:
        """The Tk root while the window is open (use it only on the sink's thread)."""
        return self._root

    def open(self, info: StreamInfo) -> None:
        """Create the window, sized for the stream's frames."""
        if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
            raise OutputError(NO_DISPLAY_MESSAGE)
        try:
            root = tk.Tk(className="stream_guard")
        except tk.TclError as e:
            raise OutputError(f"no display: cannot open a window ({e})") from e
        self._root = root
        self._closing = False
        root.title(self.title)
        root.configure(background="black")
        root.resizable(False, False)
        root.protocol("WM_DELETE_WINDOW", self._user_closed)
        for key in ("<KeyPress-q>", "<KeyPress-Q>", "<Escape>"):
            root.bind(key, self._key_closed)
        root.bind("<Destroy>", self._destroyed)
        width, height = fit_size(info.width, info.height, self.max_size)
        self._photo = tk.PhotoImage(master=root, width=width, height=height)
        self._label = tk.Label(root, image=self._photo, borderwidth=0, highlightthickness=0, background="black")
        self._label.pack()
        self._pump()

    def write(self, result: FrameResult) -> None:
        """Show one annotated frame and process pending window events."""
        if self._root is None or self._photo is None:
            return  # closed by the user (or never opened): nothing to draw on
        image = fit_image(result.annotated, self.max_size)
        self._photo.configure(data=ppm_bytes(image), format="PPM", width=0, height=0)
        self._pump()

    def close(self) -> None:
        """Destroy the window. Idempotent; call it on the thread that opened it."""
        self._closing = True
        self._teardown()

    def window_geometry(self) -> tuple[int, int, int, int] | None:
        """Screen position and size ``(x, y, width, height)`` of the picture, if shown."""
        if self._label is None:
            return None
        label = self._label
        return label.winfo_rootx(), label.winfo_rooty(), label.winfo_width(), label.winfo_height()

    def _pump(self) -> None:
        if self._root is None:
            return
        try:
            self._root.update()
        except tk.TclError:  # destroyed from inside an event handler
            self._teardown()

    def _key_closed(self, _event: tk.Event) -> None:
        self._user_closed()

    def _destroyed(self, event: tk.Event) -> None:
        if event.widget is self._root:
            self._user_closed()

    def _user_closed(self) -> None:
        """The user dismissed the window: tell the pipeline (once), then tear down."""
        if self._closing:
            return
        self._closing = True
        self.closed_by_user = True
        if self._on_close is not None:
            self._on_close()
        self._teardown()

    def _teardown(self) -> None:
        # Drop the photo and label first, on this thread: their finalisers call into Tcl.
        root, self._root = self._root, None
        self._photo = None
        self._label = None
        if root is not None:
            try:
                root.destroy()
            except tk.TclError:
                pass


def fit_size(width: int, height: int, max_size: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` scaled down (never up) to fit ``max_size``, aspect kept."""
    scale = min(max_size[0] / width, max_size[1] / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_image(image: np.ndarray, max_size: tuple[int, int]) -> np.ndarray:
    """The RGB image, downscaled if it does not fit ``max_size``."""
    height, width = image.shape[:2]
    size = fit_size(width, height, max_size)
    if size == (width, height):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def ppm_bytes(image: np.ndarray) -> bytes:
    """Binary PPM (P6) encoding of an RGB uint8 image, which Tk reads natively."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    return b"P6 %d %d 255\n" % (width, height) + np.ascontiguousarray(image).tobytes()
