"""Face tracker on synthetic detection sequences (no video needed)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from stream_guard.errors import ConfigError
from stream_guard.faces.tracker import FaceTracker, Track, TrackerOptions, iou_matrix
from stream_guard.types import FaceDetections, TrackState

FPS = 30.0
# Keypoints as fractions of the box: eyes, nose, mouth, ears.
_KP_FRACTIONS = np.array(
    [[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.5, 0.75], [0.05, 0.45], [0.95, 0.45]],
    dtype=np.float32,
)


@dataclass
class Memory:
    """Stand-in for the scorer's per-face state."""

    values: list[int] = field(default_factory=list)


def box(cx: float, cy: float, w: float, h: float | None = None) -> list[float]:
    h = w if h is None else h
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def dets(*boxes: list[float]) -> FaceDetections:
    """Detections with keypoints placed inside each box."""
    if not boxes:
        return FaceDetections.empty()
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    size = b[:, None, 2:] - b[:, None, :2]
    kps = b[:, None, :2] + _KP_FRACTIONS[None] * size
    return FaceDetections(b, np.full(len(b), 0.9, np.float32), kps.astype(np.float32))


def centre(track: Track) -> np.ndarray:
    return 0.5 * (track.box[:2] + track.box[2:])


def make_tracker(**kw: object) -> FaceTracker[Memory]:
    return FaceTracker(TrackerOptions(**kw), Memory)


# -- one face -----------------------------------------------------------------


def test_single_jittery_face_keeps_one_id_for_300_frames() -> None:
    rng = np.random.default_rng(0)
    tracker = make_tracker()
    missed = {40, 41, 90, 150, 151, 152, 230}
    raw_err, smooth_err = [], []
    pts = 0.0
    for k in range(300):
        pts += (1.0 / FPS) * rng.uniform(0.7, 1.3)  # irregular frame times
        truth = np.array(box(200 + 150 * np.sin(k / 40), 240 + 1.5 * k, 120))
        if k in missed:
            tracks = tracker.update(dets(), pts)
            assert all(not t.matched_now for t in tracks)
            continue
        noisy = truth + rng.normal(0.0, 3.0, 4)
        tracks = tracker.update(dets(noisy.tolist()), pts)
        assert [t.id for t in tracks] == [1], f"frame {k}: {tracks}"
        assert tracks[0].matched_now
        if k > 20:
            raw_err.append(np.abs(noisy - truth).mean())
            smooth_err.append(np.abs(tracks[0].box - truth).mean())
    assert [t.id for t in tracker.tracks] == [1]
    assert tracker.tracks[0].state is TrackState.CONFIRMED
    assert tracker.tracks[0].hits == 300 - len(missed)
    # Smoothing removes jitter without trailing behind the moving face.
    assert np.mean(smooth_err) < 0.85 * np.mean(raw_err)


def test_lifecycle_tentative_confirmed_coasting_lost_removed() -> None:
    tracker = make_tracker(confirm_hits=3, max_misses=5, coast_misses=2, max_lost_s=0.0)
    d = dets(box(100, 100, 80))
    states = [tracker.update(d, i / FPS)[0].state for i in range(3)]
    assert states == [TrackState.TENTATIVE, TrackState.TENTATIVE, TrackState.CONFIRMED]
    visible = [len(tracker.update(dets(), (3 + i) / FPS)) for i in range(5)]
    assert visible == [1, 1, 0, 0, 0]  # coasts for 2 misses, then LOST and hidden
    assert tracker.tracks[0].state is TrackState.LOST
    assert tracker.tracks[0].misses == 5
    tracker.update(dets(), 8 / FPS)  # miss number 6 > max_misses
    assert tracker.tracks == ()
    assert [t.id for t in tracker.removed] == [1]


def test_tentative_track_that_misses_is_removed_immediately() -> None:
    tracker = make_tracker(confirm_hits=2)
    assert [t.state for t in tracker.update(dets(box(50, 50, 40)), 0.0)] == [TrackState.TENTATIVE]
    assert tracker.update(dets(), 1 / FPS) == []
    assert tracker.tracks == ()
    assert [t.id for t in tracker.removed] == [1]


