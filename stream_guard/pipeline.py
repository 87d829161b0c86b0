"""Wiring and lifecycle: capture thread -> detection thread -> analysis (caller's thread) -> one thread per sink."""
from __future__ import annotations

import dataclasses
import logging
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from stream_guard import WINDOW_TITLE
from stream_guard.analysis import Analyzer
from stream_guard.config import RunConfig
from stream_guard.detect_ahead import AheadDone, DetectAheadThread, DetectedFrame
from stream_guard.errors import (ConfigError, ModelError, SourceError, SourceNotFoundError, StoppedBeforeStart,
                                 StreamGuardError)
from stream_guard.faces.detector import FaceDetector
from stream_guard.faces.landmarks import MODEL_FILE as FACE_MESH_MODEL
from stream_guard.faces.landmarks import FaceMesh
from stream_guard.faces.regions import FaceRegions
from stream_guard.faces.tracker import FaceTracker
from stream_guard.model.contract import ModelSpec, load_model_spec
from stream_guard.model.occlusion import OcclusionExplainer
from stream_guard.model.provenance import Provenance
from stream_guard.model.providers import resolve_providers
from stream_guard.model.scorer import FaceScorer
from stream_guard.outputs.alert_clips import CLIP_LOG
from stream_guard.outputs.base import Sink
from stream_guard.outputs.events import JsonlEventSink
from stream_guard.outputs.snapshots import ALERT_LOG
from stream_guard.outputs.video_file import VideoFileSink, is_kept_segment
from stream_guard.outputs.worker import SinkWorker
from stream_guard.paths import bundled_model, models_dir
from stream_guard.service import ServiceHeartbeat
from stream_guard.sound_bus import SoundBus
from stream_guard.sources import DropPolicy, FrameSource, SourceSpec, open_source, parse_source, with_input_options
from stream_guard.sources.capture import CaptureThread, EndOfStream, FrameQueue, SourceEvent
from stream_guard.sources.probe import check_frame_size
from stream_guard.types import FrameResult, StreamInfo
from stream_guard.writable import check_folders_spare_the_files, check_outputs_spare_the_source, is_stdout

log = logging.getLogger(__name__)

TRAINED_MODEL = "deepfake"
STOP_GRACE_S = 1.0  # after a stop, how long the detection thread waits for the capture thread's last items
PLACEHOLDER_MODEL = "untrained-placeholder"


def default_model_dir() -> Path:
    """The shipped trained model if there is one, else the untrained placeholder."""
    for name in (TRAINED_MODEL, PLACEHOLDER_MODEL):
        try:
            folder = bundled_model(name)
        except FileNotFoundError as e:
            raise ModelError("the shipped models folder is missing from this installation") from e
        if (folder / "model.json").is_file():
            return folder
    raise ModelError("no shipped model found: pass --model DIR")


def shipped_model_names() -> list[str]:
    """Names of the model folders shipped in ``models/`` (usable as ``--model NAME``)."""
    return sorted(p.parent.name for p in models_dir().glob("*/model.json"))


def model_folder(choice: Path | None) -> Path:
    """The folder ``--model`` means: None = the shipped default; an existing path; else the name of
    a shipped model, so ``--model deepfake-ensemble`` works from any directory and from a wheel."""
    if choice is None:
        return default_model_dir()
    if choice.exists():
        return choice
    if len(choice.parts) == 1 and (bundled_model(choice.name) / "model.json").is_file():
        return bundled_model(choice.name)
    raise ModelError(f"model folder {choice} not found (shipped models: {', '.join(shipped_model_names())})")


def load_model(config: RunConfig) -> ModelSpec:
    """The run's model; a bad ``--model``, or a ``--threshold`` name it does not define, is an error here."""
    spec = load_model_spec(model_folder(config.model.model_dir))
    spec.threshold_for(config.model.threshold)
    return spec


def face_regions(spec: ModelSpec, providers: Sequence[str], threads: int) -> FaceRegions:
    """The face mesh and the region masks ``spec`` takes (none for a model without regions)."""
    mesh = FaceMesh(bundled_model(FACE_MESH_MODEL), providers, threads)
    return FaceRegions(mesh, spec.regions, spec.region_sizes, spec.input_size, spec.crop_margin)


