"""Checks, before a long run, that the files and folders it will write at its end can be written.

A scan or an evaluation can take hours; finding out only then that ``--json`` or ``--report``
names a missing or read-only folder would lose the whole run.
"""
from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from stream_guard.errors import ConfigError, OutputError

STDOUT = "-"  # an output path that means standard output (``--json -``)


def is_stdout(path: str | Path | None) -> bool:
    """Whether an output option's value means standard output."""
    return path is not None and str(path) == STDOUT


def make_folder(folder: str | Path, option: str) -> Path:
    """Create ``folder`` (and its parents) if need be; :class:`OutputError` naming ``option`` if it is a
    file or cannot be made."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {folder}: is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{option} {folder}: cannot write there ({e.strerror or e})") from e
    return folder


def check_writable_folder(folder: str | Path, option: str) -> None:
    """Create ``folder`` if need be and write a scratch file in it; :class:`OutputError` if that fails."""
    folder = make_folder(folder, option)
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".stream_guard_write_test_"):
            pass
    except OSError as e:
        raise OutputError(f"{option} {folder}: cannot write there ({e.strerror or e})") from e


def check_writable_file(path: str | Path, option: str) -> None:
    """Whether ``path`` can be written later: not a folder, its folder exists and takes files, and
    the file system takes its name (opened to append, and removed again if it was not there).
    Standard output (``-``) always can."""
    if is_stdout(path):
        return
    path = Path(path)
    try:
        if path.is_dir():
            raise OutputError(f"{option} {path}: is a folder, not a file")
        if not path.parent.is_dir():
            raise OutputError(f"{option} {path}: no such folder: {path.parent}")
        existed = path.exists()
        with path.open("ab"):
            pass
        if not existed:
            path.unlink()
    except OSError as e:
        raise OutputError(f"{option} {path}: cannot write there ({e.strerror or e})") from e


def check_outputs_spare_the_source(source: Path | None, outputs: Sequence[tuple[Path | None, str]],
                                   source_is: str = "the source file: writing it would destroy the video being read"
                                   ) -> None:
    """No output file is the ``source`` file being read (``source_is`` says what writing it would do) nor
    another output's file; :class:`ConfigError` naming the option if one is. ``outputs``: (path or None,
    option) pairs."""
    taken: list[tuple[Path, str | None]] = [(source, None)] if source is not None else []
    for path, option in outputs:
        if path is None or is_stdout(path):
            continue
        for other, other_option in taken:
            if _same_file(Path(path), other):
                what = f"also {other_option}'s file" if other_option else source_is
                raise ConfigError(f"{option} {path}: is {what}")
        taken.append((Path(path), option))


def check_folders_spare_the_files(folders: Sequence[tuple[Path | None, str]], files: Sequence[tuple[Path | None, str]],
                                  reserved: Sequence[str] = ()) -> None:
    """No output folder (``--snapshots``, ``--clips``) is an output file's path, and no output file is one of
    the ``reserved`` names (the folder's own logs) in it; :class:`ConfigError` naming the options if one is."""
    for folder, folder_option in folders:
        if folder is None:
            continue
        for path, option in files:
            if path is None or is_stdout(path):
                continue
            if _same_file(Path(path), Path(folder)):
                raise ConfigError(f"{folder_option} {folder}: is also {option}'s file")
            if Path(path).name in reserved and _same_file(Path(path).parent, Path(folder)):
                raise ConfigError(f"{option} {path}: is the log {folder_option} writes in {folder}: give {option} "
                                  "another name")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def write_text(path: str | Path, text: str, option: str) -> None:
    """Write ``text`` to ``path`` (``-``: standard output); :class:`OutputError` naming ``option`` if that fails."""
    if is_stdout(path):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_with(path, lambda p: p.write_text(text, encoding="utf-8"), option)


def write_with(path: str | Path, writer: Callable[[Path], object], option: str) -> None:
    """Call ``writer(path)`` (a library's save function); :class:`OutputError` naming ``option`` if it fails."""
    try:
        writer(Path(path))
    except OSError as e:
        raise OutputError(f"{option} {path}: cannot write ({e.strerror or e})") from e
