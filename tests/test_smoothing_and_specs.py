"""Verdict hysteresis, provider choice, source parsing and which model folder --model means."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from stream_guard.errors import ConfigError, ProviderUnavailableError, SourceNotFoundError
from stream_guard.model.providers import resolve_providers
from stream_guard.model.smoothing import SmoothingOptions, VerdictSmoother
from stream_guard.paths import bundled_model
from stream_guard.pipeline import default_model_dir, model_folder
from stream_guard.sources.spec import (file_source_text, file_url_path, parse_source, redact_url,
                                       with_input_options)
from stream_guard.types import Verdict


def _run(probabilities: list[float], **options) -> list[Verdict]:
    smoother = VerdictSmoother(0.5, SmoothingOptions(**options))
    out = []
    for p in probabilities:
        smoother.update(p)
        out.append(smoother.verdict)
    return out


def test_uncertain_until_enough_samples() -> None:
    assert _run([0.99, 0.99], min_samples=3) == [Verdict.UNCERTAIN] * 2


def test_noise_around_threshold_does_not_flip_verdict() -> None:
    verdicts = _run([0.9] * 10 + [0.55, 0.45] * 20, alpha=0.3)
    assert verdicts[9] is Verdict.FAKE
    assert set(verdicts[10:]) == {Verdict.FAKE}


@pytest.mark.parametrize("threshold", [0.5, 0.807, 0.05])
def test_hysteresis_band_is_symmetric_in_log_odds(threshold: float) -> None:
    """A threshold near 0 or 1 keeps a band both edges can be crossed (a fixed +-0.1 would put
    0.807's upper edge at 0.907, where a steady 0.87 never turns fake)."""
    import math
    smoother = VerdictSmoother(threshold)
    logit = math.log(threshold / (1 - threshold))
    up, down = (math.log(p / (1 - p)) - logit for p in (smoother.upper, smoother.lower))
    assert smoother.lower < threshold < smoother.upper and math.isclose(up, -down) and math.isclose(up, math.log(1.5))
    if threshold == 0.5:
        assert math.isclose(smoother.lower, 0.4) and math.isclose(smoother.upper, 0.6)
    steady_fake, steady_real = 1 / (1 + math.exp(-(logit + 0.6))), 1 / (1 + math.exp(-(logit - 0.6)))
    smoother = VerdictSmoother(threshold, SmoothingOptions(min_samples=1))
    for _ in range(10):
        smoother.update(steady_fake)
    assert smoother.verdict is Verdict.FAKE
    for _ in range(10):
        smoother.update(steady_real)
    assert smoother.verdict is Verdict.REAL


def test_verdict_flips_once_each_way() -> None:
    verdicts = _run([0.95] * 15 + [0.05] * 15)
    changes = [b for a, b in zip(verdicts, verdicts[1:]) if a is not b]
    assert changes == [Verdict.FAKE, Verdict.REAL]


def test_update_reports_changes() -> None:
    smoother = VerdictSmoother(0.5, SmoothingOptions(min_samples=1, alpha=1.0))
    assert smoother.update(0.9) is True and smoother.update(0.9) is False and smoother.update(0.1) is True


def test_providers_auto_and_explicit() -> None:
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers("auto", available) == available
    assert resolve_providers("cpu", available) == ["CPUExecutionProvider"]
    with pytest.raises(ProviderUnavailableError, match="tensorrt"):
        resolve_providers("tensorrt,cpu", available)
    with pytest.raises(ConfigError):
        resolve_providers("quantum", available)


@pytest.mark.parametrize("text,kind,fmt", [
    ("demo", "demo", None),
    ("rtsp://cam.local/stream", "network", None),
    ("https://example.org/live.m3u8", "network", None),
    ("rtmp://127.0.0.1/live/key", "network", None),
    ("udp://239.0.0.1:1234", "network", "mpegts"),  # not guessed: see tests/test_udp_join.py
    ("srt://127.0.0.1:9000", "network", "mpegts"),
])
def test_parse_source_kinds(text: str, kind: str, fmt: str | None) -> None:
    spec = parse_source(text)
    assert spec.kind == kind and spec.format == fmt


@pytest.mark.parametrize(("text", "option", "fmt"), [
    ("udp://127.0.0.1:1234", "h264", "h264"), ("udp://127.0.0.1:1234", "auto", None),
    ("tcp://127.0.0.1:1234", "mpegts", "mpegts")])
def test_the_input_format_can_be_chosen(text: str, option: str, fmt: str | None) -> None:
    spec = with_input_options(parse_source(text), [("format", option), ("fflags", "nobuffer")])
    assert spec.format == fmt and spec.options["fflags"] == "nobuffer" and "format" not in spec.options


@pytest.mark.parametrize("name", ["nope", "ipod"])  # ipod: a muxer only
def test_an_unknown_input_format_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match=f"format={name}: FFmpeg has no such input format"):
        with_input_options(parse_source("udp://127.0.0.1:1234"), [("format", name)])