def test_lost_track_is_recovered_with_its_id() -> None:
    tracker = make_tracker(max_misses=15, coast_misses=2)
    for i in range(10):
        tracker.update(dets(box(300, 200, 100)), i / FPS)
    for i in range(10, 20):
        tracker.update(dets(), i / FPS)
    assert tracker.tracks[0].state is TrackState.LOST
    tracks = tracker.update(dets(box(302, 201, 100)), 20 / FPS)
    assert [(t.id, t.state, t.matched_now) for t in tracks] == [(1, TrackState.CONFIRMED, True)]


@pytest.mark.parametrize("fps, gap_s, same_id", [(30, 1.0, True), (30, 1.9, True), (30, 2.2, False),
                                                   (60, 1.5, True), (2, 6.0, True), (2, 8.5, False)])
def test_a_face_hidden_for_a_moment_keeps_its_id(fps: int, gap_s: float, same_id: bool) -> None:
    """A hand over the face or a head turned away: the face keeps its id for max_lost_s (2 s) whatever the
    frame rate; at a slow rate the 15 missed updates last longer (2 fps: 7.5 s) and keep it longer."""
    tracker = make_tracker()  # the defaults the pipeline uses
    pts = 0.0
    for _ in range(2 * fps):
        pts += 1 / fps
        tracker.update(dets(box(320, 240, 100)), pts)
    for _ in range(round(gap_s * fps) - 1):
        pts += 1 / fps
        tracker.update(dets(), pts)
    pts += 1 / fps
    ids = [t.id for t in tracker.update(dets(box(321, 240, 100)), pts)]
    assert ids == ([1] if same_id else [2])


def test_a_clock_that_jumps_back_does_not_keep_lost_faces_forever() -> None:
    """Timestamps that restart (a stream's clock reset or wrapped): lost faces still go after max_misses."""
    tracker = make_tracker()
    for i in range(30):
        tracker.update(dets(box(320, 240, 100)), 1000.0 + i / FPS)
    for i in range(17):  # the clock jumped back to 0 and the face is gone
        tracker.update(dets(), i / FPS)
    assert tracker.tracks == ()


@pytest.mark.parametrize("gap", [15, 16, 25])
def test_face_gone_longer_than_max_misses_gets_new_id(gap: int) -> None:
    tracker = make_tracker(max_misses=15, max_lost_s=0.0)
    pts = 0.0
    for _ in range(30):
        pts += 1 / FPS
        tracker.update(dets(box(320, 240, 100)), pts)
    removed_at = None
    for k in range(gap):
        pts += 1 / FPS
        tracker.update(dets(), pts)
        if tracker.removed:
            removed_at = k + 1
            assert [t.id for t in tracker.removed] == [1]
    pts += 1 / FPS
    ids = [t.id for t in tracker.update(dets(box(320, 240, 100)), pts)]
    if gap <= 15:
        assert removed_at is None and ids == [1]
    else:
        assert removed_at == 16
        assert ids == [2]
        assert [t.id for t in tracker.tracks] == [2]


# -- two faces crossing ---------------------------------------------------------


def _crossing_run(
    sizes: tuple[float, float], drop: dict[int, set[int]], dy: float, seed: int,
) -> tuple[FaceTracker[Memory], dict[int, int], int]:
    """Face 0 starts left moving right, face 1 starts right moving left.

    ``drop`` maps frame index -> faces whose detection is missed. Returns the
    tracker, the truth face -> track id map from the first frames, and the
    number of frames in which the boxes overlapped.
    """
    rng = np.random.default_rng(seed)
    tracker = make_tracker()
    start = {0: 100.0, 1: 540.0}
    speed = {0: 4.0, 1: -4.0}  # px per frame: 8 px/frame closing speed
    id_of: dict[int, int] = {}
    overlap_frames = 0
    for k in range(110):
        truth = {
            f: np.array(box(start[f] + speed[f] * k, 240 + (dy if f else 0), sizes[f]))
            for f in (0, 1)
        }
        if iou_matrix(truth[0][None], truth[1][None])[0, 0] > 0:
            overlap_frames += 1
        present = [f for f in (0, 1) if f not in drop.get(k, set())]
        rng.shuffle(present)  # detection order must not matter
        noisy = [truth[f] + rng.normal(0.0, 1.5, 4) for f in present]
        tracks = tracker.update(dets(*[n.tolist() for n in noisy]), k / FPS)
        by_id = {t.id: t for t in tracks}
        if k == 5:
            for f in (0, 1):
                (tid,) = [t.id for t in tracks if np.abs(t.box - truth[f]).max() < 10]
                id_of[f] = tid
        if k > 5:
            for f in present:  # every detected face is on its own track's box
                t = by_id[id_of[f]]
                assert t.matched_now, f"frame {k} face {f}: {tracks}"
                assert np.abs(centre(t) - 0.5 * (truth[f][:2] + truth[f][2:])).max() < 12, (
                    f"frame {k} face {f}: {tracks}"
                )
    return tracker, id_of, overlap_frames


