"""``stream-guard evaluate``: detection quality on a user's labelled clips.

The manifest is a TSV with at least the columns ``file`` (relative to the manifest's
folder, or absolute, or the URL of a recording; videos or images) and ``label`` (``real`` / ``fake``);
other columns are ignored.
A file's family is its file name up to the first ``_``. Scores per file are described in
:mod:`stream_guard.file_analysis`. Files in which no face is found are counted and listed,
and left out of AUC, EER and accuracy (they have no score).

Every AUC comes with ``auc_ci``, a 95 % bootstrap interval (:func:`stream_guard.scoring.auc_interval`):
on a few dozen files an AUC can be off by 0.1 either way, and a family of three files says little.

How often a detector raises false alarms depends on the footage (camera, lighting,
encoding), so the report also gives, from the manifest's real files, the thresholds that
would have flagged at most 1 %, 5 % and 10 % of them (``false_alarm_thresholds``): a manifest
of a site's own real footage sets ``--threshold`` for that site.

What a person watching live sees is alerts, not file scores, so ``live_alerts`` (pooled and per
family) replays each file through the live alert rule (``--alert-raise``, ``--alert-clear``): how
many fake files raised an alert and how soon, how many real files did, and the false alerts per
hour of real video. ``live_alert_thresholds`` replays the rule at other thresholds
(:mod:`stream_guard.alert_replay`): the lowest ``--threshold`` at which the real files raise at
most 60, 10 and 1 false alerts an hour, and how many fake files still raise an alert there.

Small faces score lower and rank worse, so ``by_face_size`` repeats AUC and accuracy per band of
``face_px`` (the median box height of the face whose score is the file's).

``operating_points`` measures each of the model's named thresholds (``--threshold quiet``...) on
these files, beside what the model's maker measured out of fold: whether ``quiet`` is quiet on
this footage too.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TextIO
from urllib.parse import urlsplit

from stream_guard.alert_replay import AlertTrace, false_alert_thresholds
from stream_guard.config import RunConfig
from stream_guard.errors import ConfigError, SourceError
from stream_guard.file_analysis import Scanned, analyse_file, no_score_text, scanned_name
from stream_guard.model.contract import OperatingPoint
from stream_guard.model.provenance import Provenance
from stream_guard.model.smoothing import SmoothingOptions
from stream_guard.outputs.alerts import AlertOptions
from stream_guard.outputs.base import Sink
from stream_guard.pipeline import load_model
from stream_guard.sources.spec import file_url_path, parse_source, url_scheme
from stream_guard.scoring import (  # noqa: F401 (re-exported: evaluate's public API)
    AUC_INTERVAL_LEVEL, AUC_INTERVAL_RESAMPLES, FALSE_ALARM_TARGETS, LABELS, eer, false_alarm_thresholds,
    family_of, metrics, metrics_by_family, shares_flagged)
from stream_guard.writable import write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ManifestRow:
    path: Scanned  # a file, or a recording's URL
    label: str
    family: str


MANIFEST_DELIMITERS = ("\t", ",", ";")


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Parse and validate the manifest; raise ConfigError naming the first problem. Its columns are
    separated by tabs or, as a spreadsheet exports them, by commas or semicolons (whichever its header
    line has first); a UTF-8 byte-order mark is skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise ConfigError(f"manifest not found: {path}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"manifest {path}: cannot read ({e})") from e
    lines = text.splitlines()
    header = lines[0] if lines else ""
    delimiter = min(((header.index(d), d) for d in MANIFEST_DELIMITERS if d in header), default=(0, "\t"))[1]
    reader = csv.DictReader(lines, delimiter=delimiter)
    fields = [f.strip() for f in (reader.fieldnames or []) if f]
    if not {"file", "label"} <= set(fields):
        raise ConfigError(f"manifest {path}: needs the columns 'file' and 'label', separated by tabs, commas or "
                          f"semicolons (found: {', '.join(fields) or 'none'})")
    rows: list[ManifestRow] = []
    listed: dict[str | Path, tuple[int, str]] = {}  # each file's first line and label
    for raw in reader:
        line_no = reader.line_num  # blank lines count, as an editor counts them
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not row.get("file"):
            continue
        label = row.get("label", "").lower()
        if label not in LABELS:
            raise ConfigError(f"manifest {path} line {line_no}: label {row.get('label')!r} is not 'real' or 'fake'")
        name = row["file"]
        scheme = url_scheme(name)
        if scheme not in (None, "file"):  # a recording at a URL
            try:
                parse_source(name)
            except ConfigError as e:
                raise ConfigError(f"manifest {path} line {line_no}: {e}") from None
            rows.append(ManifestRow(name, label, family_of(urlsplit(name).path)))
            _check_listed_once(rows, listed, path, line_no)
            continue
        if scheme == "file":
            name = file_url_path(name)
        if "\\" in name and not (path.parent / name).exists():  # written on Windows: fake\clip.mp4
            name = name.replace("\\", "/")
        rows.append(ManifestRow(path.parent / name, label, family_of(name)))
        _check_listed_once(rows, listed, path, line_no)
    if not rows:
        raise ConfigError(f"manifest {path}: no files listed")
    return rows


def _check_listed_once(rows: list[ManifestRow], listed: dict[str | Path, tuple[int, str]], manifest: Path,
                       line_no: int) -> None:
    """The row just added names a file no earlier row names: a file listed twice would count twice in every
    figure (it is dropped, with a warning), and one listed as both real and fake is a :class:`ConfigError`."""
    row = rows[-1]
    key = Path(os.path.abspath(row.path)) if isinstance(row.path, Path) else row.path  # by name: no file read yet
    if key not in listed:
        listed[key] = (line_no, row.label)
        return
    first_line, first_label = listed[key]
    rows.pop()
    if first_label != row.label:
        raise ConfigError(f"manifest {manifest} line {line_no}: {row.path} is labelled {row.label}, but "
                          f"{first_label} on line {first_line}")
    log.warning("manifest %s line %d: %s is listed again (first on line %d): counted once", manifest, line_no,
                row.path, first_line)


@dataclass
class ScoredFiles:
    """Every file of a run: ``files`` with a face (each an entry of the report's ``files``), those
    with none, those that could not be read, and the model and threshold that scored them."""

    files: list[dict] = field(default_factory=list)
    no_face: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    provenance: Provenance | None = None  # the model and threshold that scored them (None: no file was scored)
    traces: dict[str, AlertTrace] = field(default_factory=dict)  # by file, to replay alerts at other thresholds

    def extend(self, other: ScoredFiles) -> None:
        """Add ``other``'s files (another model's run over other files); its model and threshold
        are kept when this holds no file yet."""
        if not (self.files or self.no_face or self.failed):
            self.provenance = other.provenance
        self.files += other.files
        self.no_face += other.no_face
        self.failed += other.failed
        self.traces |= other.traces

    @property
    def threshold(self) -> float:
        return 0.5 if self.provenance is None else self.provenance.threshold

    @property
    def model(self) -> str:
        return "" if self.provenance is None else self.provenance.model

    @property
    def count(self) -> int:
        return len(self.files) + len(self.no_face) + len(self.failed)

    def only(self, keep: Callable[[dict], bool]) -> ScoredFiles:
        """The files (entries with ``file``, ``label`` and ``family``) that ``keep`` accepts."""
        files = [f for f in self.files if keep(f)]
        return ScoredFiles(files, [f for f in self.no_face if keep(f)], [f for f in self.failed if keep(f)],
                           self.provenance, {f["file"]: self.traces[f["file"]] for f in files})


def score_files(rows: list[ManifestRow], config: RunConfig,
                progress: Callable[[int, int, str], None] | None = None,
                max_frames: int | None = None,
                file_sinks: Callable[[str], Sequence[Sink]] = lambda _name: (),
                should_stop: Callable[[], bool] = lambda: False) -> ScoredFiles:
    """Run every row's file through the pipeline with ``config``'s model; ``file_sinks(name)``: outputs that
    also receive a file's frames (a progress bar). ``should_stop`` is asked before and after each file: once
    it says so, :class:`KeyboardInterrupt` (a file stopped part-way would be scored on part of it)."""
    scored = ScoredFiles()
    with tempfile.TemporaryDirectory() as scratch:
        for i, row in enumerate(rows):
            if should_stop():
                raise KeyboardInterrupt
            name = str(row.path) if isinstance(row.path, Path) else scanned_name(row.path)  # no credentials
            if progress:
                progress(i, len(rows), name)
            try:
                analysis = analyse_file(row.path, config, max_frames=max_frames, scratch=Path(scratch),
                                        keep_trace=True, sinks=file_sinks(name))
            except SourceError as e:  # that file's problem; a model or option error stops the run
                log.warning("%s", e)
                scored.failed.append({"file": name, "label": row.label, "family": row.family,
                                      "error": str(e)})
                continue
            if should_stop():
                raise KeyboardInterrupt
            scored.provenance = analysis.provenance
            entry = {"file": name, "label": row.label, "family": row.family, "score": analysis.score,
                     "faces": sum(1 for t in analysis.tracks if t.scores), "frames": analysis.frames,
                     "duration_s": round(analysis.duration_s, 3), "alerts": analysis.alerts,
                     "first_alert_s": analysis.first_alert_s, "faces_too_small": analysis.faces_too_small,
                     "faces_cut_off": analysis.faces_cut_off,
                     "face_px": None if analysis.face_px is None else round(analysis.face_px, 1)}
            (scored.files if analysis.has_face else scored.no_face).append(entry)
            if analysis.has_face and analysis.trace is not None:
                scored.traces[entry["file"]] = analysis.trace
    return scored


FACE_SIZE_BANDS = (0.0, 40.0, 60.0, 80.0, 120.0, 200.0, math.inf)  # px edges of by_face_size


def metrics_by_face_size(files: list[dict], threshold: float) -> list[dict]:
    """:func:`~stream_guard.scoring.metrics` of the ``files`` in each band of ``face_px`` that has any."""
    bands = []
    for low, high in zip(FACE_SIZE_BANDS, FACE_SIZE_BANDS[1:]):
        inside = [f for f in files if f["face_px"] is not None and low <= f["face_px"] < high]
        if inside:
            bands.append({"min_px": low, "max_px": None if math.isinf(high) else high,
                          **metrics([LABELS[f["label"]] for f in inside], [f["score"] for f in inside], threshold)})
    return bands


def operating_point_rows(points: Sequence[OperatingPoint], labels: list[int], scores: list[float]) -> list[dict]:
    """Each named threshold's shares of these reals flagged and fakes caught (None without any),
    its accuracy here, and ``out_of_fold``: the shares the model's maker measured."""
    rows = []
    for point in points:
        reals_flagged, fakes_caught = shares_flagged(labels, scores, point.threshold)
        rows.append({"name": point.name, "threshold": point.threshold, "reals_flagged": reals_flagged,
                     "fakes_caught": fakes_caught, "accuracy": metrics(labels, scores, point.threshold)["accuracy"],
                     "out_of_fold": {"reals_flagged": point.reals_flagged, "fakes_caught": point.fakes_caught}})
    return rows


