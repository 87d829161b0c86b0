"""The desktop app: pick a source, Start/Stop, the live annotated view, a per-face panel and
a status bar. All Tk calls happen on the Tk (main) thread; the pipeline runs on a
:class:`PipelineThread` (a picture: a :class:`PictureThread`, scored as ``scan`` scores it) and
hands results over through :class:`LatestResultSink`, which the Tk thread polls with ``after()``.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import tkinter as tk
from pathlib import Path
from typing import Sequence
from tkinter import filedialog, ttk

import cv2
import numpy as np

from stream_guard import WINDOW_TITLE
from stream_guard.config import ModelOptions, OutputOptions, RunConfig, SourceOptions, analysis_options
from stream_guard.errors import ConfigError, OutputError, StreamGuardError
from stream_guard.faces.detector import detector_options
from stream_guard.file_analysis import IMAGE_SUFFIXES, VIDEO_SUFFIXES, FileAnalysis, no_score_text
from stream_guard.gui.error_dialog import ErrorDialog
from stream_guard.gui.bridge import LatestResultSink, PictureThread, PipelineThread
from stream_guard.gui.panel import FacePanel
from stream_guard.gui.sources import source_choices
from stream_guard.model.contract import ModelSpec
from stream_guard.outputs.window import ppm_bytes
from stream_guard.pipeline import load_model
from stream_guard.sources import parse_source
from stream_guard.types import FrameResult

log = logging.getLogger(__name__)

VIEW_SIZE = (960, 540)
POLL_MS = 30
# Tk's patterns are case-sensitive on Linux, and cameras write .MOV, .MTS, .JPG
FILE_TYPES = [("Videos and images", " ".join(f"*{suffix} *{suffix.upper()}"
                                             for suffix in sorted(VIDEO_SUFFIXES | IMAGE_SUFFIXES))),
              ("All files", "*")]


def scale_to_fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The RGB image scaled (up or down, aspect kept) to fit ``size`` = (width, height)."""
    h, w = image.shape[:2]
    scale = min(size[0] / w, size[1] / h)
    target = (max(1, round(w * scale)), max(1, round(h * scale)))
    if target == (w, h):
        return image
    return cv2.resize(image, target, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


class StreamGuardApp:
    """The app's window on ``root``. Programmatic use (tests, scripts): ``set_source(text)``,
    ``start()``, ``stop()``, ``close()``; ``frames_shown``, ``panel.rows``, ``status_text``,
    ``last_error`` tell what is on screen. ``show_dialogs=False`` keeps errors in the status
    bar only (no error window)."""

    def __init__(self, root: tk.Tk, config: RunConfig, show_dialogs: bool = True,
                 view_size: tuple[int, int] = VIEW_SIZE, poll_ms: int = POLL_MS) -> None:
        self.root = root
        self.config = config
        self.show_dialogs = show_dialogs
        self.view_size = view_size
        self.poll_ms = poll_ms
        self.frames_shown = 0
        self._source_shown: dict | None = None  # the last source state change shown in the status bar
        self.last_error: str | None = None
        self.error_dialog: ErrorDialog | None = None  # the error window on screen, if any
        self.spec: ModelSpec | None = None
        self._sink: LatestResultSink | None = None
        self._thread: PipelineThread | PictureThread | None = None
        self._after_id: str | None = None
        self._closed = False
        self._close_requested = threading.Event()
        self._build()
        root.protocol("WM_DELETE_WINDOW", self.close)
        self._load_model_info()
        self._schedule_poll()

    # ----- layout
    def _build(self) -> None:
        root = self.root
        root.title(WINDOW_TITLE)
        bar = ttk.Frame(root, padding=6)
        bar.pack(side="top", fill="x")
        ttk.Label(bar, text="Source:").pack(side="left")
        self.source_var = tk.StringVar(master=root)
        self.source_box = ttk.Combobox(bar, textvariable=self.source_var, values=source_choices(),
                                       width=48, postcommand=self._list_sources)
        self.source_box.pack(side="left", padx=4)
        self.source_box.bind("<Return>", lambda _e: self.start())
        ttk.Button(bar, text="Open file…", command=self._choose_file).pack(side="left", padx=2)
        self.realtime_var = tk.BooleanVar(master=root, value=True)
        ttk.Checkbutton(bar, text="real-time", variable=self.realtime_var).pack(side="left", padx=6)
        self.speak_var = tk.BooleanVar(master=root, value=self.config.outputs.speak)
        ttk.Checkbutton(bar, text="speak alerts", variable=self.speak_var).pack(side="left", padx=6)
        # a video call's gallery view: faces too small for the detector's whole-frame pass (--detect-tiles always)
        self.small_faces_var = tk.BooleanVar(master=root, value=bool(self.config.detector.add_tiles_above))
        ttk.Checkbutton(bar, text="small faces", variable=self.small_faces_var).pack(side="left", padx=6)
        ttk.Label(bar, text="Threshold:").pack(side="left")
        self.threshold_var = tk.StringVar(master=root)
        self.threshold_box = ttk.Combobox(bar, textvariable=self.threshold_var, state="readonly", width=15)
        self.threshold_box.pack(side="left", padx=4)
        self.threshold_box.bind("<<ComboboxSelected>>", lambda _e: self._threshold_chosen())
        self._threshold_choices: dict[str, float | str | None] = {}
        self.start_button = ttk.Button(bar, text="Start", command=self.start)
        self.start_button.pack(side="left", padx=2)
        self.stop_button = ttk.Button(bar, text="Stop", command=self.stop, state="disabled")
        self.stop_button.pack(side="left", padx=2)

        status = tk.Frame(root, background="#e8eaed")
        status.pack(side="bottom", fill="x")
        self.status_label = tk.Label(status, text="idle", anchor="w", background="#e8eaed", padx=6)
        self.status_label.pack(side="left", fill="x", expand=True)
        self.warning_label = tk.Label(status, text="", foreground="#b71c1c", background="#e8eaed", padx=6,
                                      font=("TkDefaultFont", 10, "bold"))
        self.warning_label.pack(side="right")

        body = tk.Frame(root, background="#202124")
        body.pack(side="top", fill="both", expand=True)
        w, h = self.view_size
        self._photo = tk.PhotoImage(master=root, width=w, height=h)
        self.view = tk.Label(body, image=self._photo, width=w, height=h, background="black",
                             borderwidth=0, highlightthickness=0)
        self.view.pack(side="left")
        self.panel = FacePanel(body, width=270, height=h)
        self.panel.pack(side="left", fill="y")

    # ----- programmatic API
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def status_text(self) -> str:
        return str(self.status_label.cget("text"))

    @property
    def warning_text(self) -> str:
        return str(self.warning_label.cget("text"))

    @property
    def pipeline_thread(self) -> PipelineThread | PictureThread | None:
        return self._thread

    def set_source(self, text: str) -> None:
        self.source_var.set(text)

    def set_realtime(self, on: bool) -> None:
        self.realtime_var.set(on)

    def set_threshold(self, choice: str) -> None:
        """Judge at ``choice`` (an entry of the "Threshold" box, or just its name) from the next Start."""
        entry = next((e for e in self._threshold_choices if choice in (e, e.split()[0])), None)
        if entry is None:
            raise ValueError(f"no threshold {choice!r} among {list(self._threshold_choices)}")
        self.threshold_var.set(entry)
        self._threshold_chosen()

    @property
    def threshold_entries(self) -> list[str]:
        """What the "Threshold" box offers: the model's named thresholds, and ``--threshold`` if a number."""
        return list(self._threshold_choices)

    def set_speak(self, on: bool) -> None:
        """Say alerts aloud from the next Start (the "speak alerts" box)."""
        self.speak_var.set(on)

    def set_small_faces(self, on: bool) -> None:
        """Search every frame in tiles too from the next Start (the "small faces" box: a call's gallery view)."""
        self.small_faces_var.set(on)

    def view_geometry(self) -> tuple[int, int, int, int]:
        """Screen position and size ``(x, y, width, height)`` of the video view."""
        v = self.view
        return v.winfo_rootx(), v.winfo_rooty(), v.winfo_width(), v.winfo_height()

    def start(self) -> bool:
        """Start analysing the source in the field; False (and the error shown) if it cannot start."""
        if self.running:
            return False
        self._finish_thread()
        text = self.source_var.get().strip()
        try:
            spec = parse_source(text)  # a typo shows at once, before any thread starts
            if spec.kind == "pipe":
                raise ConfigError("'-' (standard input) is for the command line: stream-guard watch -")
            picture = Path(spec.url) if spec.kind == "file" and Path(spec.url).suffix.lower() in IMAGE_SUFFIXES \
                else None
            live = spec.is_live
            sound = self.config.source.sound_device if live else None  # --sound: for live sources; a file has its own
            config = dataclasses.replace(
                self.config, source=SourceOptions(spec=text, realtime=bool(self.realtime_var.get()),
                                                  sound_device=sound),
                outputs=dataclasses.replace(self.config.outputs, speak=bool(self.speak_var.get())),
                model=dataclasses.replace(self.config.model, threshold=self._chosen_threshold()),
                detector=dataclasses.replace(self.config.detector,
                                             add_tiles_above=1 if self.small_faces_var.get() else 0))
            self.spec = load_model(config)
            self.panel.threshold = self._threshold(self.spec)
        except StreamGuardError as e:
            self._show_error(str(e))
            return False
        self.last_error = None
        self._show_model(self.spec)
        self._sink = LatestResultSink()
        self._thread = PipelineThread(config, self._sink) if picture is None else \
            PictureThread(config, self._sink, picture)
        self._thread.start()
        self.start_button.configure(state="disabled")
        self.stop_button.configure(state="normal")
        self._set_status(f"{'starting' if picture is None else 'scoring the picture'} {text}…")
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the running pipeline and wait for its thread; True if nothing is left running."""
        thread = self._thread
        if thread is None:
            return True
        ended = thread.stop(timeout)
        if not ended:
            log.error("the pipeline did not stop within %.0f s", timeout)
        self._finish_thread()
        return ended

    def request_close(self) -> None:
        """Ask for ``close()`` from outside Tk's callbacks (a signal handler); done at the next poll."""
        self._close_requested.set()

    def close(self) -> None:
        """Stop cleanly, then destroy the window (the window manager's close button lands here)."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        if self._after_id is not None:
            try:
                self.root.after_cancel(self._after_id)
            except tk.TclError:
                pass
            self._after_id = None
        self._photo = None
        try:
            self.root.destroy()
        except tk.TclError:
            pass

    # ----- polling (Tk thread)
    def _schedule_poll(self) -> None:
        if not self._closed:
            self._after_id = self.root.after(self.poll_ms, self._poll)

    def _poll(self) -> None:
        self._after_id = None
        if self._close_requested.is_set():
            self.close()
            return
        try:
            if self._sink is not None:
                result = self._sink.take()
                if result is not None:
                    self._show_result(result)
            if isinstance(self._thread, PipelineThread):
                self._show_source_state(self._thread.pipeline.stats.source_events)
            if self._thread is not None and not self._thread.is_alive():
                self._finish_thread()
        finally:
            self._schedule_poll()

    def _show_result(self, result: FrameResult) -> None:
        image = scale_to_fit(result.annotated, self.view_size)
        if self._photo is not None:
            self._photo.configure(data=ppm_bytes(image), format="PPM", width=0, height=0)
        self.frames_shown += 1
        self.panel.show(result.faces)
        dropped = f" | {result.frames_dropped} dropped" if result.frames_dropped else ""
        self._set_status(f"running | {result.fps:.1f} fps | latency {result.latency_ms:.0f} ms | "
                         f"{len(result.faces)} face(s){dropped} | {self._model_text()}")

    def _show_source_state(self, events: Sequence[dict]) -> None:
        """A live source that dropped (a camera gone, a window closed) says so: no frame comes to replace
        the last "running" status, which would otherwise stay over a frozen picture."""
        last = events[-1] if events else None
        if last is None or last is self._source_shown:
            return
        self._source_shown = last
        if last["state"] != "connected":
            attempt = f" (attempt {last['attempt']})" if last.get("attempt") else ""
            detail = f": {last['detail']}" if last.get("detail") else ""
            self._set_status(f"source {last['state']}{attempt}{detail} | {self._model_text()}")

    def _finish_thread(self) -> None:
        """Once the pipeline thread has ended: say how, reset the buttons."""
        thread = self._thread
        if thread is None or thread.is_alive():
            return
        self._thread = None
        if self._sink is not None:  # show the last frame, then retire the sink so the status stays
            last = self._sink.take()
            if last is not None:
                self._show_result(last)
            self._sink = None
        self.start_button.configure(state="normal")
        self.stop_button.configure(state="disabled")
        if thread.error is not None:
            self._show_error(thread.error)
        elif isinstance(thread, PictureThread) and thread.analysis is not None:
            stopped = " (stopped: of what was read)" if thread.stopped else ""
            self._set_status(f"{picture_verdict(thread.analysis)}{stopped} | {self._model_text()}")
        elif isinstance(thread, PipelineThread) and thread.summary is not None:
            s = thread.summary
            failed = s.failed_outputs_text()
            if failed is not None:  # a recording the disk had no room for
                self._show_error(failed)
                return
            how = "stopped" if s.interrupted else "finished"
            self._set_status(f"{how}: {s.frames_processed} frames in {s.duration_s:.1f} s "
                             f"({s.fps:.1f} fps), {len(s.tracks)} face track(s) | {self._model_text()}")

    # ----- helpers
    def _set_status(self, text: str) -> None:
        self.status_label.configure(text=text, foreground="black")

    def _show_error(self, message: str) -> None:
        self.last_error = message
        self.status_label.configure(text=f"error: {message}", foreground="#b71c1c")
        if self.show_dialogs and not self._closed:
            if self.error_dialog is not None:  # one error window at a time: the newest error
                self.error_dialog.close()
            self.error_dialog = ErrorDialog(self.root, message)

    def _chosen_threshold(self) -> float | str | None:
        """The "Threshold" box's choice; ``--threshold`` (None: the model's) until the model is known."""
        return self._threshold_choices.get(self.threshold_var.get(), self.config.model.threshold)

    def _threshold(self, spec: ModelSpec) -> float:
        """The threshold a Start now judges at."""
        return spec.threshold_for(self._chosen_threshold())

    def _fill_thresholds(self, spec: ModelSpec) -> None:
        """Offer the model's named thresholds, and ``--threshold`` when it is a number; select ``--threshold``."""
        given = self.config.model.threshold
        choices: dict[str, float | str | None] = {f"{p.name} {p.threshold:.3f}": p.name
                                                  for p in spec.named_thresholds()}
        if given is not None and not isinstance(given, str):
            choices[f"{given:.3f}"] = given
        self._threshold_choices = choices
        self.threshold_box.configure(values=list(choices))
        chosen = spec.named_thresholds()[0].name if given is None else given
        self.threshold_var.set(next(entry for entry, value in choices.items() if value == chosen))

    def _threshold_chosen(self) -> None:
        """A new choice shows at once while idle; a running pipeline keeps its threshold until the next Start."""
        if self.spec is None or self.running:
            return
        self.panel.threshold = self._threshold(self.spec)
        point = next((p for p in self.spec.named_thresholds() if p.name == self._chosen_threshold()), None)
        measured = f" ({point.measured()} out of fold)" if point and point.measured() else ""
        self._set_status(f"idle | {self._model_text()}{measured} | choose a source and press Start")

    def _model_text(self) -> str:
        """``model deepfake 0.7.2, threshold 0.837``: which model judges, and at what threshold."""
        if self.spec is None:
            return "model ?"
        return f"model {self.spec.name} {self.spec.version}, threshold {self.panel.threshold:.3f}"

    def _show_model(self, spec: ModelSpec) -> None:
        self.warning_label.configure(text="" if spec.trained else
                                     f"UNTRAINED model '{spec.name}': scores are meaningless")

    def _load_model_info(self) -> None:
        try:
            self.spec = load_model(self.config)
            self._fill_thresholds(self.spec)
        except StreamGuardError as e:
            self.last_error = str(e)
            self.status_label.configure(text=f"error: {e}", foreground="#b71c1c")
            return
        self._show_model(self.spec)
        self._threshold_chosen()

    def _list_sources(self) -> None:
        """Refresh the drop-down as it opens: windows come and go."""
        self.source_box.configure(values=source_choices())

    def _choose_file(self) -> None:
        path = filedialog.askopenfilename(parent=self.root, title="Open a video or image", filetypes=FILE_TYPES)
        if path:
            self.set_source(path)


