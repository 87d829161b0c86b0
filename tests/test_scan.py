"""``stream-guard scan`` on a folder of synthetic clips: report.json, report.html with a plot per
face track and thumbnails, relative links, the exit code, and the HTML rendered in Chromium."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import av
import cv2
import numpy as np
import pytest

from stream_guard.errors import ConfigError, NotAVideoError, SourceNotFoundError
from stream_guard.config import RunConfig, SourceOptions
from stream_guard.file_analysis import STILL_FRAMES, analyse_file, read_picture
from stream_guard.model.contract import load_model_spec
from stream_guard.model.provenance import model_digest
from stream_guard.scan.collect import collect_files
from stream_guard.scan.runner import EXIT_FAKE_FOUND
from stream_guard.sources.spec import parse_source
from tests.conftest import run_cli
from tests.support.terminal import run_on_a_terminal
from tests.support.faces import astronaut_head, one_face_moving, paste, two_faces_passing
from tests.support.synth_video import make_test_clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scan_clips")
    (root / "nested" / "deeper").mkdir(parents=True)
    make_test_clip(root / "two_faces.mp4", seconds=2.0, width=640, height=360, draw=two_faces_passing(n_frames=60))
    make_test_clip(root / "nested" / "one_face.mp4", seconds=2.0, width=640, height=360,
                   draw=one_face_moving(640, 360, face_px=200))
    make_test_clip(root / "nested" / "deeper" / "no_face.mp4", seconds=1.0, width=320, height=180)
    cv2.imwrite(str(root / "nested" / "photo.png"), cv2.cvtColor(astronaut_head(), cv2.COLOR_RGB2BGR))
    (root / "broken.mp4").write_bytes(b"this is not a video" * 100)
    (root / "notes.txt").write_text("not scanned")
    return root


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        for key in ("src", "href"):
            if a.get(key):
                self.links.append(a[key])


def _check_links(folder: Path) -> list[str]:
    """Every link in report.html is relative and resolves; return the image links."""
    parser = _Links()
    parser.feed((folder / "report.html").read_text(encoding="utf-8"))
    images = []
    for link in parser.links:
        if link.startswith("#"):
            assert link[1:] in parser.ids, link
            continue
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc and not link.startswith("/"), f"not relative: {link}"
        assert (folder / parts.path).is_file(), f"broken link: {link}"
        images.append(link)
    return images


def test_scan_writes_a_report_with_plots_and_thumbnails(clips: Path, placeholder_model: Path,
                                                       tmp_path: Path) -> None:
    report = tmp_path / "rep"
    result = run_cli("scan", str(clips), "--report", str(report), "--model", str(placeholder_model),
                     "--threshold", "0", timeout=300)
    assert result.returncode == EXIT_FAKE_FOUND, result.stderr  # threshold 0: every face is fake
    assert "report:" in result.stdout and "5 files" in result.stdout
    assert "UNTRAINED" in result.stderr and "Traceback" not in result.stderr
    assert (report / "report.json").is_file() and (report / "report.html").is_file()

    data = json.loads((report / "report.json").read_text())
    by_name = {Path(f["file"]).name: f for f in data["files"]}
    assert set(by_name) == {"two_faces.mp4", "one_face.mp4", "no_face.mp4", "photo.png", "broken.mp4"}
    assert by_name["broken.mp4"]["verdict"] == "error" and "not a video" in by_name["broken.mp4"]["error"]
    assert by_name["no_face.mp4"]["verdict"] == "no-face" and by_name["no_face.mp4"]["tracks"] == []
    assert by_name["two_faces.mp4"]["verdict"] == "fake" and len(by_name["two_faces.mp4"]["tracks"]) == 2
    assert len(by_name["one_face.mp4"]["tracks"]) == 1 and by_name["photo.png"]["verdict"] == "fake"
    assert data["counts"] == {"fake": 3, "real": 0, "no-face": 1, "error": 1} and data["fake_found"]
    assert data["model_trained"] is False and data["threshold"] == 0.0
    assert data["model_sha256"] == model_digest(load_model_spec(placeholder_model))
    assert f"model_sha256 <code>{data['model_sha256']}</code>" in (report / "report.html").read_text()

    tracks = [t for f in data["files"] for t in f["tracks"]]
    assert len(tracks) >= 4
    for t in tracks:
        assert len(t["times_s"]) == len(t["scores"]) == t["windows"] > 0
        assert (report / t["plot"]).is_file() and (report / t["thumbnail"]).is_file()
        assert cv2.imread(str(report / t["thumbnail"])) is not None
    assert len(list((report / "plots").glob("*.png"))) == len(tracks)  # one plot per face track
    assert len(list((report / "thumbs").glob("*.jpg"))) == len(tracks)

    images = _check_links(report)
    assert {t["plot"] for t in tracks} | {t["thumbnail"] for t in tracks} == set(images)
    moved = tmp_path / "elsewhere" / "moved_report"
    shutil.move(str(report), moved)
    _check_links(moved)  # the folder can be moved: every link is relative


def test_scan_prints_a_line_per_file_without_report(clips: Path, placeholder_model: Path) -> None:
    result = run_cli("scan", str(clips / "two_faces.mp4"), str(clips / "nested"), str(clips / "two_faces.mp4"),
                     "--model", str(placeholder_model), "--threshold", "1", timeout=300)
    assert result.returncode == 0, result.stderr  # threshold 1: nothing is fake
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 5, result.stdout  # 4 files (the duplicate once) + the summary
    assert lines[0].startswith("real") and lines[0].split()[2].endswith("two_faces.mp4")
    assert any(line.startswith("no-face") for line in lines)
    assert lines[-1].startswith("4 files in") and "0 fake, 3 real, 1 no-face, 0 error" in lines[-1]


def _without_report_pictures(entry: dict) -> dict:
    tracks = [{k: v for k, v in t.items() if k not in ("plot", "thumbnail")} for t in entry["tracks"]]
    for t in tracks:
        if t["explanation"] is not None:
            t["explanation"] = {k: v for k, v in t["explanation"].items() if k != "image"}
    return {**entry, "tracks": tracks}


def test_scan_writes_a_json_line_per_file_as_the_report_records_it(clips: Path, placeholder_model: Path,
                                                                  tmp_path: Path) -> None:
    """``--jsonl FILE``: a start line, each file's report record (without the report's pictures) as
    soon as the file is done, and the report's header as the summary line; ``-`` puts the lines on
    standard output, alone (the lines for people go to stderr)."""
    report, lines = tmp_path / "rep", tmp_path / "scan.jsonl"
    result = run_cli("scan", str(clips), "--report", str(report), "--jsonl", str(lines), "--model",
                     str(placeholder_model), "--threshold", "0", timeout=300)
    assert result.returncode == EXIT_FAKE_FOUND, result.stderr
    data = json.loads((report / "report.json").read_text())
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    start, files, summary = records[0], records[1:-1], records[-1]
    assert start == {"type": "start", "files": 5, **{k: data[k] for k in (
        "stream_guard", "model", "model_version", "model_sha256", "model_trained", "threshold", "threshold_name")}}
    assert [f.pop("type") for f in files] == ["file"] * 5
    assert files == [_without_report_pictures(f) for f in data["files"]]
    assert summary.pop("type") == "summary" and summary == {k: v for k, v in data.items() if k != "files"}

    to_stdout = run_cli("scan", str(clips), "--jsonl", "-", "--model", str(placeholder_model), "--threshold", "1",
                        timeout=300)
    assert to_stdout.returncode == 3, to_stdout.stderr  # broken.mp4 could not be read
    records = [json.loads(line) for line in to_stdout.stdout.splitlines()]
    assert [r["type"] for r in records] == ["start"] + ["file"] * 5 + ["summary"]
    assert records[-1]["counts"] == {"fake": 0, "real": 3, "no-face": 1, "error": 1}
    assert "5 files in" in to_stdout.stderr and "no-face" in to_stdout.stderr  # the lines for people


def test_a_scan_to_standard_output_stops_when_its_reader_goes_away(clips: Path, placeholder_model: Path,
                                                                   tmp_path: Path) -> None:
    """``scan DIR --jsonl - | head -2``: the scan stops there, quietly, as a filter does."""
    proc = subprocess.Popen([sys.executable, "-m", "stream_guard", "scan", str(clips), str(clips), "--jsonl", "-",
                             "--model", str(placeholder_model)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert [json.loads(proc.stdout.readline())["type"] for _ in range(2)] == ["start", "file"]
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err and "(interrupted)" in err, err
    done = re.search(r"(\d+) files in", err)
    assert done is not None and int(done.group(1)) < 5, err


def test_ctrl_c_while_the_report_is_written_keeps_it(clips: Path, placeholder_model: Path, tmp_path: Path) -> None:
    """Every file analysed, then Ctrl-C while the plots are drawn (20 s for 76 files): the report was lost,
    every verdict with it. It is finished first; a second Ctrl-C would stop without it."""
    import signal

    report = tmp_path / "rep"
    proc = subprocess.Popen([sys.executable, "-m", "stream_guard", "scan", str(clips), "--jsonl", "-", "--report",
                             str(report), "--model", str(placeholder_model), "--threshold", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if json.loads(line)["type"] == "summary":  # the report is written after it
            proc.send_signal(signal.SIGINT)
            break
    _, err = proc.communicate(timeout=120)
    assert "writing out the results of the files analysed first" in err, err
    assert proc.returncode == 3, err  # as without the interruption: one file could not be read
    data = json.loads((report / "report.json").read_text())
    assert len(data["files"]) == 5 and not data["interrupted"]
    assert (report / "report.html").exists()


def test_scan_output_options_that_would_do_harm_are_refused(clips: Path, placeholder_model: Path) -> None:
    clip = clips / "two_faces.mp4"
    for args, message in (
            (["--report", "-"], "--report takes a folder (report.json, report.html and their pictures): for the "
                                "results on standard output, use --jsonl -"),
            (["--jsonl", str(clip)], f"--jsonl {clip}: is one of the files scanned: writing it would destroy it")):
        result = run_cli("scan", str(clips), *args, "--model", str(placeholder_model))
        assert result.returncode == 2 and result.stderr_lines == [f"stream-guard: error: {message}"], result.stderr
    assert clip.stat().st_size > 1000 and not Path("-").exists()


def test_a_json_lines_file_the_disk_refuses_fails_the_scan_after_its_results(clips: Path, placeholder_model: Path,
                                                                            tmp_path: Path) -> None:
    full = tmp_path / "scan.jsonl"
    full.symlink_to("/dev/full")  # every write is refused as on a full disk
    result = run_cli("scan", str(clips / "two_faces.mp4"), "--jsonl", str(full), "--model", str(placeholder_model))
    assert result.returncode == 5, result.stderr
    assert "1 files in" in result.stdout and "Traceback" not in result.stderr
    assert result.stderr_lines[-1] == (f"stream-guard: error: --jsonl {full}: output failed during the scan: what it "
                                       "wrote is incomplete (No space left on device)")


def test_a_named_pipe_whose_reader_goes_away_fails_the_scan_in_one_line(clips: Path, placeholder_model: Path,
                                                                         tmp_path: Path) -> None:
    """``--jsonl FIFO``: a named pipe given as the file, its reader gone after the start line. It was a
    traceback; it is the failed output it is, after the scan's results."""
    import os
    import threading

    fifo = tmp_path / "lines"
    os.mkfifo(fifo)

    def read_a_little() -> None:
        with fifo.open("rb") as reader:
            reader.read(64)

    reader = threading.Thread(target=read_a_little)
    reader.start()
    result = run_cli("scan", str(clips / "two_faces.mp4"), str(clips / "nested"), "--jsonl", str(fifo),
                     "--model", str(placeholder_model), timeout=300)
    reader.join(timeout=10)
    assert result.returncode == 5 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr_lines[-1] == (f"stream-guard: error: --jsonl {fifo}: output failed during the scan: what "
                                       "it wrote is incomplete (Broken pipe)")


