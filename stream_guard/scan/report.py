"""Write a scan's ``report.json`` and ``report.html`` (with plots and thumbnails) into a folder.

Every link in the HTML is relative (``plots/...``, ``thumbs/...``), so the folder can be
moved or archived as a whole.
"""
from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
from pathlib import Path

from stream_guard.errors import OutputError
from stream_guard.file_analysis import Scanned, TrackSeries, no_score_text, printable, scanned_name, scanned_stem
from stream_guard.scan.plots import REGION_LABELS, plot_occlusion, plot_track, save_thumbnail
from stream_guard.scan.runner import VERDICTS, FileOutcome, ScanResult

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
PLOTS = "plots"
THUMBS = "thumbs"
EXPLAIN = "explain"
FILE_SCORE = "max over faces (with >= 3 windows) of the mean window probability"
VERDICT_COLOURS = {"fake": "#c62828", "real": "#2e7d32", "no-face": "#616161", "error": "#e65100",
                   "uncertain": "#f9a825"}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


_ASSET_NAME = re.compile(r"\d{4,}_face\d+\.(png|jpg)")  # what _assets names a picture


def _assets(index: int, series: TrackSeries) -> tuple[str, str, str]:
    """Relative paths of one track's plot, thumbnail and occlusion map."""
    stem = f"{index:04d}_face{series.track_id}"
    return f"{PLOTS}/{stem}.png", f"{THUMBS}/{stem}.jpg", f"{EXPLAIN}/{stem}.png"


def _track_json(index: int, series: TrackSeries, assets: bool) -> dict:
    """One face's record; with ``assets``, the report's pictures of it (plot, thumbnail, occlusion map)."""
    plot, thumbnail, explain = _assets(index, series)
    explanation = None
    if series.explanation is not None:
        explanation = {**series.explanation.to_json(), "window_time_s": series.peak_time_s}
        if assets:
            explanation["image"] = explain
    entry = {**series.to_json(), "smoothed": [round(s, 4) for s in series.smoothed]}
    if assets:
        entry.update({"plot": plot, "thumbnail": thumbnail if series.peak_crop is not None else None})
    return {**entry, "explanation": explanation}


def display_names(paths: list[Scanned]) -> list[str]:
    """Each file's path relative to the folder all the files share (``fake/a.mp4``, ``real/b.mp4``);
    a URL as it is, without its credentials."""
    files = [os.path.abspath(p) for p in paths if isinstance(p, Path)]
    root = ""
    if files:
        root = os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0])
        if root in files:  # a single file
            root = os.path.dirname(root)
    return [printable(Path(os.path.relpath(os.path.abspath(p), root)).as_posix()) if isinstance(p, Path)
            else scanned_name(p) for p in paths]


def file_json(index: int, outcome: FileOutcome, name: str, assets: bool = True) -> dict:
    """One file's record: the ``index``-th of the scan, shown as ``name``; ``assets``: name the
    report's pictures of its faces."""
    entry: dict = {"file": scanned_name(outcome.path), "name": name, "verdict": outcome.verdict, "score": outcome.score,
                   "error": outcome.error, "seconds": round(outcome.seconds, 3)}
    a = outcome.analysis
    if a is not None:
        entry.update({"frames": a.frames, "duration_s": round(a.duration_s, 3), "faces_too_small": a.faces_too_small,
                      "faces_cut_off": a.faces_cut_off,
                      "tracks": [_track_json(index, t, assets) for t in a.tracks if t.scores]})
    else:  # the same keys, for readers of the JSON: nothing was read
        entry.update({"frames": None, "duration_s": None, "faces_too_small": None, "faces_cut_off": None,
                      "tracks": []})
    return entry


def run_json(result: ScanResult) -> dict:
    """What the report says of the whole scan, without its files."""
    return {
        "created": dt.datetime.fromtimestamp(result.started, dt.timezone.utc).isoformat(timespec="seconds"),
        **result.provenance.to_json(),
        "elapsed_s": round(result.elapsed_s, 2), "interrupted": result.interrupted,
        "counts": {v: result.count(v) for v in VERDICTS}, "fake_found": result.fake_found,
        "file_score": FILE_SCORE,
    }


