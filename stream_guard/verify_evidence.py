"""``stream-guard verify DIR``: is the evidence in a ``--snapshots`` or ``--clips`` folder as it was written?

Each picture and clip its logs (``alerts.jsonl``, ``clips.jsonl``) name is hashed again and compared with the
SHA-256 recorded when it was written; evidence-named files that no log line names are flagged (a picture
added afterwards), and so are files the logs name but the folder lacks, unless the log says that
``--snapshot-keep`` or ``--clip-keep`` removed them (a ``removed`` line). Logs written before removals were
logged (their lines carry no ``keep``) cannot tell the two apart: such files are only counted, as are clips
that a killed run left unfinished (logged as they opened, never as they ended). Each model the logs name is
matched, by its digest, against the models this installation ships.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from stream_guard.errors import ModelError, SourceNotFoundError
from stream_guard.model.contract import load_model_spec
from stream_guard.model.provenance import file_sha256, model_digest
from stream_guard.outputs.alert_clips import CLIP_FILE, CLIP_LOG
from stream_guard.outputs.snapshots import ALERT_LOG, SNAPSHOT_FILE
from stream_guard.paths import models_dir

EXIT_EVIDENCE_ALTERED = 11  # a file differs from its recorded digest, or an evidence file is in no log
# (log, file-name key, digest key) of every file a log line can name
_LOGGED_FILES = ((ALERT_LOG, "frame_image", "frame_sha256"), (ALERT_LOG, "face_image", "face_sha256"),
                 (CLIP_LOG, "clip", "sha256"))


@dataclass(frozen=True, slots=True)
class JudgedBy:
    """A model as the log lines name it."""

    model: str
    version: str
    sha256: str


@dataclass
class EvidenceCheck:
    """What :func:`check_folder` found in one folder."""

    folder: Path
    intact: list[str] = field(default_factory=list)
    altered: list[tuple[str, str, str]] = field(default_factory=list)  # name, recorded digest, digest now
    removed: list[str] = field(default_factory=list)  # logged, then removed by --snapshot-keep or --clip-keep
    deleted: list[str] = field(default_factory=list)  # logged, gone, and no log line says this program removed it
    missing: list[str] = field(default_factory=list)  # logged, gone, by a version that did not log removals
    no_digest: list[str] = field(default_factory=list)  # logged by a version that recorded no digest
    unfinished: list[str] = field(default_factory=list)  # clips whose run was killed before they ended
    lost: list[str] = field(default_factory=list)  # clips and alert pictures a full disk refused (logged so)
    not_logged: list[str] = field(default_factory=list)  # evidence-named files that no log line names
    unreadable_lines: int = 0  # log lines that are not JSON (a run killed mid-line)
    models: Counter[JudgedBy] = field(default_factory=Counter)  # log lines per model that judged them

    @property
    def trustworthy(self) -> bool:
        return not self.altered and not self.not_logged and not self.deleted


def _log_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a log, and how many lines were not one."""
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad


def check_folder(folder: Path) -> EvidenceCheck:
    """Check every file the folder's logs name, and every evidence file they do not. One of its logs
    given instead of the folder checks the folder."""
    if folder.is_file() and folder.name in (ALERT_LOG, CLIP_LOG):
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise SourceNotFoundError(f"{folder} is a file, not a --snapshots or --clips folder")
    if not folder.is_dir():
        raise SourceNotFoundError(f"no such folder: {folder}")
    logs = [folder / name for name in (ALERT_LOG, CLIP_LOG) if (folder / name).is_file()]
    if not logs:
        raise SourceNotFoundError(f"{folder}: no {ALERT_LOG} or {CLIP_LOG}: not a --snapshots or --clips folder")
    check = EvidenceCheck(folder)
    named: set[str] = set()
    started: dict[str, bool] = {}  # clips logged as they opened: do their lines say removals are logged
    removed: set[str] = set()  # files a removed line names
    gone: dict[str, bool] = {}  # logged files not in the folder: do their lines say removals are logged
    for log in logs:
        records, bad = _log_lines(log)
        check.unreadable_lines += bad
        for record in records:
            if record.get("type") == "removed" and isinstance(record.get("files"), list):
                removed.update(name for name in record["files"] if isinstance(name, str))
                continue
            if log.name == CLIP_LOG and record.get("type") == "clip_started" and isinstance(record.get("clip"), str):
                started[record["clip"]] = "keep" in record
                continue
            if log.name == CLIP_LOG and record.get("type") == "clip_lost" and isinstance(record.get("clip"), str):
                named.add(record["clip"])
                check.lost.append(record["clip"])
                continue
            if log.name == ALERT_LOG and record.get("pictures_lost"):
                check.lost.append(f"the pictures of face {record.get('track_id')}'s alert at "
                                  f"{record.get('wall_time')}")
            if record.get("model_sha256"):
                check.models[JudgedBy(str(record.get("model", "?")), str(record.get("model_version", "?")),
                                      str(record["model_sha256"]))] += 1
            for log_name, name_key, digest_key in _LOGGED_FILES:
                name = record.get(name_key)
                if log.name != log_name or not isinstance(name, str) or Path(name).name != name:
                    continue  # a name with a path in it is not one this program wrote
                named.add(name)
                if (folder / name).is_file():
                    _check_file(check, folder / name, record.get(digest_key))
                else:
                    gone[name] = "keep" in record
    for name in sorted(set(started) - named):  # never ended: the run was killed, the clip has no digest
        named.add(name)
        if (folder / name).is_file() or (folder / f"{name}.part").is_file():
            check.unfinished.append(name)
        else:
            gone[name] = started[name]
    for name, removals_logged in sorted(gone.items()):
        (check.removed if name in removed else check.deleted if removals_logged else check.missing).append(name)
    patterns = [re.compile(SNAPSHOT_FILE), re.compile(CLIP_FILE)]
    check.not_logged = sorted(p.name for p in folder.iterdir()
                              if p.name not in named and any(r.match(p.name) for r in patterns))
    return check


