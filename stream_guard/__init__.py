"""stream_guard: a live deepfake monitor for video streams."""

__version__ = "0.1.0"