def test_rtsp_defaults_to_tcp_and_low_latency() -> None:
    spec = parse_source("rtsp://127.0.0.1:8554/x")
    assert spec.options["rtsp_transport"] == "tcp" and spec.options["analyzeduration"] == "0"
    assert spec.is_live


@pytest.mark.parametrize("platform,fmt,url", [
    ("linux", "x11grab", ":7"), ("win32", "gdigrab", "desktop"), ("darwin", "avfoundation", "Capture screen 0:none"),
])
def test_screen_per_platform(platform: str, fmt: str, url: str) -> None:
    spec = parse_source("screen::7" if platform == "linux" else "screen", platform=platform)
    assert (spec.format, spec.url, spec.kind) == (fmt, url, "screen")


def test_a_screen_region_is_captured_natively_where_the_platform_can() -> None:
    x11 = parse_source("screen::7@640x480+960+520", platform="linux")
    assert (x11.url, x11.options["video_size"], x11.display_name) == (":7+960,520", "640x480", "screen :7 640x480+960+520")
    gdi = parse_source("screen@640x480+960+520", platform="win32")
    assert (gdi.url, gdi.options["offset_x"], gdi.options["offset_y"], gdi.options["video_size"]) == (
        "desktop", "960", "520", "640x480")
    assert "video_size" not in parse_source("screen::7", platform="linux").options
    with pytest.raises(ConfigError, match="not supported on macOS"):
        parse_source("screen@640x480+0+0", platform="darwin")


@pytest.mark.parametrize("text,problem", [("screen::7@640x480", "is not WIDTHxHEIGHT"),
                                          ("screen::7@640x480-5+0", "is not WIDTHxHEIGHT"),
                                          ("screen::7@", "is not WIDTHxHEIGHT"),
                                          ("screen::7@16x480+0+0", "too small")])
