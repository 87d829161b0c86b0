"""The alert rule replayed at other thresholds from a file's recorded window scores."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stream_guard.alert_replay import THRESHOLD_GRID, AlertTrace, false_alert_thresholds, replay_alert_times
from stream_guard.config import ModelOptions, RunConfig, SourceOptions
from stream_guard.file_analysis import analyse_file
from stream_guard.model.smoothing import SmoothingOptions
from stream_guard.outputs.alerts import AlertOptions


def _steady_face(probabilities: list[float], every_s: float = 0.1) -> AlertTrace:
    """One face scored on every frame."""
    trace = AlertTrace(source="synthetic")
    trace.frames = [(i * every_s, ((1, p),)) for i, p in enumerate(probabilities)]
    return trace


def test_replay_matches_the_pipeline_at_every_threshold(two_faces_clip: Path, placeholder_model: Path) -> None:
    """Replaying one run's scores at a threshold raises exactly the alerts a run at that threshold raised."""
    base = RunConfig(source=SourceOptions("-"), model=ModelOptions(model_dir=placeholder_model))
    first = analyse_file(two_faces_clip, base, keep_trace=True)
    probabilities = sorted(p for _, faces in first.trace.frames for _, p in faces if p is not None)
    assert len(probabilities) > 20
    alerted = []
    for threshold in (probabilities[0] * 0.9, probabilities[len(probabilities) // 2],
                      min(0.999, probabilities[-1] * 1.05)):
        config = dataclasses.replace(base, model=dataclasses.replace(base.model, threshold=threshold))
        run = analyse_file(two_faces_clip, config, keep_trace=True)
        for trace in (first.trace, run.trace):
            times = replay_alert_times(trace, threshold, AlertOptions())
            assert len(times) == run.alerts
            assert (times[0] if times else None) == run.first_alert_s
        alerted.append(run.alerts)
    assert alerted[0] == 2 and alerted[-1] == 0  # every face, then none: the thresholds do matter


def test_replay_follows_the_smoothing_and_the_rule() -> None:
    trace = _steady_face([0.2] * 10 + [0.9] * 20 + [0.2] * 20 + [0.9] * 20)
    assert len(replay_alert_times(trace, 0.5, AlertOptions())) == 2  # raised, cleared, raised again
    assert replay_alert_times(trace, 0.95, AlertOptions()) == []
    slow = replay_alert_times(trace, 0.5, AlertOptions(raise_windows=25))
    assert slow == []  # no run of 25 fake windows
    # hysteresis: scores sitting in the band around the threshold never turn fake
    assert replay_alert_times(_steady_face([0.55] * 50), 0.5, AlertOptions()) == []
    assert replay_alert_times(_steady_face([0.55] * 50), 0.5, AlertOptions(),
                              SmoothingOptions(margin_logit=0.01)) != []


def test_false_alert_thresholds_pick_the_lowest_threshold_that_meets_each_rate() -> None:
    # 360 s of real video: ten 18 s clips of faces at 0.7, and a 180 s one that flickers to 0.95 three times
    steady = [(_steady_face([0.7] * 180), 18.0) for _ in range(10)]
    flicker = _steady_face(([0.1] * 500 + [0.95] * 20) * 3 + [0.1] * 240)
    fake = _steady_face([0.9] * 100)
    rows = false_alert_thresholds(steady + [(flicker, 180.0)], [fake], AlertOptions(), targets=(60, 20, 1))
    by_target = {r["target_per_hour"]: r for r in rows}
    # below ~0.61 (the 0.7 faces above the band's upper edge) the ten clips alert too: 13 in 0.1 h;
    # above it only the flickers do, 3 in 0.1 h, each for about 2 s
    sixty = by_target[60]
    assert 0.6 <= sixty["threshold"] <= 0.62 and sixty["false_alerts_per_hour"] == 30
    assert 0.01 < sixty["false_alert_share"] < 0.03
    assert sixty["fake_files_alerted"] == 1
    # 20 an hour needs the flickers gone too: above 0.95's band (threshold ~0.93)
    assert 0.92 <= by_target[20]["threshold"] <= 0.94 and by_target[20]["false_alerts_per_hour"] == 0
    assert by_target[20]["false_alert_share"] == 0 and by_target[20]["fake_files_alerted"] == 0  # 0.9 is lost
    assert by_target[1]["threshold"] == by_target[20]["threshold"]
    assert false_alert_thresholds([], [fake], AlertOptions()) == []


def test_a_face_fake_for_good_counts_its_whole_time() -> None:
    """Far below a real face's scores it raises one alert that never clears: one alert, but all the time."""
    (row,) = false_alert_thresholds([(_steady_face([0.7] * 600), 60.0)], [], AlertOptions(), targets=(100,))
    assert row["threshold"] == THRESHOLD_GRID[0] and row["false_alerts_per_hour"] == 60
    assert row["false_alert_share"] > 0.9


def test_no_threshold_is_reported_when_none_is_high_enough() -> None:
    always = _steady_face([0.9999] * 600)
    (row,) = false_alert_thresholds([(always, 60.0)], [], AlertOptions(), targets=(1,))
    assert row["threshold"] is None and row["fake_files"] == 0


@pytest.mark.parametrize("grid_value", [0.05, 0.5, 0.99, 0.999])
def test_threshold_grid_covers_the_range(grid_value: float) -> None:
    assert grid_value in THRESHOLD_GRID and list(THRESHOLD_GRID) == sorted(THRESHOLD_GRID)