def test_a_scan_that_could_not_read_a_file_does_not_claim_it_found_no_fake(clips: Path, placeholder_model: Path,
                                                                           tmp_path: Path) -> None:
    """No fake among the files read, but one could not be read: exit 3 and one line naming it, report kept."""
    report = tmp_path / "rep"
    result = run_cli("scan", str(clips), "--report", str(report), "--model", str(placeholder_model),
                     "--threshold", "1", timeout=300)
    assert result.returncode == 3, result.stderr
    assert result.stderr_lines[-1] == (f"stream-guard: error: no fake found, but 1 of 5 file(s) could not be read, "
                                       f"so they were not checked: {clips / 'broken.mp4'}")
    data = json.loads((report / "report.json").read_text())
    assert data["counts"] == {"fake": 0, "real": 3, "no-face": 1, "error": 1} and not data["fake_found"]
    assert "Traceback" not in result.stderr
    # the report's headline says so too (it read "no fake found: 5 files")
    page = (report / "report.html").read_text()
    assert "<b>no fake found, but 1 file(s) could not be read, so they were not checked</b>" in page


def test_scan_user_errors_are_one_line(tmp_path: Path, placeholder_model: Path) -> None:
    result = run_cli("scan", str(tmp_path / "missing"), "--model", str(placeholder_model))
    assert result.returncode == 3 and len(result.stderr_lines) == 1 and "no such file or folder" in result.stderr
    (tmp_path / "empty").mkdir()
    result = run_cli("scan", str(tmp_path / "empty"), "--model", str(placeholder_model))
    assert result.returncode == 3 and "no video or image files" in result.stderr
    result = run_cli("scan", str(tmp_path), "--model", str(tmp_path / "no_model"))
    assert result.returncode == 4 and len(result.stderr_lines) == 1, result.stderr
    blocker = tmp_path / "file_not_folder"
    blocker.write_text("x")
    clip = make_test_clip(tmp_path / "c.mp4", seconds=0.5, width=320, height=180)
    result = run_cli("scan", str(clip), "--report", str(blocker / "rep"), "--model", str(placeholder_model))
    assert result.returncode == 5 and "Traceback" not in result.stderr
    assert result.stderr_lines == [f"stream-guard: error: --report {blocker / 'rep'}: cannot write there "
                                   "(Not a directory)"]  # said before any file is scanned: no progress bar