def build_report(scored: ScoredFiles, alerts: AlertOptions, manifest: str, n_files: int,
                 smoothing: SmoothingOptions = SmoothingOptions(), points: Sequence[OperatingPoint] = ()) -> dict:
    """The report's figures (see module docstring) over ``scored``, at its threshold; ``points``:
    the model's named thresholds, measured here too."""
    results, no_face = scored.files, scored.no_face
    labels, scores = [LABELS[r["label"]] for r in results], [r["score"] for r in results]
    report = metrics(labels, scores, scored.threshold, AUC_INTERVAL_RESAMPLES)
    families = sorted({r["family"] for r in results} | {r["family"] for r in no_face})
    report["families"] = metrics_by_family(labels, scores, [r["family"] for r in results], scored.threshold,
                                           families, AUC_INTERVAL_RESAMPLES)
    for name in families:
        report["families"][name]["no_face"] = sum(1 for r in no_face if r["family"] == name)
        report["families"][name]["live_alerts"] = live_alert_summary([r for r in results if r["family"] == name])
    report["live_alerts"] = {"raise_windows": alerts.raise_windows, "clear_windows": alerts.clear_windows,
                             **live_alert_summary(results)}
    report["live_alert_thresholds"] = false_alert_thresholds(
        [(scored.traces[r["file"]], r["duration_s"]) for r in results if r["label"] == "real"],
        [scored.traces[r["file"]] for r in results if r["label"] == "fake"], alerts, smoothing)
    report["false_alarm_thresholds"] = false_alarm_thresholds(labels, scores)
    report["by_face_size"] = metrics_by_face_size(results, scored.threshold)
    report["operating_points"] = operating_point_rows(points, labels, scores)
    judged = {"threshold": scored.threshold, "model": scored.model} if scored.provenance is None \
        else scored.provenance.to_json()
    report.update({**judged, "manifest": manifest,
                   "n_files": n_files, "n_no_face": len(no_face), "no_face": no_face,
                   "n_failed": len(scored.failed), "failed": scored.failed, "files": results,
                   "video_score": "max over faces (with >= 3 windows) of the mean window probability"})
    return report