def report_json(result: ScanResult) -> dict:
    """The whole report as one JSON-ready dict."""
    return {**run_json(result),
            "files": [file_json(i, o, name) for i, (o, name) in
                      enumerate(zip(result.outcomes, display_names([o.path for o in result.outcomes])))]}


def _remove_old_assets(folder: Path) -> None:
    """A report written over another takes away that one's pictures (its faces would stay beside the new
    report's, in a folder the next scan leaves out); only files named as this module names them."""
    for sub in (PLOTS, THUMBS, EXPLAIN):
        for path in (folder / sub).glob("*_face*.*"):
            if _ASSET_NAME.fullmatch(path.name):
                path.unlink(missing_ok=True)


def _write_assets(folder: Path, result: ScanResult) -> None:
    _remove_old_assets(folder)
    (folder / PLOTS).mkdir(exist_ok=True)
    (folder / THUMBS).mkdir(exist_ok=True)
    for index, outcome in enumerate(result.outcomes):
        if outcome.analysis is None:
            continue
        for series in outcome.analysis.tracks:
            if not series.scores:
                continue
            plot, thumb, explain = _assets(index, series)
            title = f"{scanned_stem(outcome.path)}: face #{series.track_id}"
            plot_track(series, outcome.analysis.provenance.threshold, folder / plot, title)
            if series.peak_crop is not None:
                save_thumbnail(series.peak_crop, folder / thumb)
            if series.explanation is not None:
                (folder / EXPLAIN).mkdir(exist_ok=True)
                plot_occlusion(series.explanation, folder / explain, f"{title} at {series.peak_time_s:.2f} s")


def write_report(result: ScanResult, folder: str | Path) -> Path:
    """Write ``report.json``, ``report.html``, ``plots/`` and ``thumbs/`` into ``folder``;
    return the HTML path. Raises :class:`OutputError` if the folder cannot be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_assets(folder, result)
        data = report_json(result)
        (folder / REPORT_JSON).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        (folder / REPORT_HTML).write_text(render_html(data), encoding="utf-8")
    except OSError as e:
        raise OutputError(f"--report {folder}: cannot write the report ({e.strerror or e})") from e
    return folder / REPORT_HTML


def _badge(verdict: str) -> str:
    colour = VERDICT_COLOURS.get(verdict, "#616161")
    return f'<span class="badge" style="background:{colour}">{html.escape(verdict)}</span>'


def _summary_rows(files: list[dict]) -> str:
    rows = []
    for i, f in enumerate(files):
        faces = len(f["tracks"])
        detail = html.escape(f["error"]) if f["error"] else f"{faces} face{'s' if faces != 1 else ''}"
        rows.append(f'<tr><td><a href="#file{i}">{html.escape(f["name"])}</a></td>'
                    f'<td>{_badge(f["verdict"])}</td><td class="num">{_fmt(f["score"])}</td>'
                    f'<td class="num">{"–" if f["frames"] is None else f["frames"]}</td><td>{detail}</td></tr>')
    return "\n".join(rows)


def _track_block(track: dict) -> str:
    thumb = (f'<figure><img class="thumb" src="{html.escape(track["thumbnail"])}" alt="face #{track["track_id"]} '
             f'at its most suspicious window"><figcaption>peak {_fmt(track["peak_score"])} at '
             f'{track["peak_time_s"]:.2f} s</figcaption></figure>') if track["thumbnail"] else ""
    return (f'<div class="track"><h4>face #{track["track_id"]}: {_badge(track["verdict"])} '
            f'score {_fmt(track["score"])} over {track["windows"]} windows</h4>'
            f'<div class="row"><img class="plot" src="{html.escape(track["plot"])}" '
            f'alt="score over time, face #{track["track_id"]}">{thumb}</div>'
            f'{_explanation_block(track["explanation"])}</div>')


def _explanation_block(explanation: dict | None) -> str:
    """The occlusion map and one sentence on the region the score rests on most."""
    if explanation is None:
        return ""
    scores, score = explanation["region_scores"], explanation["window_score"]
    top = min(scores, key=lambda n: scores[n])
    most = (f"hiding the {html.escape(REGION_LABELS.get(top, top))} lowers it most, to {scores[top]:.2f}"
            if scores[top] < score else "hiding no one region lowers it")
    return (f'<div class="row"><figure><img class="plot" src="{html.escape(explanation["image"])}" '
            f'alt="occlusion map"><figcaption>What the most suspicious window\'s score ({score:.2f}) rests on: '
            f'{most}. Red: parts that push the score towards fake; blue: towards real. A hint for a reviewer, '
            f'not proof.</figcaption></figure></div>')


def _file_section(i: int, f: dict) -> str:
    head = (f'<section id="file{i}"><h3>{html.escape(f["name"])} {_badge(f["verdict"])}</h3>'
            f'<p class="path">{html.escape(f["file"])}</p>')
    if f["error"]:
        return head + f'<p class="error">could not analyse: {html.escape(f["error"])}</p></section>'
    info = (f'<p>score {_fmt(f["score"])}, {f["frames"]} frames, {f["duration_s"]:.1f} s, '
            f'analysed in {f["seconds"]:.1f} s</p>')
    if not f["tracks"]:
        why = no_score_text(f.get("faces_too_small", 0), f.get("faces_cut_off", 0))
        return head + info + f"<p>{html.escape(why)}</p></section>"
    return head + info + "".join(_track_block(t) for t in f["tracks"]) + "</section>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#eee}.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{color:#fff;border-radius:4px;padding:1px 8px;font-size:0.9em;white-space:nowrap}
.warn{background:#fff3cd;border:1px solid #e0b000;padding:8px 12px;border-radius:4px}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 16px;margin:16px 0}
.row{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
.plot{max-width:640px;width:100%}.thumb{width:160px;height:160px;object-fit:cover;border:1px solid #999}
figure{margin:0}figcaption{font-size:0.85em;color:#555}.path{color:#666;font-size:0.85em}
.error{color:#b71c1c}
"""