def test_bad_screen_regions_are_named(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_source(text, platform="linux")


@pytest.mark.parametrize("platform,fmt,url", [("win32", "dshow", "video=Integrated Camera"),
                                              ("darwin", "avfoundation", "0:none")])
def test_webcam_per_platform(platform: str, fmt: str, url: str) -> None:
    spec = parse_source("webcam:Integrated Camera" if platform == "win32" else "webcam:0", platform=platform)
    assert (spec.format, spec.url) == (fmt, url)


def test_missing_linux_webcam_is_a_clear_error() -> None:
    with pytest.raises(SourceNotFoundError, match="/dev/video7"):
        parse_source("webcam:7", platform="linux")


def test_a_file_url_names_its_file_as_a_browser_writes_it(tmp_path: Path) -> None:
    """Copied from a browser's address bar: percent-escapes, ``localhost``; a Windows drive; another host."""
    clip = tmp_path / "My clip é.mp4"
    clip.write_bytes(b"x")
    for url in (f"file://{tmp_path}/My%20clip%20%C3%A9.mp4", f"file://localhost{tmp_path}/My%20clip%20%C3%A9.mp4"):
        assert parse_source(url).url == str(clip)
    assert file_url_path("file:///C:/Videos/My%20clip.mp4", "win32") == "C:/Videos/My clip.mp4"
    with pytest.raises(ConfigError, match="on another computer \\(nas\\)"):
        parse_source("file://nas/share/clip.mp4")


def test_a_file_is_named_to_the_pipeline_so_that_it_reads_back_as_that_file(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Files found in a scanned folder may be named as other sources are; each must stay that file."""
    import os

    monkeypatch.chdir(tmp_path)
    names = ["demo", "-", "screen@2x.mp4", "window:a.mp4", " lead.mp4", "trail.mp4 ", "'q.mp4'", "~x.mp4",
             os.fsdecode(b"caf\xe9.mp4"), "plain.mp4"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
        spec = parse_source(file_source_text(Path(name)))
        assert spec.kind == "file" and Path(spec.url).resolve() == (tmp_path / name).resolve(), name
    assert file_source_text(Path("plain.mp4")) == "plain.mp4"  # named as typed where that reads back


def test_stream_urls_need_a_valid_port(tmp_path: Path) -> None:
    """udp:// with no port failed after 10 s of waiting as "cannot open stream (Immediate exit requested)", a
    port out of range as "(Invalid argument)": both are typing mistakes, said at once."""
    for url, message in (("udp://127.0.0.1", "udp:// needs the port"), ("srt://host", "srt:// needs the port"),
                         ("rtsp://127.0.0.1:99999/x", "the port is not a number"),
                         ("http://cam.local:port/x", "the port is not a number")):
        with pytest.raises(ConfigError, match=message):
            parse_source(url)
    assert parse_source("udp://@:1234").url == "udp://@:1234"


def test_a_folder_or_named_pipe_given_as_a_file_says_what_it_is(tmp_path: Path) -> None:
    import os

    from stream_guard.sources.spec import missing_file

    os.mkfifo(tmp_path / "pipe.mp4")
    assert "is a folder, not a video file" in str(missing_file("clips", tmp_path))
    assert "is not a regular file (a named pipe" in str(missing_file("pipe.mp4", tmp_path / "pipe.mp4"))
    assert str(missing_file("gone.mp4", tmp_path / "gone.mp4")) == "no such file: gone.mp4"


def test_a_url_missing_its_colon_or_a_slash_is_pointed_out(tmp_path: Path) -> None:
    for typed, meant in (("rtsp//127.0.0.1:8554/live", "rtsp://127.0.0.1:8554/live"),
                         ("https:/cdn.example.com/a.mp4", "https://cdn.example.com/a.mp4")):
        with pytest.raises(SourceNotFoundError, match=f"did you mean {re.escape(meant)} \\?"):
            parse_source(typed)
    with pytest.raises(SourceNotFoundError) as e:
        parse_source(str(tmp_path / "rtsp" / "clip.mp4"))
    assert "did you mean" not in str(e.value)


def test_quotes_pasted_around_a_source_are_not_part_of_it(tmp_path: Path) -> None:
    """Windows' "Copy as path" quotes a path, a file dragged into a terminal comes in single quotes."""
    clip = tmp_path / "My clip.mp4"
    clip.write_bytes(b"x")
    assert parse_source(f'"{clip}"').url == parse_source(f"'{clip}' ").url == str(clip)
    assert parse_source('"rtsp://cam/live"').url == "rtsp://cam/live"
    with pytest.raises(ConfigError, match="empty source"):
        parse_source('""')


@pytest.mark.parametrize(("text", "hinted"), [
    ("192.168.1.20:554/stream1", True), ("192.168.1.20", True), ("www.example.com/live.m3u8", True),
    ("cam.local:8554", True), ("clips/a.mp4", False), ("my.clip.mp4", False), ("clips.v2/a.mp4", False)])
def test_an_address_typed_without_its_scheme_is_hinted(text: str, hinted: bool) -> None:
    with pytest.raises(SourceNotFoundError) as caught:
        parse_source(text)
    assert str(caught.value).startswith(f"no such file: {text}")
    assert ("a network address needs its scheme: rtsp://" in str(caught.value)) == hinted


def test_redact_url() -> None:
    assert redact_url("rtsp://admin:pw@10.0.0.2:554/s") == "rtsp://***@10.0.0.2:554/s"
    assert redact_url("rtsp://10.0.0.2/s") == "rtsp://10.0.0.2/s"
    assert redact_url("rtsp://viewer:pa#ss@10.0.0.2:9/s") == "rtsp://***@10.0.0.2:9/s"  # a raw # in the password
    assert redact_url("https://cdn.example.com/@alice/a.mp4") == "https://cdn.example.com/@alice/a.mp4"


def test_a_password_with_a_raw_hash_is_hidden_in_the_error_that_names_it() -> None:
    """It was printed in full, as "the port is not a number" (the # cut the URL's host part short)."""
    with pytest.raises(ConfigError) as e:
        parse_source("rtsp://viewer:pa#ss@127.0.0.1:9/stream")
    assert "pa#ss" not in str(e.value) and "percent-encoded (%23 for #" in str(e.value)


def test_model_by_shipped_name_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert model_folder(Path("untrained-placeholder")) == bundled_model("untrained-placeholder")
    (tmp_path / "untrained-placeholder").mkdir()  # a folder of that name where the user is wins
    assert model_folder(Path("untrained-placeholder")) == Path("untrained-placeholder")
    assert model_folder(None) == default_model_dir()
