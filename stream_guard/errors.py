"""Every error stream_guard raises on purpose roots at :class:`StreamGuardError`.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class StreamGuardError(Exception):
    """Base of all expected failures (bad input, missing model, unreachable source)."""

    exit_code = 1


class ConfigError(StreamGuardError):
    """The user asked for something inconsistent or unknown."""

    exit_code = 2


class SourceError(StreamGuardError):
    """A video source could not be opened or read."""

    exit_code = 3


class SourceNotFoundError(SourceError):
    """A file or device does not exist."""


class SourceUnreachableError(SourceError):
    """A network source did not answer."""


class SourceEnded(SourceError):
    """A live source was ended on purpose (the user stopped or declined screen sharing): the run
    ends as a file's does, and the source is not reopened."""


class NotAVideoError(SourceError):
    """The input exists but holds no decodable video stream."""


class StillImageError(NotAVideoError):
    """The input is a picture, not a video (``scan`` judges pictures; ``watch`` does not)."""


class ModelError(StreamGuardError):
    """A model folder is missing, malformed, or its metadata does not match its graphs."""

    exit_code = 4


class ProviderUnavailableError(ModelError):
    """A required ONNX Runtime execution provider is not available here."""


class OutputError(StreamGuardError):
    """An output (file, window, virtual camera...) could not be opened."""

    exit_code = 5


class StoppedBeforeStart(StreamGuardError):
    """The run was asked to stop (Ctrl-C, SIGTERM, the app's Stop) while its source was still opening:
    nothing was read and no output was started."""

    exit_code = 130
