"""Standard output as a pipe whose reader may go away (``stream-guard ... - | head``)."""
from __future__ import annotations

import contextlib
import os
from typing import IO


def retire_broken_pipe(stream: IO[str]) -> None:
    """Point ``stream``'s file descriptor at the null device once its reader has gone, so what is
    still buffered for it does not fail again (``Exception ignored ... BrokenPipeError``) when Python
    flushes it at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, stream.fileno())
        finally:
            os.close(null)
