"""An application window on a test X display: a titled Tk window showing the astronaut's head,
which the test can move, resize, minimise, restore and close, as a user does a video call's; and
a run that watches a screen source while the test does so."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from stream_guard.config import ModelOptions, OutputOptions, RunConfig, SourceOptions
from stream_guard.pipeline import Pipeline, RunSummary
from stream_guard.types import FrameResult

HEAD_AT = (190, 90)  # the head (260x300) is drawn with its top left corner here, inside the window

_APP = textwrap.dedent("""
    import sys, tkinter as tk
    from tests.support.faces import astronaut_head
    from stream_guard.outputs.window import ppm_bytes
    title, geometry, x, y = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    root = tk.Tk()
    root.title(title)
    root.geometry(geometry)
    root.configure(background="#5a5a5a")
    image = tk.PhotoImage(data=ppm_bytes(astronaut_head()), format="PPM")
    tk.Label(root, image=image, borderwidth=0, highlightthickness=0).place(x=x, y=y)

    def command(*_):
        words = sys.stdin.readline().split()
        if not words or words[0] == "close":
            root.destroy()
            return
        {"geometry": lambda: root.geometry(words[1]), "minimise": root.withdraw,
         "restore": root.deiconify, "title": lambda: root.title(" ".join(words[1:]))}[words[0]]()
        root.update()
        print("ok", flush=True)

    root.tk.createfilehandler(sys.stdin, tk.READABLE, command)
    root.update()
    print("ready", flush=True)
    root.mainloop()
""")


class TkWindow:
    """A window titled ``title`` at ``geometry`` (``WxH+X+Y``) on ``$DISPLAY``, while in a ``with`` block."""

    def __init__(self, title: str, geometry: str) -> None:
        self.title, self.geometry = title, geometry
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> "TkWindow":
        self._proc = subprocess.Popen([sys.executable, "-c", _APP, self.title, self.geometry, *map(str, HEAD_AT)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                      cwd=Path(__file__).resolve().parents[2])
        self._expect("ready")
        return self

    def _expect(self, word: str) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        assert line == word, f"the test window said {line!r}, not {word!r}"

    def do(self, command: str) -> None:
        """``geometry WxH+X+Y`` (or ``+X+Y``, ``WxH``), ``title TEXT``, ``minimise``, ``restore``; or ``close``."""
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        if command == "close":
            self._proc.wait(timeout=10)
        else:
            self._expect("ok")

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


def watch(source: str, model: Path, frames: int, window: TkWindow, *steps: tuple[float, str], show: bool = False
         ) -> tuple[RunSummary, list[FrameResult], list[dict]]:
    """Watch ``source`` for ``frames`` frames, doing each ``(seconds, command)`` to the window meanwhile."""
    results: list[FrameResult] = []
    pipeline = Pipeline(RunConfig(source=SourceOptions(source, max_frames=frames), model=ModelOptions(model_dir=model),
                                  outputs=OutputOptions(show=show)), on_result=results.append)
    timers = [threading.Timer(at, window.do, (command,)) for at, command in steps]
    for timer in timers:
        timer.start()
    try:
        summary = pipeline.run()
    finally:
        for timer in timers:
            timer.join()
    return summary, results, list(pipeline.stats.source_events)


def face_centres(results: list[FrameResult]) -> list[tuple[float, float]]:
    """The centres of the faces found in ``results``, all frames together."""
    return [((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for r in results for f in r.faces]
