"""Measuring helpers: a timed output sink, per-thread CPU time, percentiles."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from stream_guard.outputs.base import Sink
from stream_guard.types import FrameResult, StreamInfo


def stage_stats(values: list[float], n_frames: int) -> dict:
    """``mean``/``p95`` ms over the frames where the stage ran, ``per_frame`` ms amortised
    over all ``n_frames`` processed frames, and ``runs``."""
    ran = np.asarray([v for v in values if v > 0.0], np.float64)
    if ran.size == 0:
        return {"mean": 0.0, "p95": 0.0, "per_frame": 0.0, "runs": 0}
    return {"mean": round(float(ran.mean()), 3), "p95": round(float(np.percentile(ran, 95)), 3),
            "per_frame": round(float(ran.sum()) / max(1, n_frames), 3), "runs": int(ran.size)}


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values, np.float64), q)), 2) if values else None


class TimedSink:
    """Wraps a sink and records how long each ``write`` takes (on the sink's own thread)."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.name = inner.name
        self.lossless = inner.lossless
        self.write_ms: list[float] = []

    def open(self, info: StreamInfo) -> None:
        self.inner.open(info)

    def write(self, result: FrameResult) -> None:
        t0 = time.perf_counter()
        self.inner.write(result)
        self.write_ms.append((time.perf_counter() - t0) * 1e3)

    def event(self, record: dict) -> None:
        handler = getattr(self.inner, "event", None)
        if handler is not None:
            handler(record)

    def close(self) -> None:
        self.inner.close()


class ThreadCpuSampler(threading.Thread):
    """Samples every thread's CPU time (user + system) from ``/proc/self/task`` (Linux) and
    names it after its Python thread; threads Python does not know (ONNX Runtime's pool,
    FFmpeg's decoder threads) are summed as ``native``. Elsewhere it reports nothing."""

    def __init__(self, period_s: float = 0.1) -> None:
        super().__init__(name="bench-cpu-sampler", daemon=True)
        self.period_s = period_s
        self._halt = threading.Event()
        self._ticks: dict[int, int] = {}
        self._names: dict[int, str] = {}
        self._baseline: dict[int, int] = {}
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.available = Path("/proc/self/task").is_dir()

    def _sample(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        try:
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            return
        for tid in tids:
            try:
                fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            self._ticks[tid] = int(fields[11]) + int(fields[12])  # utime + stime
            if tid in names:
                self._names[tid] = names[tid]

    def run(self) -> None:
        if not self.available:
            return
        self._sample()
        self._baseline = dict(self._ticks)
        while not self._halt.wait(self.period_s):
            self._sample()

    def finish(self) -> dict[str, float]:
        """Stop sampling; CPU seconds per thread name since the sampler started."""
        self._halt.set()
        self.join()
        if not self.available:
            return {}
        self._sample()
        out: dict[str, float] = {}
        for tid, ticks in self._ticks.items():
            name = self._names.get(tid, "native")
            if name == "bench-cpu-sampler":
                continue
            out[name] = out.get(name, 0.0) + (ticks - self._baseline.get(tid, 0)) / self._hz
        return {k: round(v, 2) for k, v in sorted(out.items()) if v > 0}