def build_explainer(config: RunConfig, spec: ModelSpec, threads: int = 2) -> OcclusionExplainer:
    """An occlusion explainer for ``spec`` on the run's providers (see :mod:`stream_guard.model.occlusion`)."""
    providers = resolve_providers(config.model.provider)
    scorer = FaceScorer(spec, providers, threads, config.model.threshold)
    return OcclusionExplainer(scorer, face_regions(spec, providers, threads))


@dataclass(slots=True)
class RunStats:
    """Counters and a bounded window of latencies, filled by the analysis thread."""

    frames_processed: int = 0
    faces_seen: int = 0
    started: float = field(default_factory=time.monotonic)
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=100_000))
    source_events: deque = field(default_factory=lambda: deque(maxlen=1000))  # bounded: a flapping source

    def add(self, result: FrameResult) -> None:
        self.frames_processed += 1
        self.faces_seen += len(result.faces)
        self.latencies_ms.append(result.latency_ms)

    def latency(self, q: float) -> float | None:
        return float(np.percentile(np.fromiter(self.latencies_ms, float), q)) if self.latencies_ms else None


@dataclass(frozen=True, slots=True)
class RunSummary:
    source: str
    frames_read: int
    frames_processed: int
    frames_dropped: int
    duration_s: float
    fps: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    provenance: Provenance  # the software, model and threshold behind the verdicts
    provider: str
    tracks: tuple[dict, ...]
    interrupted: bool
    error: str | None
    failed_outputs: tuple[str, ...]

    def failed_outputs_text(self) -> str | None:
        """One line naming the outputs that failed during the run (each error was logged as it came), or None."""
        if not self.failed_outputs:
            return None
        names = ", ".join(f"'{name}'" for name in self.failed_outputs)
        return f"output {names} failed during the run: what it wrote is incomplete"

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in self.__slots__ if k != "provenance"}
        d.update(self.provenance.to_json())
        d["tracks"] = list(self.tracks)
        d["failed_outputs"] = list(self.failed_outputs)
        return {"type": "summary", "wall_time": time.time(), **d}


def sound_wanted(config: RunConfig, spec: SourceSpec) -> bool:
    """Whether an output carries the source's sound as it comes: ``--clips``, ``--stream-to`` and
    ``--serve`` from a live or paced source, and ``--out`` from a live one or standard input (a file's
    recording reads the file's sound itself)."""
    out = config.outputs
    paced = spec.is_live or config.source.realtime
    return (out.clips is not None or ((out.stream_to is not None or out.serve is not None) and paced)
            or (out.out_path is not None and _sound_comes_once(spec)))


def _sound_comes_once(spec: SourceSpec) -> bool:
    """Whether the source's sound can only be taken as it is decoded (not read again by the recording)."""
    return spec.is_live or spec.kind == "pipe"


def _check_sound_device(choice: str | None, spec: SourceSpec, carried: bool) -> None:
    """``--sound`` is for live sources, where the sound can go somewhere and be recorded."""
    if not choice:
        return
    if not spec.is_live:
        raise ConfigError(f"--sound {choice}: {spec.display_name} is not a live source (a file brings its own "
                          "sound); --sound is for a screen, a window, a webcam or a stream")
    from stream_guard.sources.sound_device import check_sound_device_support

    check_sound_device_support()
    if not carried:
        log.warning("--sound %s: no output carries sound (--out, --clips, --stream-to, --serve): not recording it",
                    choice)


