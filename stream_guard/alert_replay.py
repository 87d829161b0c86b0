"""The live alert rule replayed at other thresholds, from a file's recorded window scores.

A face's verdict comes from its smoothed window probabilities and the threshold
(:class:`~stream_guard.model.smoothing.VerdictSmoother`); alerts come from the verdicts
(:class:`~stream_guard.outputs.alerts.AlertStateMachine`). Neither depends on the pixels once
the model has scored each window, so an :class:`AlertTrace` (per frame: its time and, per face,
the window probability when one was scored) is enough to know which alerts any threshold would
have raised, without running the model again. ``evaluate`` uses it to say which
``--threshold`` keeps false alerts on a site's own real footage under a given rate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stream_guard.model.smoothing import SmoothingOptions, VerdictSmoother
from stream_guard.outputs.alerts import RAISED, Alert, AlertOptions, AlertStateMachine
from stream_guard.types import FaceResult, Frame, FrameResult, TrackState

# false alerts per hour of real video a user may accept: one a minute, ten an hour, one an hour
FALSE_ALERT_TARGETS_PER_HOUR = (60.0, 10.0, 1.0)
# the thresholds tried: every hundredth from 0.05 to 0.99, and two above
THRESHOLD_GRID = tuple(round(float(t), 3) for t in np.r_[np.arange(5, 100) / 100.0, 0.995, 0.999])

_NO_PIXELS = np.zeros((1, 1, 3), np.uint8)
_NO_BOX = np.zeros(4, np.float32)
_NO_POINTS = np.zeros((0, 2), np.float32)


@dataclass
class AlertTrace:
    """One file's frames as the alert rule sees them: ``(pts_s, ((track_id, probability or
    None), ...))``, the probability set on the frames where that face's window was scored."""

    source: str = ""
    frames: list[tuple[float, tuple[tuple[int, float | None], ...]]] = field(default_factory=list)

    def add(self, result: FrameResult) -> None:
        self.source = result.frame.source_id
        self.frames.append((result.frame.pts_s, tuple(
            (face.track_id, face.raw_score if face.scored else None) for face in result.faces)))


def replay_alerts(trace: AlertTrace, threshold: float, alerts: AlertOptions,
                  smoothing: SmoothingOptions = SmoothingOptions()) -> list[Alert]:
    """The alerts (raised and cleared) the rule would have fired at ``threshold``."""
    machine = AlertStateMachine(alerts)
    smoothers: dict[int, VerdictSmoother] = {}
    fired: list[Alert] = []
    for index, (pts_s, faces) in enumerate(trace.frames):
        results = []
        for track_id, probability in faces:
            smoother = smoothers.setdefault(track_id, VerdictSmoother(threshold, smoothing))
            changed = probability is not None and smoother.update(probability)
            results.append(FaceResult(track_id, TrackState.CONFIRMED, _NO_BOX, 1.0, _NO_POINTS, probability,
                                      smoother.score, smoother.verdict, probability is not None, changed,
                                      smoother.samples))
        frame = Frame(_NO_PIXELS, index, pts_s, 0.0, trace.source)
        result = FrameResult(frame, _NO_PIXELS, tuple(results), bool(results), 0.0, 0.0)
        fired += machine.update(result)
    return fired


def replay_alert_times(trace: AlertTrace, threshold: float, alerts: AlertOptions,
                       smoothing: SmoothingOptions = SmoothingOptions()) -> list[float]:
    """Stream times of the fake alerts the rule would have raised at ``threshold``."""
    return [a.stream_time_s for a in replay_alerts(trace, threshold, alerts, smoothing) if a.kind == RAISED]


def _false_alerts(trace: AlertTrace, threshold: float, alerts: AlertOptions,
                  smoothing: SmoothingOptions) -> tuple[int, float]:
    """How many alerts a real file raises at ``threshold``, and the seconds they stay open (an
    alert still open at the end counts to the file's last frame)."""
    opened: dict[int, float] = {}
    raised, seconds = 0, 0.0
    for alert in replay_alerts(trace, threshold, alerts, smoothing):
        if alert.kind == RAISED:
            raised += 1
            opened[alert.track_id] = alert.stream_time_s
        elif alert.track_id in opened:
            seconds += alert.stream_time_s - opened.pop(alert.track_id)
    end = trace.frames[-1][0] if trace.frames else 0.0
    return raised, seconds + sum(end - t for t in opened.values())


def false_alert_thresholds(reals: list[tuple[AlertTrace, float]], fakes: list[AlertTrace], alerts: AlertOptions,
                           smoothing: SmoothingOptions = SmoothingOptions(),
                           targets: tuple[float, ...] = FALSE_ALERT_TARGETS_PER_HOUR) -> list[dict]:
    """For each target rate, the lowest threshold of :data:`THRESHOLD_GRID` at and above which
    the real files (traces with their seconds of video) raise at most that many false alerts per
    hour, with ``false_alert_share``, the share of the real video's time under an open false
    alert there, and how many ``fakes`` still raise an alert there. The thresholds are tried from
    the top down and the search stops at the first that raises too many: far below the real
    faces' scores every face turns fake for good and raises one long alert, few alerts but wrong
    all the time. ``threshold`` is None where even the highest raises too many."""
    hours = sum(seconds for _, seconds in reals) / 3600.0
    if not reals or hours <= 0:
        return []
    per_threshold = []
    for t in reversed(THRESHOLD_GRID):
        counts = [_false_alerts(trace, t, alerts, smoothing) for trace, _ in reals]
        rate = sum(n for n, _ in counts) / hours
        per_threshold.append((t, rate, sum(s for _, s in counts) / (hours * 3600.0)))
        if rate > max(targets):
            break
    out = []
    for target in targets:
        lowest = None  # the lowest threshold from which every higher one also meets the target
        for t, rate, share in per_threshold:
            if rate > target:
                break
            lowest = (t, rate, share)
        row: dict = {"target_per_hour": target, "threshold": None, "false_alerts_per_hour": None,
                     "false_alert_share": None, "fake_files": len(fakes), "fake_files_alerted": None}
        if lowest is not None:
            row.update(threshold=lowest[0], false_alerts_per_hour=round(lowest[1], 1),
                       false_alert_share=round(lowest[2], 4),
                       fake_files_alerted=sum(1 for f in fakes if replay_alert_times(f, lowest[0], alerts, smoothing)))
        out.append(row)
    return out
