"""The side panel: one row per face in view (track id, score bar, verdict in colour)."""
from __future__ import annotations

import tkinter as tk
from dataclasses import dataclass

from stream_guard.types import FaceResult, Verdict

VERDICT_COLOURS = {Verdict.FAKE: "#e53935", Verdict.REAL: "#43a047", Verdict.UNCERTAIN: "#f9a825"}
ROW_H = 34
BAR_W = 110


@dataclass(frozen=True, slots=True)
class FaceRow:
    """What one row shows."""

    track_id: int
    score: float | None
    verdict: Verdict


class FacePanel(tk.Canvas):
    """Redrawn from the faces of the newest frame; ``rows`` is what is shown now."""

    def __init__(self, master: tk.Misc, width: int = 260, height: int = 400, threshold: float = 0.5) -> None:
        super().__init__(master, width=width, height=height, background="#202124", highlightthickness=0)
        self.width = width
        self.threshold = threshold
        self.rows: tuple[FaceRow, ...] = ()
        self.show(())

    def show(self, faces: tuple[FaceResult, ...] | list[FaceResult]) -> None:
        rows = tuple(sorted((FaceRow(f.track_id, f.score, f.verdict) for f in faces), key=lambda r: r.track_id))
        if rows == self.rows and self.find_all():
            return
        self.rows = rows
        self.delete("all")
        self.create_text(10, 12, text=f"Faces ({len(rows)})", anchor="w", fill="#e8eaed",
                         font=("TkDefaultFont", 11, "bold"))
        if not rows:
            self.create_text(10, 40, text="no face in view", anchor="w", fill="#9aa0a6")
        for i, row in enumerate(rows):
            self._draw_row(30 + i * ROW_H, row)

    def _draw_row(self, y: int, row: FaceRow) -> None:
        colour = VERDICT_COLOURS.get(row.verdict, "#9aa0a6")
        self.create_text(10, y + ROW_H // 2, text=f"#{row.track_id}", anchor="w", fill="#e8eaed")
        x0, x1 = 48, 48 + BAR_W
        self.create_rectangle(x0, y + 9, x1, y + ROW_H - 9, outline="#5f6368", fill="#303134")
        if row.score is not None:
            self.create_rectangle(x0, y + 9, x0 + round(BAR_W * min(1.0, max(0.0, row.score))), y + ROW_H - 9,
                                  outline="", fill=colour)
        tx = x0 + round(BAR_W * self.threshold)
        self.create_line(tx, y + 6, tx, y + ROW_H - 6, fill="#e8eaed", dash=(2, 2))
        score = "--" if row.score is None else f"{row.score:.2f}"
        self.create_text(x1 + 8, y + ROW_H // 2, text=score, anchor="w", fill="#e8eaed")
        self.create_text(x1 + 48, y + ROW_H // 2, text=row.verdict.value, anchor="w", fill=colour,
                         font=("TkDefaultFont", 10, "bold"))
