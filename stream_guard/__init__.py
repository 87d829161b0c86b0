"""stream_guard: a live deepfake monitor for video streams."""

__version__ = "0.1.0"
# Every window this app opens is titled this, or this and " - " and more: window capture never takes them
WINDOW_TITLE = "stream_guard"