def test_collect_files_recurses_and_filters(clips: Path) -> None:
    names = [p.name for p in collect_files([clips])]
    assert names == ["broken.mp4", "no_face.mp4", "one_face.mp4", "photo.png", "two_faces.mp4"]
    assert "notes.txt" not in names
    assert collect_files([clips / "notes.txt"]) == [clips / "notes.txt"]  # named directly: taken as given
    with pytest.raises(SourceNotFoundError):
        collect_files([clips / "nope"])


def test_a_folder_walk_follows_links_and_leaves_out_report_pictures(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A report kept in a scanned folder was scanned again by any scan but one naming it as --report (its
    face thumbnails each one more "fake"); ``scan DIR --report DIR`` found no file at all; a linked folder
    and hidden files were left out without a word."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "linked.mp4").write_bytes(b"x")
    folder = tmp_path / "uploads"
    (folder / "old_report" / "thumbs").mkdir(parents=True)
    for name in ("report.json", "report.html", "thumbs/0001_face1.jpg"):
        (folder / "old_report" / name).write_bytes(b"x")
    (folder / "thumbs").mkdir()  # a folder of the user's own called so, not in a report
    for name in ("a.mp4", ".b.jpg", "thumbs/c.jpg"):
        (folder / name).write_bytes(b"x")
    (folder / "more").symlink_to(elsewhere)
    (elsewhere / "loop").symlink_to(folder)  # a link back: walked once
    with caplog.at_level("WARNING"):
        found = collect_files([folder])
    assert [p.relative_to(folder).as_posix() for p in found] == ["a.mp4", "more/linked.mp4", "thumbs/c.jpg"]
    assert "left out 1 hidden file(s)" in caplog.text and ".b.jpg" in caplog.text
    # the scan's own report folder is the scanned folder: its files are scanned, its pictures are not
    (folder / "report.json").write_bytes(b"x")
    assert [p.name for p in collect_files([folder], reports=[folder])] == ["a.mp4", "linked.mp4"]


def test_report_renders_in_headless_chromium(clips: Path, placeholder_model: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); tools/run_tests.sh installs it")
    report = tmp_path / "rep"
    result = run_cli("scan", str(clips / "two_faces.mp4"), str(clips / "nested" / "deeper"), "--report",
                     str(report), "--model", str(placeholder_model), "--explain", "all", timeout=300)
    assert result.returncode in (0, EXIT_FAKE_FOUND), result.stderr
    shot = tmp_path / "report.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={shot}",
                    "--window-size=1280,2000", (report / "report.html").resolve().as_uri()],
                   capture_output=True, timeout=180, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    print(f"screenshot: {shot}")
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2000, 1280)
    assert image.std() > 20, f"blank page; see {shot}"
    not_background = (np.abs(image.astype(np.int16) - 250).max(axis=2) > 30).mean()
    assert not_background > 0.05, f"almost nothing drawn; see {shot}"
    # the plot's red threshold line (matplotlib's #d62728) is on screen: the images loaded
    red = (np.abs(image.astype(np.int16) - np.array([0x28, 0x27, 0xd6])).max(axis=2) < 40).sum()
    assert red > 50, f"no plot visible; see {shot}"


