"""Property-based fuzzing of what users hand us: source arguments, video containers,
model.json, evaluate's manifest, the reports ``compare`` reads and the evidence logs ``verify``
reads. Each must end in a result or a :class:`StreamGuardError`, never another exception (which
the CLI would show as a traceback).

CI runs a few examples; for a long local run:  HYPOTHESIS_PROFILE=long pytest tests/test_fuzz.py
"""
from __future__ import annotations

import functools
import json
import os
import string
import tempfile
from pathlib import Path

import av
import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stream_guard.compare import load_scored_files
from stream_guard.errors import ModelError, StreamGuardError
from stream_guard.evaluate import read_manifest
from stream_guard.model.contract import load_model_spec
from stream_guard.sources.probe import DEFAULT_MAX_MEGAPIXELS, check_frame_size
from stream_guard.sources.pyav_source import PyAVSource
from stream_guard.sources.spec import SourceSpec, parse_source, redact_text, redact_url
from stream_guard.verify_evidence import check_folder

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=4000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
fuzz = settings.get_profile(PROFILE)

# ------------------------------------------------------------------ source arguments

SCHEMES = ["rtsp", "rtsps", "http", "https", "rtmp", "udp", "srt", "file", "gopher", "webcam", "screen", "C", "x"]
url_text = st.builds(
    lambda scheme, user, password, host, port, path: (
        f"{scheme}://{user}{':' + password if password is not None else ''}{'@' if user or password else ''}"
        f"{host}{':' + port if port is not None else ''}/{path}"),
    st.sampled_from(SCHEMES),
    st.text(string.printable, max_size=8),
    st.none() | st.text(string.printable, max_size=8),
    st.text(string.ascii_letters + string.digits + ".-[]:%", max_size=20),
    st.none() | st.text(string.digits + "-+x", max_size=7),
    st.text(max_size=20),
)
source_text = st.text() | url_text | st.sampled_from(["demo", "screen", "screen:", "webcam:", "webcam:0", "~",
                                                       "~nobody_here/x.mp4", "file://", "/dev/video0", "-"])


@fuzz
@given(source_text)
@example("~\x00")  # found by the long run: a NUL made expanduser raise ValueError
@example("0" * 300)  # found by the long run: a name too long for the file system raised OSError
@example("FILE://[]")  # found by the long run: urlsplit's ValueError on a file:// URL's IPv6-looking host
@example("file://[")
def test_parse_source_gives_a_spec_or_a_stream_guard_error(text: str) -> None:
    try:
        spec = parse_source(text)
    except StreamGuardError as e:
        assert str(e)
        return
    assert isinstance(spec, SourceSpec) and spec.kind in ("file", "network", "webcam", "screen", "demo", "pipe")


@fuzz
@given(url_text, st.text(string.ascii_letters + string.digits, min_size=6, max_size=12))
def test_redacted_url_never_shows_the_password(url: str, secret: str) -> None:
    scheme, rest = url.split("://", 1)
    with_secret = f"{scheme}://user:{secret}@{rest.split('@')[-1]}"
    assert f"user:{secret}" not in redact_url(with_secret)


@fuzz
@given(st.sampled_from(SCHEMES), st.text(string.ascii_letters + string.digits + "#?/@:%", min_size=1, max_size=12),
       st.from_regex(r"[a-z0-9.-]{1,12}(:[0-9]{1,5})?(/[a-zA-Z0-9._/-]{0,12})?", fullmatch=True))
def test_a_password_typed_with_url_characters_is_hidden_whole(scheme: str, secret: str, rest: str) -> None:
    """A password with # ? / @ typed as it is (not percent-encoded) leaked through the URL's own parsing:
    ``rtsp://viewer:pa#ss@host`` showed in full. Everything between the scheme and the host is hidden,
    in a URL and in a message quoting one."""
    with_secret = f"{scheme}://viewer:{secret}@{rest}"
    assert redact_url(with_secret) == f"{scheme}://***@{rest}"
    assert redact_text(f"failed: {with_secret} (retrying)") == f"failed: {scheme}://***@{rest} (retrying)"


# ------------------------------------------------------------------ containers


@functools.lru_cache(maxsize=None)
def seed_videos() -> tuple[bytes, ...]:
    """Small valid files to mutate: MP4 (index last and first), Matroska, MPEG-TS."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-seed-"))
    out = []
    for name, codec, options in [("a.mp4", "libx264", {}), ("b.mp4", "libx264", {"movflags": "faststart"}),
                                 ("c.mkv", "libx264", {}), ("d.ts", "mpeg2video", {})]:
        path = folder / name
        with av.open(str(path), "w", options=options) as container:
            stream = container.add_stream(codec, rate=10)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            for i in range(6):
                frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        out.append(path.read_bytes())
    return tuple(out)


@st.composite
def mutated_video(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(seed_videos())))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "splice", "zero"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            data = data[:pos]
        elif op == "splice":
            data[pos:pos] = draw(st.binary(max_size=64))
        else:
            data[pos:pos + draw(st.integers(1, 256))] = b"\0" * 16
        if not data:
            break
    return bytes(data)


def _open_and_read(data: bytes, suffix: str) -> None:
    """Open ``data`` as a file the way the pipeline does, read a few frames, close."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        path = Path(tmp) / f"input{suffix}"
        path.write_bytes(data)
        source = PyAVSource(parse_source(str(path)))
        try:
            info = source.open()
            check_frame_size(info.source_id, info.width, info.height, DEFAULT_MAX_MEGAPIXELS)
            for i, frame in enumerate(source.frames()):
                assert frame.image.ndim == 3 and frame.image.shape[2] == 3
                if i >= 4:
                    break
        except StreamGuardError as e:
            assert str(e)
        finally:
            source.close()