def evaluate(manifest: str | Path, config: RunConfig, progress: Callable[[int, int, str], None] | None = None,
             max_frames: int | None = None,
             file_sinks: Callable[[str], Sequence[Sink]] = lambda _name: (),
             should_stop: Callable[[], bool] = lambda: False, rows: list[ManifestRow] | None = None) -> dict:
    """Score every file of the manifest and compute the report (see module docstring). A bad
    model or ``--threshold`` fails before any file; :class:`SourceError` when no file could be read.
    ``file_sinks``, ``should_stop``: see :func:`score_files`. ``rows``: the manifest's, if already read."""
    rows = read_manifest(manifest) if rows is None else rows
    spec = load_model(config)
    scored = score_files(rows, config, progress, max_frames, file_sinks, should_stop)
    if scored.failed and len(scored.failed) == scored.count:
        first = scored.failed[0]
        raise SourceError(f"none of the {scored.count} file(s) of {manifest} could be read "
                          f"(the first: {first['error']})")
    return build_report(scored, config.outputs.alerts, str(manifest), scored.count, config.model.smoothing,
                        spec.named_thresholds())


def live_alert_summary(files: list[dict]) -> dict:
    """The live alert rule's outcome over ``files`` (``evaluate``'s entries, with a face): fake
    files alerted and the median time to their first alert; real files alerted, their false
    alerts and the false alerts per hour of real video."""
    fakes = [f for f in files if f["label"] == "fake"]
    reals = [f for f in files if f["label"] == "real"]
    firsts = [f["first_alert_s"] for f in fakes if f["first_alert_s"] is not None]
    real_hours = sum(f["duration_s"] for f in reals) / 3600.0
    false_alerts = sum(f["alerts"] for f in reals)
    return {"fake_files": len(fakes), "fake_files_alerted": len(firsts),
            "median_first_alert_s": round(statistics.median(firsts), 3) if firsts else None,
            "real_files": len(reals), "real_files_alerted": sum(1 for f in reals if f["alerts"]),
            "false_alerts": false_alerts, "real_video_hours": round(real_hours, 6),
            "false_alerts_per_hour": round(false_alerts / real_hours, 1) if real_hours > 0 else None}