def test_a_scan_again_leaves_out_its_own_report(clips: Path, placeholder_model: Path, tmp_path: Path) -> None:
    """A report kept beside the clips it judged was scanned the next time: its face thumbnails counted as
    pictures of faces (one more "fake" for each fake found) and its plots as files without a face."""
    folder = tmp_path / "clips"
    folder.mkdir()
    make_test_clip(folder / "one_face.mp4", seconds=1.0, width=640, height=360,
                   draw=one_face_moving(640, 360, face_px=200))
    (folder / "rep" / "thumbs").mkdir(parents=True)  # an earlier report's face, and a picture of the user's
    for name in ("0007_face3.jpg", "mine.jpg"):
        (folder / "rep" / "thumbs" / name).write_bytes(b"x")
    for _ in range(2):
        result = run_cli("scan", str(folder), "--report", str(folder / "rep"), "--model", str(placeholder_model),
                         "--threshold", "0", timeout=300)
        assert result.returncode == EXIT_FAKE_FOUND, result.stderr
        assert [f["name"] for f in json.loads((folder / "rep" / "report.json").read_text())["files"]] == [
            "one_face.mp4"]
    assert any((folder / "rep").rglob("*.jpg"))  # there were thumbnails to pick up
    # the earlier report's pictures are gone with it (they stayed beside the new report's)
    assert sorted(p.name for p in (folder / "rep" / "thumbs").iterdir()) == ["0000_face1.jpg", "mine.jpg"]