def _check_file(check: EvidenceCheck, path: Path, recorded: object) -> None:
    if not isinstance(recorded, str):
        check.no_digest.append(path.name)
    elif (now := file_sha256(path)) != recorded:
        check.altered.append((path.name, recorded, now))
    else:
        check.intact.append(path.name)


EARLIER_RELEASES = "EARLIER_RELEASES.json"


def shipped_digests() -> dict[str, str]:
    """``model_sha256`` -> where this installation stands on those model files: ``shipped here as
    'deepfake'``, or ``an earlier release of 'deepfake' (...)`` for one listed in
    ``models/EARLIER_RELEASES.json``."""
    digests = {}
    try:
        earlier = json.loads((models_dir() / EARLIER_RELEASES).read_text())["releases"]
        for release in earlier:
            digests[str(release["model_sha256"])] = (f"an earlier release of '{release['folder']}', no longer "
                                                      f"shipped here ({release['note']})")
    except (OSError, ValueError, KeyError, TypeError):
        pass  # the list only adds a hint; without it, earlier releases are "not shipped"
    for meta in sorted(models_dir().glob("*/model.json")):
        try:
            digests[model_digest(load_model_spec(meta.parent))] = f"shipped here as '{meta.parent.name}'"
        except ModelError:
            continue
    return digests


def print_check(check: EvidenceCheck, shipped: dict[str, str], out: TextIO) -> None:
    """One summary line per folder, then a line per problem and per model."""
    unchecked = (f", {len(check.no_digest)} logged without a digest (written before digests were recorded)"
                 if check.no_digest else "")
    if check.unfinished:
        unchecked += f", {len(check.unfinished)} unfinished clip(s) (their run was killed: no digest)"
    if check.lost:
        unchecked += f", {len(check.lost)} never written (the disk refused them)"
    if check.missing:
        unchecked += (f", {len(check.missing)} logged but gone, by a version that did not log what --snapshot-keep "
                      f"and --clip-keep removed")
    print(f"{check.folder}: {len(check.intact)} file(s) intact, {len(check.altered)} altered, "
          f"{len(check.deleted)} deleted, {len(check.not_logged)} not in the logs, {len(check.removed)} removed by "
          f"--snapshot-keep or --clip-keep{unchecked}", file=out)
    for name, recorded, now in check.altered:
        print(f"  ALTERED {name}: sha256 {now}, the log recorded {recorded}", file=out)
    for name in check.deleted:
        print(f"  DELETED {name}: logged, gone, and not removed by --snapshot-keep or --clip-keep", file=out)
    for name in check.not_logged:
        print(f"  NOT IN THE LOGS {name}", file=out)
    if check.unreadable_lines:
        print(f"  {check.unreadable_lines} log line(s) are not JSON (a run killed while writing one?)", file=out)
    for judged, lines in sorted(check.models.items(), key=lambda item: -item[1]):
        where = shipped.get(judged.sha256, "not a model this installation ships")
        print(f"  judged by {judged.model} {judged.version} (model_sha256 {judged.sha256}): {lines} log line(s); "
              f"{where}", file=out)


def run_verify(folders: list[Path], out: TextIO) -> int:
    """Check each folder; 0 if every one is as written, else :data:`EXIT_EVIDENCE_ALTERED`."""
    checks = [check_folder(folder) for folder in folders]
    shipped = shipped_digests()
    for check in checks:
        print_check(check, shipped, out)
    return 0 if all(c.trustworthy for c in checks) else EXIT_EVIDENCE_ALTERED