def _span(hours: float) -> str:
    seconds = hours * 3600
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} minutes" if seconds < 7200 else f"{hours:.1f} hours"


def live_alert_text(live: dict) -> str:
    """One line of :func:`live_alert_summary`'s figures, as ``evaluate`` prints them."""
    parts = []
    if live["fake_files"]:
        first = live["median_first_alert_s"]
        soon = "" if first is None else f", the first after {first:.1f} s (median)"
        parts.append(f"{live['fake_files_alerted']} of {live['fake_files']} fake files raised an alert{soon}")
    if live["real_files"]:
        parts.append(f"{live['real_files_alerted']} of {live['real_files']} real files raised "
                     f"{live['false_alerts']} false alert(s) in {_span(live['real_video_hours'])} of video "
                     f"({live['false_alerts_per_hour']:.1f} per hour)")
    return "; ".join(parts)


def live_threshold_text(row: dict, n_real: int, hours: float) -> str:
    """One line of a :func:`~stream_guard.alert_replay.false_alert_thresholds` row."""
    target = f"at most {row['target_per_hour']:g} false alert(s) per hour on these {n_real} real files " \
             f"({_span(hours)} of video)"
    if row["threshold"] is None:
        return f"no threshold up to 0.999 keeps {target}"
    caught = "" if not row["fake_files"] else \
        f"; {row['fake_files_alerted']} of {row['fake_files']} fake files still raise an alert"
    return (f"to raise {target}: --threshold {row['threshold']:.3f} ({row['false_alerts_per_hour']:.1f} per hour, "
            f"{row['false_alert_share']:.1%} of the time under a false alert{caught})")


