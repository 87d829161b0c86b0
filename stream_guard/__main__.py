"""``python -m stream_guard`` is the ``stream-guard`` command."""
import sys

from stream_guard.cli import main

sys.exit(main())