def render_html(data: dict) -> str:
    """The HTML report for :func:`report_json`'s dict (self-contained apart from the images)."""
    counts = ", ".join(f"{n} {v}" for v, n in data["counts"].items() if n)
    warn = ('<p class="warn"><b>UNTRAINED model</b>: this model has random weights; its scores are '
            'meaningless.</p>') if not data["model_trained"] else ""
    stopped = '<p class="warn">The scan was interrupted: not every file was analysed.</p>' \
        if data["interrupted"] else ""
    unread = data["counts"].get("error", 0)
    headline = ("at least one fake found" if data["fake_found"] else
                f"no fake found, but {unread} file(s) could not be read, so they were not checked" if unread
                else "no fake found")  # as the command's last line says: not a claim about unchecked files
    named = f" ({html.escape(data['threshold_name'])})" if data.get("threshold_name") else ""
    has_maps = any(t["explanation"] for f in data["files"] for t in f["tracks"])
    explained = ("; occlusion maps show what that window's score rests on: each part of the face hidden in turn, "
                 "red where hiding it lowers the score") if has_maps else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>stream_guard scan report</title>
<style>{_CSS}</style></head><body>
<h1>stream_guard scan report</h1>
<p><b>{headline}</b>: {len(data['files'])} files ({html.escape(counts)}).
Model <code>{html.escape(data['model'])}</code> {html.escape(data['model_version'])}
(model_sha256 <code>{html.escape(data['model_sha256'])}</code>), threshold {data['threshold']:.3f}{named},
stream_guard {html.escape(data['stream_guard'])}, {data['elapsed_s']:.1f} s, {html.escape(data['created'])}.</p>
{warn}{stopped}
<h2>Summary</h2>
<table><thead><tr><th>file</th><th>verdict</th><th>score</th><th>frames</th><th>faces / error</th></tr></thead>
<tbody>
{_summary_rows(data['files'])}
</tbody></table>
<p>A file's score is the highest face score (faces with at least 3 scored windows); a face's score is the
mean of its window scores. Plots show each window score over time with the threshold as a dashed line;
thumbnails show each face at its most suspicious window{explained}.</p>
<h2>Files</h2>
{''.join(_file_section(i, f) for i, f in enumerate(data['files']))}
</body></html>
"""