def operating_point_text(row: dict, n_real: int, n_fake: int) -> str:
    """``--threshold quiet (0.911): flags 5% of these 40 real files (out of fold: 10%), ...``."""
    def share(here: float | None, measured: float | None, verb: str, n: int, what: str) -> str | None:
        if here is None:
            return None
        return f"{verb} {here:.0%} of these {n} {what}" + ("" if measured is None else f" (out of fold: {measured:.0%})")

    measured = row["out_of_fold"]
    parts = [p for p in (share(row["reals_flagged"], measured["reals_flagged"], "flags", n_real, "real files"),
                         share(row["fakes_caught"], measured["fakes_caught"], "catches", n_fake, "fakes")) if p]
    return f"--threshold {row['name']} ({row['threshold']:.3f}): " + ", ".join(parts)


def _fmt(value: float | None) -> str:
    return "  -  " if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _fmt_interval(interval: list[float] | None) -> str:
    return "     -     " if interval is None else f"{interval[0]:.2f}-{interval[1]:.2f}"


def _face_size_text(band: dict) -> str:
    """``40-60 px: 3 real / 2 fake, AUC 0.620, accuracy 0.600`` (the last band has no upper edge)."""
    edges = f"{band['min_px']:g}-{band['max_px']:g}" if band["max_px"] else f"{band['min_px']:g}+"
    return (f"{edges} px: {band['n_real']} real / {band['n_fake']} fake, AUC {_fmt(band['auc']).strip()}, "
            f"accuracy {_fmt(band['accuracy']).strip()}")


def print_table(report: dict, out: TextIO = sys.stdout) -> None:
    """A per-family table plus the pooled line."""
    ci_head = f"AUC {AUC_INTERVAL_LEVEL:.0%} CI"
    width = max([16, *map(len, report["families"])])
    print(f"{'family':<{width}} {'real':>5} {'fake':>5} {'no-face':>7} {'AUC':>6} {ci_head:>11} {'EER':>6} {'acc':>6}",
          file=out)
    for name, m in [*report["families"].items(), ("POOLED", {**report, "no_face": report["n_no_face"]})]:
        print(f"{name:<{width}} {m['n_real']:>5} {m['n_fake']:>5} {m['no_face']:>7} {_fmt(m['auc']):>6} "
              f"{_fmt_interval(m.get('auc_ci')):>11} {_fmt(m['eer']):>6} {_fmt(m['accuracy']):>6}", file=out)
    named = f" ({report['threshold_name']})" if report.get("threshold_name") else ""
    print(f"model {report['model']}, threshold {report['threshold']:.3f}{named}; accuracy at that threshold; "
          f"AUC interval: bootstrap over files", file=out)
    for row in report.get("false_alarm_thresholds", []):
        if row["threshold"] is None:
            continue
        caught = "" if row["fakes_caught"] is None else f", catches {row['fakes_caught']:.0%} of these fakes"
        print(f"to flag at most {row['target']:.0%} of these {report['n_real']} real files: --threshold "
              f"{row['threshold']:.3f} (flags {row['reals_flagged']:.0%}{caught})", file=out)
    for row in report.get("operating_points", []) if report["n_real"] or report["n_fake"] else ():
        print(operating_point_text(row, report["n_real"], report["n_fake"]), file=out)
    live = report.get("live_alerts")
    if live and (live["fake_files"] or live["real_files"]):
        print(f"watched live (alert after {live['raise_windows']} fake windows, cleared after "
              f"{live['clear_windows']} real): {live_alert_text(live)}", file=out)
    for row in report.get("live_alert_thresholds", []):
        print(live_threshold_text(row, report["n_real"], live["real_video_hours"]), file=out)
    if report.get("by_face_size"):
        print("by face size (median box height of the scored face): "
              + "; ".join(_face_size_text(b) for b in report["by_face_size"]), file=out)
    for entry in report["no_face"]:
        print(f"{no_score_text(entry.get('faces_too_small', 0), entry.get('faces_cut_off', 0))}: {entry['file']}",
              file=out)
    for entry in report["failed"]:
        print(f"could not read: {entry['file']}: {entry['error']}", file=out)


def write_json(report: dict, path: str | Path) -> None:
    """Write ``report`` as indented JSON (``--json``); :class:`OutputError` if it cannot be written."""
    write_text(path, json.dumps(report, indent=2) + "\n", "--json")
