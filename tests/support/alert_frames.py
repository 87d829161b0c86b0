"""Synthetic FrameResults for alert and output tests: one face whose verdicts we script."""
from __future__ import annotations

import numpy as np

from stream_guard.model.provenance import Provenance
from stream_guard.types import FaceResult, Frame, FrameResult, StreamInfo, TrackState, Verdict

INFO = StreamInfo(source_id="test-stream", width=64, height=48, fps=10.0, frame_count=None, is_live=True)
# what a sink is told judged the run: an untrained test model "m" at threshold 0.5
PROVENANCE = Provenance(software_version="0.0.test", model="m", model_version="1", model_sha256="0" * 64,
                        model_trained=False, threshold=0.5)


def face(track_id: int, verdict: Verdict | str, scored: bool = True, score: float = 0.5) -> FaceResult:
    return FaceResult(track_id=track_id, state=TrackState.CONFIRMED, box=np.array([10, 8, 30, 32], np.float32),
                      detection_score=0.9, keypoints=np.zeros((6, 2), np.float32), raw_score=score, score=score,
                      verdict=Verdict(verdict), scored=scored, verdict_changed=False, samples=1)


def result(index: int, faces: tuple[FaceResult, ...], fps: float = 10.0, width: int = 64,
           height: int = 48) -> FrameResult:
    image = np.full((height, width, 3), index % 256, np.uint8)
    frame = Frame(pixels=image, index=index, pts_s=index / fps, wallclock_s=0.0, source_id="test-stream")
    return FrameResult(frame=frame, annotated=image, faces=faces, detected=bool(faces), latency_ms=1.0, fps=fps)


def verdict_sequence(verdicts: list[str], track_id: int = 3) -> list[FrameResult]:
    """One scored window per frame with the given verdicts (``-`` = no face on that frame)."""
    out = []
    for i, v in enumerate(verdicts):
        faces = () if v == "-" else (face(track_id, v, score=0.9 if v == "fake" else 0.1),)
        out.append(result(i, faces))
    return out


# noise around the threshold (fake runs of at most 2 < raise 3), then a real fake, noise on the
# way back (real runs of at most 4 < clear 5), then real for good: one "fake", one "cleared"
NOISY_FAKE_THEN_REAL = (["uncertain"] * 3 + ["fake", "fake", "real", "fake", "uncertain", "fake", "fake", "real"]
                        + ["fake"] * 6 + ["real"] * 4 + ["fake"] + ["real", "real", "real", "real", "fake"]
                        + ["real"] * 6)