def picture_verdict(analysis: FileAnalysis) -> str:
    """``picture: fake 0.912 (1 face)``: a picture's verdict as ``scan`` gives it."""
    if analysis.score is None:
        return f"picture: {no_score_text(analysis.faces_too_small, analysis.faces_cut_off)}"
    faces = sum(1 for track in analysis.tracks if track.scores)
    verdict = "fake" if analysis.score >= analysis.provenance.threshold else "real"
    return f"picture: {verdict} {analysis.score:.3f} ({faces} face{'s' if faces != 1 else ''})"


def gui_config(args: argparse.Namespace, outputs: OutputOptions = OutputOptions()) -> RunConfig:
    """The base configuration (model, detector, alert outputs); the source is set at each Start."""
    return RunConfig(source=SourceOptions(spec="demo", sound_device=getattr(args, "sound_device", None)),
                     model=ModelOptions(model_dir=args.model, provider=args.provider, threshold=args.threshold),
                     detector=detector_options(args.detector, args.detect_tiles), outputs=outputs,
                     analysis=analysis_options(min_face_px=args.min_face_px))


def open_root() -> tk.Tk:
    """A Tk root window, or :class:`OutputError` if there is no display."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        raise OutputError("no display: the desktop app needs a desktop session (DISPLAY is not set)")
    try:
        return tk.Tk(className="stream_guard")
    except tk.TclError as e:
        raise OutputError(f"no display: cannot open a window ({e})") from e


def run_gui(args: argparse.Namespace, outputs: OutputOptions = OutputOptions()) -> int:
    """``stream-guard gui [SOURCE] [--start]``: run the app until its window is closed; ``outputs``
    (alerts: webhook, speech, snapshots, clips, virtual camera) apply to every Start."""
    config = gui_config(args, outputs)
    load_model(config)  # a bad --model or --threshold is one line on the terminal, before a window opens
    root = open_root()
    app = StreamGuardApp(root, config)
    if args.source:
        app.set_source(args.source)
        if args.start:
            root.after_idle(app.start)

    def on_signal(signum: int, frame: object) -> None:  # Ctrl-C / SIGTERM: close cleanly at the next poll
        app.request_close()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        root.mainloop()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        app.close()
    return 0
