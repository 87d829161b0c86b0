"""When a captured window or monitor has settled at a new size or place (a window being dragged
larger changes size many times a second): screen sources that cannot follow such a change by
themselves reopen then."""
from __future__ import annotations

from dataclasses import dataclass

RESIZE_SETTLE_S = 1.0  # a new size must hold this long before the source is reopened at it


@dataclass
class ResizeWatch:
    """Tells when a stream has settled at a size (or size and place) other than the one it is read at."""

    read_at: tuple[int, ...]
    settle_s: float = RESIZE_SETTLE_S
    latest: tuple[int, ...] | None = None
    changed_at: float = 0.0

    def note(self, size: tuple[int, ...], now: float) -> None:
        """The stream's size as seen at ``now`` (``time.monotonic()``)."""
        if size != self.latest:
            self.latest, self.changed_at = size, now

    def settled_size(self, now: float) -> tuple[int, ...] | None:
        """The stream's new size, once it has held for ``settle_s``; None while it is read at its size."""
        if self.latest is None or self.latest == self.read_at or now - self.changed_at < self.settle_s:
            return None
        return self.latest