def build_sinks(config: RunConfig, info: StreamInfo, provenance: Provenance,
                on_close: Callable[[], None], sound: SoundBus | None = None) -> list[Sink]:
    """The outputs named in ``config``; ``provenance`` names the model and threshold in effect, for the
    outputs that record verdicts. ``sound``: the bus the source publishes its sound on, if it does
    (``info.has_sound``)."""
    sinks: list[Sink] = []
    out = config.outputs
    sound = sound if info.has_sound else None
    if out.out_path is not None:
        source = with_input_options(parse_source(config.source.spec), config.source.input_options)
        sinks.append(VideoFileSink(out.out_path, fps=info.fps, segment_s=out.out_segment_s, keep=out.out_keep,
                                   audio_from=source if source.kind in ("file", "network") and not info.is_live
                                   else None,  # a file, or a recording served over HTTP
                                   sound=sound.subscribe("--out") if sound is not None and (
                                       info.is_live or source.kind == "pipe") else None))
    events: JsonlEventSink | None = None
    if out.events_path is not None:
        target = sys.stdout if is_stdout(out.events_path) else out.events_path
        events = JsonlEventSink(target, out.alerts, provenance)
        sinks.append(events)
    if out.show:
        from stream_guard.outputs.window import TkWindowSink

        sinks.append(TkWindowSink(title=f"{WINDOW_TITLE} - {info.source_id}", on_close=on_close))
    if out.webhooks:
        from stream_guard.outputs.webhook import WebhookSink

        sinks.append(WebhookSink(out.webhooks, out.alerts, provenance=provenance))
    if out.speak:
        from stream_guard.outputs.speech import SpeechSink

        sinks.append(SpeechSink(out.alerts))
    if out.snapshots is not None:
        from stream_guard.outputs.snapshots import SnapshotSink

        sinks.append(SnapshotSink(out.snapshots, out.alerts, keep=out.snapshot_keep, provenance=provenance))
    if out.clips is not None:
        from stream_guard.outputs.alert_clips import ClipSink

        sinks.append(ClipSink(out.clips, out.alerts, pad_s=out.clip_pad_s, keep=out.clip_keep,
                              sound=None if sound is None else sound.subscribe("--clips"), provenance=provenance))
    if out.mqtt is not None:
        from stream_guard.outputs.mqtt import MqttSink

        sinks.append(MqttSink(out.mqtt, out.alerts, discovery=out.mqtt_discovery, provenance=provenance))
    if out.virtual_cam:
        from stream_guard.outputs.virtual_camera import VirtualCameraSink

        sinks.append(VirtualCameraSink())
    if out.stream_to is not None:
        from stream_guard.outputs.live_stream import LiveStreamSink

        sinks.append(LiveStreamSink(out.stream_to, sound=None if sound is None else sound.subscribe("--stream-to")))
    if out.serve is not None:
        from stream_guard.outputs.http.sink import LiveAlertFeed, LiveViewSink

        paced = info.is_live or config.source.realtime
        live = LiveViewSink(out.serve, provenance,
                            sound=sound.subscribe("--serve") if sound is not None and paced else None)
        sinks += [live, LiveAlertFeed(live, out.alerts)]
    if events is not None and sinks == [events] and is_stdout(out.events_path):
        events.on_reader_gone = on_close  # the events are all the run gives: `| head` ends it
    return sinks


def _smaller_screen_hint(spec: SourceSpec, info: StreamInfo, max_megapixels: float) -> str:
    """For a whole X11 screen over the size limit: which monitors could be captured one at a time."""
    if spec.format != "x11grab" or info.width * info.height / 1e6 <= max_megapixels:
        return ""
    from stream_guard.sources.x11_targets import one_monitor_hint

    return one_monitor_hint(spec)


def _open_with_hint(source: FrameSource, input_options: Sequence[tuple[str, str]]) -> StreamInfo:
    """``source.open()``; a failure names the user's ``--input-option`` keys, a likely cause (not
    their values, which may hold credentials)."""
    try:
        return source.open()
    except SourceError as e:
        if not input_options or isinstance(e, SourceNotFoundError):  # no such file or window: not the options
            raise
        keys = ", ".join(dict.fromkeys(key for key, _ in input_options))
        raise type(e)(f"{e}; check --input-option {keys}") from e


