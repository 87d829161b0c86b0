"""Draw boxes, scores and a status HUD onto a frame (RGB, in place on a copy)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stream_guard.types import FaceResult, TrackState, Verdict

# RGB colours per verdict.
COLOURS = {
    Verdict.FAKE: (230, 40, 40),
    Verdict.REAL: (40, 200, 70),
    Verdict.UNCERTAIN: (245, 180, 20),
}
NOT_JUDGED_COLOUR = (160, 160, 160)  # a face too small or cut off by the frame's edge: tracked, not judged
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True, slots=True)
class HudInfo:
    fps: float
    latency_ms: float
    faces: int
    model_name: str
    untrained: bool
    status: str = ""


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: tuple[int, int, int]) -> None:
    """Text on a dark translucent plate, so it reads on any background (OpenCV's glyphs
    change width with thickness, so an outline stroke would not line up)."""
    thickness = 1 if scale < 0.7 else 2
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thickness)
    x, y = org
    x0, y0 = max(0, x - 3), max(0, y - h - 4)
    x1, y1 = min(img.shape[1], x + w + 3), min(img.shape[0], y + base + 2)
    if x1 > x0 and y1 > y0:
        plate = img[y0:y1, x0:x1]
        plate[:] = (plate.astype(np.uint16) * 2 // 7).astype(np.uint8)
    cv2.putText(img, text, org, _FONT, scale, colour, thickness, cv2.LINE_AA)


def label_baseline(top: int, scale: float) -> int:
    """Where a label above a box whose top edge is at ``top`` stands: just above it, or just inside it
    where the box reaches the frame's top (a face that fills the frame), never cut by the frame's edge."""
    (_, height), _ = cv2.getTextSize("#0 fake 0.00", _FONT, scale, 1 if scale < 0.7 else 2)
    return max(height + 6, top - 6)


def draw_face(img: np.ndarray, face: FaceResult) -> None:
    """Box coloured by verdict, ``#id verdict score`` label, and a score bar under the box; a face
    not judged gets a grey box and ``#id too small`` or ``#id cut off`` (with its last verdict, if it had one)."""
    h, w = img.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w - 1, x2), min(h - 1, y2)
    colour = COLOURS[face.verdict] if face.not_judged is None else NOT_JUDGED_COLOUR
    thick = 1 if face.state is TrackState.TENTATIVE else max(2, (x2 - x1) // 100)
    cv2.rectangle(img, (x1, y1), (x2, y2), colour, thick, cv2.LINE_AA)
    scale = float(np.clip((x2 - x1) / 220.0, 0.45, 0.9))
    if face.not_judged is not None:  # what it was judged before, if anything
        was = "" if face.score is None else f", was {face.verdict.value} {face.score:.2f}"
        _text(img, f"#{face.track_id} {face.not_judged.value}{was}", (x1, label_baseline(y1, scale)), scale, colour)
        return
    score = "--" if face.score is None else f"{face.score:.2f}"
    _text(img, f"#{face.track_id} {face.verdict.value} {score}", (x1, label_baseline(y1, scale)), scale, colour)
    bar_y = min(h - 6, y2 + 6)
    bar_w = max(1, x2 - x1)
    cv2.rectangle(img, (x1, bar_y), (x1 + bar_w, bar_y + 5), (60, 60, 60), -1)
    if face.score is not None:
        cv2.rectangle(img, (x1, bar_y), (x1 + int(bar_w * face.score), bar_y + 5), colour, -1)


def draw_hud(img: np.ndarray, hud: HudInfo) -> None:
    """Top-left corner: fps, latency, faces, model; a red warning when the model is untrained."""
    lines = [f"{hud.fps:5.1f} fps  {hud.latency_ms:5.1f} ms  faces {hud.faces}", f"model {hud.model_name}"]
    if hud.status:
        lines.append(hud.status)
    scale = float(np.clip(img.shape[1] / 2000.0, 0.3, 0.7))  # small frames get a small HUD
    step = int(round(40 * scale))
    y = step
    for line in lines:
        _text(img, line, (8, y), scale, (255, 255, 255))
        y += step
    if hud.untrained:
        _text(img, "UNTRAINED MODEL: scores are meaningless", (10, y), scale, COLOURS[Verdict.FAKE])


def annotate(image: np.ndarray, faces: tuple[FaceResult, ...], hud: HudInfo) -> np.ndarray:
    """A copy of ``image`` with every face and the HUD drawn."""
    out = image.copy()
    for face in faces:
        draw_face(out, face)
    draw_hud(out, hud)
    return out