@fuzz
@given(st.binary(max_size=4096), st.sampled_from([".mp4", ".mkv", ".ts", ".avi", ".bin"]))
def test_random_bytes_are_refused_cleanly(data: bytes, suffix: str) -> None:
    _open_and_read(data, suffix)


@fuzz
@given(mutated_video(), st.sampled_from([".mp4", ".mkv", ".ts"]))
def test_mutated_videos_decode_or_fail_cleanly(data: bytes, suffix: str) -> None:
    _open_and_read(data, suffix)


# ------------------------------------------------------------------ model.json

VALID_MODEL = {
    "format": "stream_guard-model/1", "name": "m", "version": "1", "trained": False, "description": "",
    "encoder": "encoder.onnx", "temporal": "temporal.onnx", "input_size": 112, "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5], "crop_margin": 0.3, "embedding_dim": 64, "window": 8, "sample_hz": 5.0,
    "threshold": 0.5, "calibration": {"a": 1.0, "b": 0.0},
    "operating_points": {"default": {"threshold": 0.5}, "quiet": {"threshold": 0.9, "reals_flagged": 0.1}},
}
def _json_containers(inner: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           _json_containers, max_leaves=12)


@st.composite
def mutated_model_json(draw) -> dict:
    meta = json.loads(json.dumps(VALID_MODEL))
    for _ in range(draw(st.integers(1, 4))):
        key = draw(st.sampled_from(sorted(VALID_MODEL)))
        if draw(st.booleans()):
            meta.pop(key, None)
        else:
            meta[key] = draw(json_values)
    return meta


def _load(text: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-model-") as tmp:
        folder = Path(tmp)
        (folder / "encoder.onnx").write_bytes(b"x")
        (folder / "temporal.onnx").write_bytes(b"x")
        (folder / "model.json").write_bytes(text)
        try:
            spec = load_model_spec(folder)
        except ModelError as e:
            assert str(e)
            return
        assert 16 <= spec.input_size <= 1024 and 0.0 <= spec.threshold <= 1.0
        assert all(0.0 <= p.threshold <= 1.0 for p in spec.named_thresholds())


@fuzz
@given(mutated_model_json())
def test_mutated_model_json_loads_or_raises_model_error(meta: dict) -> None:
    _load(json.dumps(meta).encode())


@fuzz
@given(json_values | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_any_json_or_text_loads_or_raises_model_error(value) -> None:
    _load(value.encode("utf-8", "surrogatepass") if isinstance(value, str) else json.dumps(value).encode())


@fuzz
@given(st.binary(max_size=200))
def test_any_bytes_load_or_raise_model_error(data: bytes) -> None:
    _load(data)


# ------------------------------------------------------------------ files the other commands read


def _in_a_file(name: str, data: bytes, read):
    """``read(path)`` of ``data`` written as ``name`` in a fresh folder; a StreamGuardError is a clean refusal."""
    with tempfile.TemporaryDirectory(prefix="fuzz-file-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            return read(path)
        except StreamGuardError as e:
            assert str(e)
            return None


manifest_text = st.builds(lambda header, body: header + body,
                          st.sampled_from(["file\tlabel\n", "label\tfile\tx\n", " file \t label \n", "", "file\n"]),
                          st.lists(st.sampled_from(list("\t\n\r\"' ab/.\x00é") + ["real", "fake"]),
                                   max_size=40).map("".join))


@fuzz
@given(manifest_text | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
@example("file\tlabel\n\x00\treal")  # found by the long run: a NUL in a file's name (resolve() refused it)
def test_any_manifest_gives_rows_or_a_stream_guard_error(text: str) -> None:
    rows = _in_a_file("MANIFEST.tsv", text.encode("utf-8", "surrogatepass"), read_manifest)
    assert rows is None or (rows and all(r.label in ("real", "fake") for r in rows))


report_entry = st.fixed_dictionaries({}, optional={"file": json_values | st.text(max_size=12),
                                                   "label": json_values | st.sampled_from(["real", "fake"]),
                                                   "score": json_values | st.floats(0, 1)})
report_json = st.fixed_dictionaries({}, optional={"files": json_values | st.lists(report_entry | json_values,
                                                                                    max_size=4),
                                                  "manifest": json_values | st.text(max_size=12),
                                                  "model": json_values})


@fuzz
@given(report_json | json_values)
def test_any_report_loads_or_raises_a_stream_guard_error(report) -> None:
    _in_a_file("report.json", json.dumps(report).encode(), load_scored_files)


log_record = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(["alert", "clip", "clip_started"]) | json_values,
    "clip": st.sampled_from(["20261206T154801.801Z_face1.mp4", "", "..", "a/b.mp4", "x\x00.mp4"]) | json_values,
    "frame_image": st.sampled_from(["20261206T154801.801Z_face1_frame.jpg", "."]) | json_values,
    "face_image": json_values, "sha256": json_values, "frame_sha256": json_values,
    "model_sha256": json_values, "model": json_values, "model_version": json_values})
log_line = st.builds(json.dumps, log_record) | st.text(max_size=30)


@fuzz
@given(st.lists(log_line, max_size=6), st.lists(log_line, max_size=6))
def test_any_evidence_logs_give_a_check_or_a_stream_guard_error(alert_lines: list[str], clip_lines: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-evidence-") as tmp:
        folder = Path(tmp)
        (folder / "alerts.jsonl").write_text("\n".join(alert_lines), encoding="utf-8", errors="surrogatepass")
        (folder / "clips.jsonl").write_text("\n".join(clip_lines), encoding="utf-8", errors="surrogatepass")
        (folder / "20261206T154801.801Z_face1.mp4").write_bytes(b"clip")
        check = check_folder(folder)
        assert check.trustworthy in (True, False)