class Pipeline:
    """One stream, end to end. ``run()`` blocks until the stream ends or ``stop()``.

    ``service``: tell a service manager (systemd) when the run is ready, how it is doing, and that it
    is still making progress (its watchdog).
    """

    def __init__(self, config: RunConfig, extra_sinks: Sequence[Sink] = (),
                 on_result: Callable[[FrameResult], None] | None = None,
                 service: ServiceHeartbeat | None = None) -> None:
        self.config = config
        self.extra_sinks = list(extra_sinks)
        self.on_result = on_result
        self.service = service
        self.stop_event = threading.Event()
        self.stats = RunStats()
        self._ended = False
        self._stop_requested = False
        self.provenance: Provenance | None = None  # the model and threshold in effect, known once run() loaded them
        # The current run's queues and sink workers, for monitoring (queue depths); set by run().
        self.frames: FrameQueue | None = None  # capture -> detection thread
        self.detected: FrameQueue | None = None  # detection thread -> analysis
        self.workers: list[SinkWorker] = []

    def stop(self) -> None:
        """Ask the run to end (signal handler, window closed): the summary says ``interrupted``."""
        self._stop_requested = True
        self.stop_event.set()

    def _open_source(self, source: FrameSource, name: str) -> StreamInfo:
        """``source.open()``, on a thread of its own so that a stop asked for meanwhile ends the run at once:
        standard input that has sent nothing yet, a camera slow to answer. FFmpeg's wait in a read cannot be
        broken off, so that thread is left to finish (and close what it opened) on its own."""
        opened: queue.Queue[StreamInfo | BaseException] = queue.Queue(maxsize=1)
        lock = threading.Lock()
        abandoned = False

        def opening() -> None:
            try:
                outcome: StreamInfo | BaseException = _open_with_hint(source, self.config.source.input_options)
            except BaseException as e:  # handed to run(), which raises it
                outcome = e
            with lock:
                if abandoned and not isinstance(outcome, BaseException):
                    source.close()
                else:
                    opened.put(outcome)

        threading.Thread(target=opening, name="source-open", daemon=True).start()
        while True:
            try:
                outcome = opened.get(timeout=0.1)
            except queue.Empty:
                if not self.stop_event.is_set():
                    continue
                with lock:
                    abandoned = True
                    outcome = None if opened.empty() else opened.get()
                if isinstance(outcome, StreamInfo):
                    source.close()
                raise StoppedBeforeStart(f"{name} had not opened yet") from None
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome

    def _build_analyzer(self, spec: ModelSpec) -> Analyzer:
        providers = resolve_providers(self.config.model.provider)
        scorer = FaceScorer(spec, providers, self.config.model.intra_op_threads,
                            self.config.model.threshold, self.config.model.smoothing)
        detector = FaceDetector(self.config.detector, providers=providers)
        tracker = FaceTracker(self.config.tracker, scorer.new_memory)
        self.provenance = Provenance.of(spec, scorer.threshold)
        regions = face_regions(spec, providers, self.config.model.intra_op_threads) if spec.regions else None
        return Analyzer(detector, tracker, scorer, self.config.analysis.detect_every, regions=regions,
                        min_face_px=self.config.analysis.min_face_px)

    def _start_workers(self, sinks: list[Sink], info: StreamInfo, analyzer: Analyzer,
                       source_name: str) -> list[SinkWorker]:
        workers = [SinkWorker(s, info) for s in sinks]
        for w in workers:
            w.start()
        for w in workers:
            w.opened.wait()
        failed = [w for w in workers if w.failed and isinstance(w.error, StreamGuardError)]
        if failed:
            error = failed[0].error
            assert isinstance(error, StreamGuardError) and self.provenance is not None
            # an events log that has its start record gets the summary that ends it
            _close_workers([w for w in workers if not w.failed], RunSummary(
                source=source_name, frames_read=0, frames_processed=0, frames_dropped=0, duration_s=0.0, fps=0.0,
                latency_p50_ms=None, latency_p95_ms=None, provenance=self.provenance,
                provider=analyzer.scorer.provider, tracks=(), interrupted=False, error=str(error),
                failed_outputs=tuple(w.sink.name for w in failed)))
            for w in workers:
                if w.failed:
                    w.close()
            raise error  # a requested output that cannot even open is a user error
        return workers

    def run(self) -> RunSummary:
        spec_text = self.config.source.spec
        source_spec = with_input_options(parse_source(spec_text), self.config.source.input_options)
        outputs = self.config.outputs
        check_outputs_spare_the_source(Path(source_spec.url) if source_spec.kind == "file" else None,
                                       [(outputs.out_path if outputs.out_segment_s is None else None, "--out"),
                                        (outputs.events_path, "--events")])
        check_folders_spare_the_files([(outputs.snapshots, "--snapshots"), (outputs.clips, "--clips")],
                                      [(outputs.out_path, "--out"), (outputs.events_path, "--events")],
                                      reserved=(ALERT_LOG, CLIP_LOG))
        if (source_spec.kind == "file" and outputs.out_path is not None and outputs.out_keep is not None
                and is_kept_segment(Path(source_spec.url), outputs.out_path)):
            raise ConfigError(f"--out-keep {outputs.out_keep}: {source_spec.display_name} is one of the segments "
                              f"--out {outputs.out_path} keeps the newest {outputs.out_keep} of, and could be deleted: "
                              "give --out another name or folder")
        model = load_model(self.config)
        sound = SoundBus() if sound_wanted(self.config, source_spec) else None
        _check_sound_device(self.config.source.sound_device, source_spec, sound is not None)
        source = open_source(source_spec, realtime=self.config.source.realtime,
                             demo_seconds=self.config.source.demo_seconds, deinterlace=self.config.source.deinterlace,
                             max_megapixels=self.config.source.max_megapixels,
                             sound=None if sound is None else sound.publish, tone_map=self.config.source.tone_map,
                             video_stream=self.config.source.video_stream,
                             sound_device=self.config.source.sound_device)
        info = self._open_source(source, source_spec.display_name)
        try:
            if info.is_live and self.config.source.recordings_only:
                raise SourceError(f"{source_spec.display_name}: is a live stream, not a recording: watch it with "
                                  "stream-guard watch")
            check_frame_size(info.source_id, info.width, info.height, self.config.source.max_megapixels,
                             _smaller_screen_hint(source_spec, info, self.config.source.max_megapixels))
            analyzer = self._build_analyzer(model)
            analyzer.warm_up(info.width, info.height)
        except BaseException:
            source.close()
            raise
        live_queue = info.is_live or self.config.source.drop_oldest
        policy = DropPolicy.DROP_OLDEST if live_queue else DropPolicy.BLOCK
        frames = self.frames = FrameQueue(2 if live_queue else 8, policy, self.stop_event)
        assert self.provenance is not None
        sinks = build_sinks(self.config, info, self.provenance, self.stop, sound) + self.extra_sinks
        try:
            workers = self.workers = self._start_workers(sinks, info, analyzer, source_spec.display_name)
        except BaseException:
            source.close()
            raise
        if not model.trained:
            log.warning("model '%s' is UNTRAINED (random weights): its scores are meaningless", model.name)
        capture = CaptureThread(source, frames, self.stop_event, live=info.is_live,
                                reconnect=self.config.source.reconnect, max_frames=self.config.source.max_frames)
        ahead = DetectAheadThread(analyzer.detector, analyzer, frames, capture, self.stop_event,
                                  out_size=1 if live_queue else 4, grace_s=STOP_GRACE_S, schedule_only=not live_queue)
        self.detected = ahead.out
        error: StreamGuardError | None = None
        interrupted = False
        capture.start()
        ahead.start()
        if self.service is not None:
            self.service.ready(source_spec.display_name)
        try:
            error = self._analyse(ahead, analyzer, workers)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if self.service is not None:
                self.service.stopping()
            # a requested stop is an interruption even if the capture thread's end-of-stream won the race
            interrupted = interrupted or (error is None and (self._stop_requested or (
                self.stop_event.is_set() and not self._ended)))
            self.stop_event.set()
            ahead.closed.set()
            # stopped, the capture thread may be waiting in a read that cannot be broken off (standard input
            # or a stream that stalled): it is not waited for past a grace, and ends with the process
            capture.join(timeout=0.5 if interrupted else 5)  # (the detection thread gave it STOP_GRACE_S)
            ahead.join(timeout=5)
            summary = self._summary(source_spec.display_name, capture, frames, analyzer, interrupted,
                                    error, workers)
            summary = _close_workers(workers, summary)
        if error is not None:
            raise error
        return summary

    def _analyse(self, ahead: DetectAheadThread, analyzer: Analyzer,
                 workers: list[SinkWorker]) -> StreamGuardError | None:
        """Process the detection thread's items until end of stream, or until it is done after
        a stop (it still hands over the frames the capture thread had queued)."""
        while True:
            item = ahead.out.get(timeout=0.1)
            if item is None:
                if not ahead.is_alive() and ahead.out.qsize() == 0:
                    return None
                continue
            if isinstance(item, AheadDone):
                if item.error is not None:
                    raise item.error
                return None
            if isinstance(item, EndOfStream):
                self._ended = True
                return item.error
            if isinstance(item, SourceEvent):
                self._on_source_event(item, analyzer, workers)
                continue
            assert isinstance(item, DetectedFrame)
            result = analyzer.process(item.frame, ahead.inbox.dropped, item.detections, item.detect_ms)
            self.stats.add(result)
            if self.on_result is not None:
                self.on_result(result)
            for w in workers:
                w.submit(result)
            if self.service is not None:
                self.service.frame(result)

    def _on_source_event(self, event: SourceEvent, analyzer: Analyzer, workers: list[SinkWorker]) -> None:
        record = {"type": "source", "source": event.source, "state": event.state, "wall_time": event.wall_time,
                  "attempt": event.attempt, "detail": event.detail, "downtime_s": event.downtime_s}
        self.stats.source_events.append(record)
        if event.state == "reconnecting":
            analyzer.reset(status=f"reconnecting (attempt {event.attempt})...")
        elif event.state == "connected":
            analyzer.reset(status="")
        elif event.state == "failed":
            analyzer.reset(status="source failed")
        elif event.state == "blank":
            analyzer.reset(status="blank picture")
        for w in workers:
            w.submit(record)
        if self.service is not None:
            self.service.source_event(record)

    def _summary(self, source: str, capture: CaptureThread, frames: FrameQueue, analyzer: Analyzer,
                 interrupted: bool, error: StreamGuardError | None, workers: list[SinkWorker]) -> RunSummary:
        assert self.provenance is not None
        elapsed = max(1e-9, time.monotonic() - self.stats.started)
        return RunSummary(
            source=source, frames_read=capture.frames_read, frames_processed=self.stats.frames_processed,
            frames_dropped=frames.dropped, duration_s=round(elapsed, 3),
            fps=round(self.stats.frames_processed / elapsed, 2),
            latency_p50_ms=self.stats.latency(50), latency_p95_ms=self.stats.latency(95),
            provenance=self.provenance, provider=analyzer.scorer.provider,
            tracks=tuple(s.to_json() for s in analyzer.summaries.values()),
            interrupted=interrupted, error=None if error is None else str(error),
            failed_outputs=tuple(w.sink.name for w in workers if w.failed),
        )


def _close_workers(workers: list[SinkWorker], summary: RunSummary) -> RunSummary:
    """Hand every output the run's summary and close it; the outputs that keep the summary for people
    to read (an events log, the live view) go last, so theirs also names the outputs that failed as
    they closed (a clip that could not be finished). Returns the summary with every failed output."""
    def failed(s: RunSummary) -> RunSummary:
        return dataclasses.replace(s, failed_outputs=tuple(dict.fromkeys(
            (*s.failed_outputs, *(w.sink.name for w in workers if w.failed)))))

    recorders = [w for w in workers if getattr(w.sink, "records_summary", False)]
    wall_time = time.time()  # one time for the run's end (and the alerts it closes) in every output
    for group in ([w for w in workers if w not in recorders], recorders):
        summary = failed(summary)
        record = {**summary.to_json(), "wall_time": wall_time}
        for w in group:
            w.submit(record)
        for w in group:
            w.close(timeout=30)
    return failed(summary)


def run(config: RunConfig, extra_sinks: Sequence[Sink] = ()) -> RunSummary:
    """Run one stream to its end with the outputs named in ``config``."""
    return Pipeline(config, extra_sinks).run()