CROSSING_CASES = {
    "same-size": ((100.0, 100.0), {}, 0.0),
    "sizes-differ": ((110.0, 90.0), {}, 6.0),
    "one-miss-in-overlap": ((100.0, 100.0), {52: {0}}, 0.0),
    "two-misses-in-overlap": ((110.0, 90.0), {50: {1}, 56: {0}}, 4.0),
    "both-faces-miss-at-crossing": ((100.0, 92.0), {54: {0, 1}, 55: {1}}, 0.0),
    "front-face-hides-other-2-frames": ((105.0, 95.0), {54: {1}, 55: {1}}, 0.0),
}


@pytest.mark.parametrize("case", list(CROSSING_CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_faces_crossing_keep_their_ids(case: str, seed: int) -> None:
    sizes, drop, dy = CROSSING_CASES[case]
    tracker, id_of, overlap = _crossing_run(sizes, drop, dy, seed)
    assert overlap >= 20  # the faces really overlapped for many frames
    assert sorted(id_of.values()) == [1, 2]
    assert sorted(t.id for t in tracker.tracks) == [1, 2]  # no extra ids were made
    final = {t.id: centre(t)[0] for t in tracker.tracks}
    # The track that started on the left ends on the right, and vice versa.
    assert final[id_of[0]] > 500
    assert final[id_of[1]] < 140


def test_missed_neighbour_does_not_take_the_seen_face_id() -> None:
    tracker = make_tracker(confirm_hits=1)
    tracker.update(dets(box(270, 240, 100), box(330, 240, 100)), 0.0)
    # Two overlapping faces standing still; only the left one is detected, a bit to
    # the right: it keeps id 1 and the right one coasts.
    tracks = tracker.update(dets(box(285, 240, 100)), 1 / FPS)
    assert {t.id: t.matched_now for t in tracks} == {1: True, 2: False}


# -- predict, reset, ids, memory ------------------------------------------------


def test_predict_moves_boxes_along_velocity() -> None:
    tracker = make_tracker()
    vx, vy = 120.0, -60.0  # px per second
    for i in range(20):
        t = i / FPS
        tracker.update(dets(box(100 + vx * t, 300 + vy * t, 80)), t)
    (track,) = tracker.tracks
    np.testing.assert_allclose(track.velocity, [vx, vy, 0, 0], atol=3.0)
    before = centre(track).copy()
    misses, hits = track.misses, track.hits
    t_last = 19 / FPS
    for step in (1, 2, 3):
        tracks = tracker.predict(t_last + step * 0.1)
        assert [x.id for x in tracks] == [1] and not tracks[0].matched_now
    np.testing.assert_allclose(centre(track) - before, [vx * 0.3, vy * 0.3], atol=2.0)
    np.testing.assert_allclose(track.keypoints[2], centre(track) + [0, 0.05 * 80], atol=2.0)
    assert (track.misses, track.hits) == (misses, hits)
    assert track.state is TrackState.CONFIRMED
    # Detection at the true place matches the predicted box.
    t = t_last + 0.4
    tracks = tracker.update(dets(box(100 + vx * t, 300 + vy * t, 80)), t)
    assert [(x.id, x.matched_now) for x in tracks] == [(1, True)]


def test_prediction_uses_time_deltas_with_irregular_frames() -> None:
    tracker = make_tracker(min_iou=0.5)
    v = 300.0  # fast: one 0.2 s gap moves the face 60 px, most of its 80 px width
    times = [0.0, 0.033, 0.066, 0.1, 0.133, 0.166, 0.2, 0.4, 0.43, 0.65]
    for t in times:
        tracks = tracker.update(dets(box(100 + v * t, 200, 80)), t)
        assert [x.id for x in tracks] == [1], f"t={t}: {tracks}"
        assert tracks[0].matched_now


def test_reset_drops_tracks_and_never_reuses_ids() -> None:
    tracker = make_tracker()
    for i in range(3):
        tracker.update(dets(box(100, 100, 50), box(300, 100, 50)), i / FPS)
    tracker.reset()
    assert tracker.tracks == ()
    assert sorted(t.id for t in tracker.removed) == [1, 2]
    assert tracker.predict(1.0) == []
    tracks = tracker.update(dets(box(100, 100, 50)), 1.0)
    assert [t.id for t in tracks] == [3]
    assert tracks[0].state is TrackState.TENTATIVE and tracks[0].hits == 1


def test_ids_belong_to_the_tracker_instance() -> None:
    a, b = make_tracker(), make_tracker()
    assert [t.id for t in a.update(dets(box(10, 10, 20), box(100, 10, 20)), 0.0)] == [1, 2]
    assert [t.id for t in b.update(dets(box(50, 50, 20)), 0.0)] == [1]
    assert [t.id for t in a.update(dets(box(300, 300, 20)), 0.0)] == [3]


def test_memory_is_per_track_and_kept_across_frames() -> None:
    made: list[Memory] = []

    def factory() -> Memory:
        made.append(Memory())
        return made[-1]

    tracker: FaceTracker[Memory] = FaceTracker(TrackerOptions(), factory)
    for i in range(10):
        for t in tracker.update(dets(box(100 + i, 100, 60), box(400 - i, 100, 60)), i / FPS):
            t.memory.values.append(i)
    assert len(made) == 2
    t1, t2 = tracker.tracks
    assert t1.memory is made[0] and t2.memory is made[1]
    assert t1.memory.values == list(range(10)) == t2.memory.values


def test_returned_arrays_are_not_rewritten_later() -> None:
    tracker = make_tracker()
    first = tracker.update(dets(box(100, 100, 60)), 0.0)[0]
    box0, kps0 = first.box, first.keypoints
    snapshot = (box0.copy(), kps0.copy())
    for i in range(1, 5):
        tracker.update(dets(box(100 + 10 * i, 100, 60)), i / FPS)
    last = (first.box, first.keypoints, first.velocity)
    last_snapshot = tuple(a.copy() for a in last)
    tracker.predict(0.3)
    tracker.update(dets(), 0.4)
    assert not np.array_equal(first.box, last_snapshot[0])  # the track moved on...
    for kept, snap in zip((box0, kps0, *last), (*snapshot, *last_snapshot), strict=True):
        np.testing.assert_array_equal(kept, snap)  # ...old arrays did not change
    assert first.box.dtype == np.float32 and first.box.shape == (4,)
    assert first.keypoints.shape == (6, 2) and first.velocity.shape == (4,)


def test_track_fields() -> None:
    tracker = make_tracker()
    for i in range(4):
        tracker.update(dets(box(100, 100, 60)), 1.0 + i / FPS)
    tracker.predict(1.2)
    (t,) = tracker.tracks
    assert (t.hits, t.misses, t.age) == (4, 0, 5)
    assert t.first_pts_s == 1.0 and t.last_pts_s == pytest.approx(1.0 + 3 / FPS)
    assert t.detection_score == pytest.approx(0.9)


def test_centre_distance_breaks_iou_ties() -> None:
    tracker = make_tracker(confirm_hits=1)
    tracker.update(dets([0, 0, 100, 100]), 0.0)
    # Both detections have IoU 0.5 with the track; the second shares its centre.
    tracks = tracker.update(dets([0, 0, 100, 50], [-50, 0, 150, 100]), 1 / FPS)
    by_id = {t.id: t for t in tracks}
    assert by_id[1].keypoints[2, 1] == pytest.approx(55.0)  # nose of the centred one
    assert by_id[1].detection_score == pytest.approx(0.9) and by_id[2].hits == 1


# -- pieces -------------------------------------------------------------------


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float64)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float64)
    np.testing.assert_allclose(iou_matrix(a, b), [[1, 50 / 150, 0], [0, 0, 0]])


@pytest.mark.parametrize(
    "kw", [{"min_iou": 1.5}, {"confirm_hits": 0}, {"box_smoothing": 1.0},
           {"coast_misses": 20, "max_misses": 15}, {"velocity_gain": 0.0}],
)
def test_bad_options_raise_config_error(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        TrackerOptions(**kw)