def test_camcorder_and_old_phone_files_are_found_whatever_their_case(tmp_path: Path) -> None:
    """AVCHD camcorders write .MTS, older phones .3gp, cameras upper-case suffixes."""
    for name in ("00001.MTS", "clip.3gp", "trip.M2TS", "IMG_0001.MOV", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert sorted(p.name for p in collect_files([tmp_path])) == ["00001.MTS", "IMG_0001.MOV", "clip.3gp", "trip.M2TS"]


def test_a_still_saved_as_a_one_frame_video_is_scored_as_a_still(tmp_path: Path, placeholder_model: Path) -> None:
    """A photo posted as a GIF, or a clip of one frame: its face is seen once, too few times to be tracked,
    so it was 'no-face'; it is scored as a still picture is. A picture saved without its suffix is one too,
    and animated GIFs and browsers' .jfif pictures are found in folders."""
    face = astronaut_head()
    height, width = face.shape[0] - face.shape[0] % 2, face.shape[1] - face.shape[1] % 2
    face = np.ascontiguousarray(face[:height, :width])
    folder = tmp_path / "shared"
    folder.mkdir()
    make_test_clip(folder / "one_frame.mp4", seconds=1 / 25, width=width, height=height, fps=25, draw=lambda _i: face)
    with av.open(str(folder / "Meme.GIF"), "w") as gif:
        stream = gif.add_stream("gif", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb8"
        gif.mux(stream.encode(av.VideoFrame.from_ndarray(face, format="rgb24").reformat(format="rgb8")))
        gif.mux(stream.encode(None))
    cv2.imwrite(str(folder / "saved.jpg"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    (folder / "saved.jpg").rename(folder / "saved.jfif")
    cv2.imwrite(str(tmp_path / "photo.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    (tmp_path / "photo.png").rename(tmp_path / "photo")
    report = tmp_path / "rep"
    result = run_cli("scan", str(folder), str(tmp_path / "photo"), "--report", str(report), "--model",
                     str(placeholder_model), "--threshold", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    files = {Path(f["file"]).name: f for f in json.loads((report / "report.json").read_text())["files"]}
    assert sorted(files) == ["Meme.GIF", "one_frame.mp4", "photo", "saved.jfif"]
    for name, file in files.items():
        assert file["verdict"] == "real" and len(file["tracks"]) == 1, (name, file)
        assert file["frames"] == STILL_FRAMES, (name, file)


def test_phone_photos_are_scored_whatever_their_size_and_format(tmp_path: Path, placeholder_model: Path) -> None:
    """A phone's 12 MP photo was an error (above the 9 MP limit for a frame, and named by a temporary
    file); iPhones' HEIC and the web's AVIF pictures were not even looked at. Each is scored now."""
    import pillow_heif
    from PIL import Image

    face = astronaut_head()
    photo = np.full((3024, 4032, 3), 90, np.uint8)
    paste(photo, face, (2016, 1512), 2000)
    folder = tmp_path / "camera roll"
    folder.mkdir()
    cv2.imwrite(str(folder / "IMG_0001.JPG"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    # tiled, as iPhones save them (FFmpeg would give the tiles one by one)
    pillow_heif.from_pillow(Image.fromarray(face)).save(str(folder / "IMG_0002.HEIC"), quality=90, tile_size=128)
    assert cv2.imwrite(str(folder / "shared.avif"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    report = tmp_path / "rep"
    result = run_cli("scan", str(folder), "--report", str(report), "--model", str(placeholder_model),
                     "--threshold", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    files = {Path(f["file"]).name: f for f in json.loads((report / "report.json").read_text())["files"]}
    assert sorted(files) == ["IMG_0001.JPG", "IMG_0002.HEIC", "shared.avif"]
    for name, file in files.items():
        assert file["verdict"] == "real" and len(file["tracks"]) == 1, (name, file)


def test_a_picture_shrunk_below_a_face_by_the_size_limit_says_so() -> None:
    """It was said to be a scratch clip (``/tmp/stream_guard_scan_.../x.mkv``) too small to show a face."""
    from stream_guard.file_analysis import _fitted

    with pytest.raises(NotAVideoError, match=r"^photo.jpg: --max-megapixels 0.0001 would shrink the picture to "
                                             r"11x8 pixels: too small to show a face \(raise it\)$"):
        _fitted(np.zeros((480, 640, 3), np.uint8), 0.0001, "photo.jpg")


def test_an_animated_sticker_is_scored_as_the_video_it_plays_as(tmp_path: Path, placeholder_model: Path) -> None:
    """Messengers' stickers and memes are animated WebP and PNG: only their first frame was read, a still,
    so a face that comes in later was never seen."""
    face = astronaut_head()
    frames = []
    for i in range(15):  # the face comes in at the sixth frame
        canvas = np.full((240, 320, 3), 90, np.uint8)
        if i >= 5:
            paste(canvas, face, (160 + 2 * i, 120), 200)
        frames.append(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    folder = tmp_path / "stickers"
    folder.mkdir()
    for name in ("sticker.webp", "sticker.png", "fast.webp"):
        animation = cv2.Animation()
        animation.frames = frames if name != "fast.webp" else frames * 3
        animation.durations = [100 if name != "fast.webp" else 40] * len(animation.frames)
        assert cv2.imwriteanimation(str(folder / name), animation)
    cv2.imwrite(str(folder / "still.webp"), frames[-1])
    report = tmp_path / "rep"
    result = run_cli("scan", str(folder), "--report", str(report), "--model", str(placeholder_model),
                     "--threshold", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    files = {Path(f["file"]).name: f for f in json.loads((report / "report.json").read_text())["files"]}
    for name in ("sticker.webp", "sticker.png"):
        # the encoder merges the five identical first frames into one shown for 0.5 s: 11 frames, 1.4 s
        assert files[name]["verdict"] == "real" and len(files[name]["tracks"]) == 1, files[name]
        assert files[name]["frames"] == 11 and files[name]["duration_s"] == pytest.approx(1.4), files[name]
    assert files["still.webp"]["frames"] == STILL_FRAMES and len(files["still.webp"]["tracks"]) == 1
    # 40 ms a frame, as most stickers: the clip's times were rounded to 100 ms (two frames at one time),
    # and the one face was taken for five
    fast = files["fast.webp"]
    assert len(fast["tracks"]) == 1 and fast["duration_s"] == pytest.approx(44 * 0.04, abs=0.05), fast


def test_every_face_of_a_group_photo_is_judged(tmp_path: Path, placeholder_model: Path) -> None:
    """A 1280x720 group photo of eight: its faces, about 75 px wide, are too small for the detector's
    whole-frame pass (11 px at its input); it found none of four and two of eight. A still is now also
    searched in tiles, whatever its size."""
    photo = np.full((720, 1280, 3), 90, np.uint8)
    for row in range(2):
        for column in range(4):
            paste(photo, astronaut_head(), (110 + column * 210, 120 + row * 240), 200)
    cv2.imwrite(str(tmp_path / "team.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    report = tmp_path / "rep"
    result = run_cli("scan", str(tmp_path / "team.png"), "--report", str(report), "--model", str(placeholder_model),
                     "--threshold", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    file = json.loads((report / "report.json").read_text())["files"][0]
    assert len(file["tracks"]) == 8, file
    untiled = run_cli("scan", str(tmp_path / "team.png"), "--report", str(tmp_path / "off"), "--model",
                      str(placeholder_model), "--threshold", "1", "--detect-tiles", "off", timeout=300)
    assert untiled.returncode == 0, untiled.stderr
    assert len(json.loads((tmp_path / "off" / "report.json").read_text())["files"][0]["tracks"]) < 8


def test_the_frame_size_limit_scan_names_can_be_raised(clips: Path, placeholder_model: Path) -> None:
    """scan said "raise it with --max-megapixels" for an 8K video, and did not take that option."""
    clip = clips / "nested" / "one_face.mp4"  # 640x360: 0.23 MP
    common = ("--model", str(placeholder_model), "--threshold", "1")
    refused = run_cli("scan", str(clip), "--max-megapixels", "0.2", *common, timeout=300)
    assert refused.returncode == 3, refused.stderr
    assert "is above the limit of 0.2 MP (raise it with --max-megapixels)" in refused.stdout
    allowed = run_cli("scan", str(clip), "--max-megapixels", "0.3", *common, timeout=300)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.startswith("real "), allowed.stdout


def test_heic_photos_that_cannot_be_read_are_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NotAVideoError, match=r"^https://example.com/IMG_0002.HEIC: HEIC pictures are read from "
                                             r"files \(FFmpeg cannot put their tiles together\): download it"):
        analyse_file("https://example.com/IMG_0002.HEIC", RunConfig(source=SourceOptions("demo")))
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # not installed: importing it fails
    with pytest.raises(NotAVideoError, match=r"IMG_0002.HEIC: reading HEIC photos needs pillow-heif: "
                                             r"pip install 'stream-guard\[heic\]'"):
        read_picture(tmp_path / "IMG_0002.HEIC")


def test_a_broken_link_in_a_folder_is_an_error_not_left_out(tmp_path: Path, placeholder_model: Path) -> None:
    """A folder of links into a drive that is not mounted: the scan said it found nothing wrong."""
    folder = tmp_path / "links"
    folder.mkdir()
    cv2.imwrite(str(folder / "photo.png"), cv2.cvtColor(astronaut_head(), cv2.COLOR_RGB2BGR))
    (folder / "party.mp4").symlink_to(tmp_path / "unmounted" / "party.mp4")
    result = run_cli("scan", str(folder), "--model", str(placeholder_model), "--threshold", "1", timeout=300)
    assert result.returncode == 3, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (f"error      -    {folder / 'party.mp4'}  ({folder / 'party.mp4'}: is a broken link "
                        f"(to {tmp_path / 'unmounted' / 'party.mp4'}, which does not exist))"), lines
    assert lines[1].startswith("real ") and lines[1].endswith("photo.png  (1 face)"), lines
    with pytest.raises(SourceNotFoundError, match=r"party.mp4: is a broken link \(to .*unmounted/party.mp4"):
        parse_source(str(folder / "party.mp4"))  # what watch says of it


def test_a_long_file_shows_its_frames_on_a_terminal(clips: Path, placeholder_model: Path) -> None:
    """The files' bar stood at 0/1 for all of a long video: on a terminal a second bar counts its frames."""
    clip = clips / "nested" / "one_face.mp4"  # 60 frames
    code, shown = run_on_a_terminal(["scan", str(clip), "--model", str(placeholder_model), "--threshold", "1"])
    assert code == 0, shown
    frame_bars = [line for line in shown.replace("\r", "\n").splitlines() if "frame/s" in line]
    assert frame_bars and all("one_face.mp4: " in line for line in frame_bars), shown  # a long path by its end
    assert any(re.search(r"\| +[1-9]\d*/60 \[", line) for line in frame_bars), frame_bars
    plain = run_cli("scan", str(clip), "--model", str(placeholder_model), "--threshold", "1")
    assert "frame/s" not in plain.stderr  # not on a log file or a pipe


def test_urls_are_collected_as_they_are_and_file_urls_as_paths(clips: Path) -> None:
    url = "https://user:pw@example.com/v/clip.mp4?sig=1"
    found = collect_files([url, f"file://{clips / 'nested'}", url])
    assert found[0] == url and len(found) == 4  # the URL once, then the folder's three files
    assert all(isinstance(p, Path) for p in found[1:])
    with pytest.raises(ConfigError, match="unknown URL scheme 'ftp://'"):
        collect_files(["ftp://example.com/clip.mp4"])


def test_a_file_name_that_is_not_utf8_is_reported(clips: Path, placeholder_model: Path, tmp_path: Path) -> None:
    """A name written by a system in another encoding (Latin-1 ``café.mp4`` from an old camera or a zip)
    is scanned and reported, its odd byte shown as U+FFFD; it crashed the plot's title before."""
    import os
    import shutil

    folder = tmp_path / "latin1"
    folder.mkdir()
    shutil.copy(clips / "nested" / "one_face.mp4", os.fsencode(folder) + b"/caf\xe9.mp4")
    report = tmp_path / "rep"
    result = run_cli("scan", str(folder), "--report", str(report), "--model", str(placeholder_model),
                     "--threshold", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads((report / "report.json").read_text(encoding="utf-8"))["files"]
    assert entry["name"] == "caf\ufffd.mp4" and entry["verdict"] == "real" and entry["tracks"]
    assert "caf\ufffd.mp4" in (report / "report.html").read_text(encoding="utf-8")


def test_files_named_like_other_sources_are_scanned_as_those_files(clips: Path, placeholder_model: Path,
                                                                   tmp_path: Path) -> None:
    """Given by a relative name, a file called ``demo`` was scored as the embedded demo (a text file was
    called real), ``screen@2x.mp4`` and ``window:call.mp4`` stopped the whole scan as bad screen sources,
    and a name with a leading space was not found."""
    folder = tmp_path / "names"
    folder.mkdir()
    names = ["demo", "./-", "screen@2x.mp4", "window:call.mp4", " lead.mp4"]
    for name in names:
        shutil.copy(clips / "nested" / "one_face.mp4", folder / name)
    out = tmp_path / "scan.jsonl"
    result = run_cli("scan", *names, "--jsonl", str(out), "--model", str(placeholder_model), "--threshold", "1",
                     cwd=folder, timeout=300)
    assert result.returncode == 0, result.stderr
    files = [r for r in map(json.loads, out.read_text().splitlines()) if r["type"] == "file"]
    assert len(files) == len(names)
    assert all(f["verdict"] == "real" and f["frames"] == 60 and f["tracks"] for f in files), files


def _png_of_nothing(path: Path, width: int, height: int) -> None:
    """A black 1-bit PNG of ``width`` x ``height``, written row by row (a gigapixel in a few hundred KB)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    rows = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_pictures_too_small_or_named_in_another_encoding(tmp_path: Path, placeholder_model: Path) -> None:
    """A picture 1 pixel high crashed the scan (a traceback, the whole batch's report lost); a picture
    whose name is not UTF-8 crashed the process inside OpenCV; so did an empty picture file, and one
    whose header claims more pixels than OpenCV decodes (1.2 gigapixels in 150 KB)."""
    import os

    folder = tmp_path / "pictures"
    folder.mkdir()
    face = cv2.cvtColor(astronaut_head(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(folder / "line.png"), np.zeros((1, 300, 3), np.uint8))
    (folder / "empty.jpg").write_bytes(b"")
    _png_of_nothing(folder / "huge.png", 40000, 30000)
    animation = cv2.Animation()  # an animated PNG cut short: it was said to be a scratch file, not found
    animation.frames, animation.durations = [face, face[::-1], face, face[::-1]], [100] * 4
    assert cv2.imwriteanimation(str(tmp_path / "whole.png"), animation)
    whole = (tmp_path / "whole.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[:len(whole) * 3 // 4])
    cv2.imwrite(str(folder / "face.png"), face)
    for suffix in (".jpg", ".webp"):
        ok, data = cv2.imencode(suffix, face)
        assert ok
        (Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9" + suffix.encode()))).write_bytes(data.tobytes())
    report = tmp_path / "rep"
    result = run_cli("scan", str(folder), "--report", str(report), "--model", str(placeholder_model),
                     "--threshold", "1", timeout=300)
    assert result.returncode == 3, result.stderr  # one file could not be checked
    assert "Traceback" not in result.stderr
    files = {f["name"]: f for f in json.loads((report / "report.json").read_text(encoding="utf-8"))["files"]}
    assert "line.png: the picture is 300x1 pixels: too small to show a face" in files["line.png"]["error"]
    assert files["empty.jpg"]["error"].endswith("empty.jpg: is empty (0 bytes), not a picture"), files["empty.jpg"]
    assert "huge.png: the picture is too large to decode" in files["huge.png"]["error"], files["huge.png"]
    # the same keys as a file that was read (a script reading f["frames"] failed on these)
    assert files["huge.png"].keys() == files["face.png"].keys() and files["huge.png"]["frames"] is None
    assert files["cut.png"]["frames"] == 3 and files["cut.png"]["error"] is None, files["cut.png"]
    assert "cut.png: the animation ends after frame 3, cut short (a truncated file?): scored on those" in result.stderr
    for name in ("face.png", "caf\ufffd.jpg", "caf\ufffd.webp"):
        assert files[name]["verdict"] == "real" and len(files[name]["tracks"]) == 1, files[name]
