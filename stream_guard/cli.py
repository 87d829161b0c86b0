"""The ``stream-guard`` command: parse arguments -> config -> run. Thin on purpose."""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import shlex
import signal
import sys
from pathlib import Path
from typing import Callable, Sequence

from stream_guard import __version__
from stream_guard.errors import ConfigError, OutputError, StoppedBeforeStart, StreamGuardError

log = logging.getLogger("stream_guard")

EXIT_OK = 0
EXIT_INTERRUPTED = 130


def _megapixels(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of megapixels")
    return value


def _stream_id(text: str) -> int:
    from stream_guard.sources.video_stream_choice import parse_stream_id

    try:
        return parse_stream_id(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a stream ID: a number such as 2, or 0x100") from None


def _threshold(text: str) -> float | str:
    """A number 0..1, or an operating point's name that the model resolves (``ModelSpec.threshold_for``);
    names are lower case in model.json, and matched in any case here (QUIET is quiet)."""
    from stream_guard.model.contract import POINT_NAME

    if POINT_NAME.fullmatch(text.strip().lower()):
        return text.strip().lower()
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number 0..1 or the name of one of the model's operating "
                                         "points (stream-guard doctor lists them)") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _add_run_options(p: argparse.ArgumentParser, show: bool = True) -> None:
    """The options of a pipeline run; ``show``: with --show (evaluate's files are read far faster than they play)."""
    _add_model_options(p)
    p.add_argument("--detect-every", type=_detect_every, default=0, metavar="N",
                   help="run the face detector every N-th frame and track in between (default auto: "
                        "every frame, every 3rd for frames searched in tiles: 1400 px or more, or any size with "
                        "--detect-tiles always)")
    if show:
        p.add_argument("--show", action="store_true", help="show the annotated video in a window")


def _min_face(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 10000.0:
        raise argparse.ArgumentTypeError("must be a face height in pixels, 0 or more")
    return value


def _detect_every(text: str) -> int:
    """``auto`` (0) or a positive frame count."""
    if text == "auto":
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be 'auto' or a whole number of frames") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 'auto' or at least 1")
    return value


def _input_option(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip() or key != key.strip():
        raise argparse.ArgumentTypeError(f"'{text}' is not KEY=VALUE (e.g. video_size=1280x720)")
    return key, value


def _folder(text: str) -> Path:
    """A folder option's value: '-' (standard output) is no folder, and would make one named '-'."""
    if text.strip() == "-":
        raise argparse.ArgumentTypeError("takes a folder; '-' (standard output) is not one")
    return Path(text)


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _clip_pad(text: str) -> float:
    from stream_guard.outputs.alert_clips import MAX_PAD_S

    value = float(text)
    if not 0.0 <= value <= MAX_PAD_S:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_PAD_S:g} seconds")
    return value


def _duration(text: str) -> float:
    value = float(text)
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _segment_seconds(text: str) -> float:
    value = float(text)
    if not value >= 1.0:
        raise argparse.ArgumentTypeError("must be at least 1 second")
    return value


def _add_alert_rule_options(p: argparse.ArgumentParser) -> None:
    """When alerts are raised and cleared (the alert outputs, and ``evaluate``'s live replay)."""
    p.add_argument("--alert-raise", type=_count, default=3, metavar="N",
                   help="raise a fake alert after N consecutive fake windows of a face (default 3)")
    p.add_argument("--alert-clear", type=_count, default=5, metavar="N",
                   help="clear it after N consecutive real windows (default 5)")


def _add_alert_options(p: argparse.ArgumentParser) -> None:
    """Alerts, the virtual camera and the pushed stream (``watch``, ``demo`` and ``gui``)."""
    p.add_argument("--webhook", action="append", default=[], metavar="URL",
                   help="POST each alert to this http(s) URL (repeatable): JSON, or a chat message for Slack, "
                        "Google Chat, Discord and ntfy.sh URLs; [FORMAT=]URL picks json, slack, discord or text")
    p.add_argument("--mqtt", metavar="URL",
                   help="publish alerts, a retained state and availability to an MQTT broker: "
                        "mqtt[s]://[user:password@]host[:port][/topic-prefix] (default prefix stream_guard)")
    p.add_argument("--mqtt-discovery", action="store_true", default=None,
                   help="with --mqtt: announce a 'Deepfake on screen' sensor to Home Assistant (MQTT discovery)")
    _add_alert_rule_options(p)
    p.add_argument("--speak", action="store_true", help="say alerts aloud (espeak-ng or pyttsx3)")
    p.add_argument("--snapshots", type=_folder, metavar="DIR",
                   help="save the frame and the face of each fake alert as JPEGs in DIR, every alert in "
                        "DIR/alerts.jsonl")
    p.add_argument("--snapshot-keep", type=_count, metavar="N",
                   help="keep the pictures of the newest N alerts in DIR (default 1000)")
    p.add_argument("--clips", type=_folder, metavar="DIR",
                   help="save an MP4 of the video around each fake alert in DIR, each clip in DIR/clips.jsonl")
    p.add_argument("--clip-pad", dest="clip_pad_s", type=_clip_pad, metavar="S",
                   help="seconds of video kept before an alert and after it clears (default 5, at most 60)")
    p.add_argument("--clip-keep", type=_count, metavar="N", help="keep the newest N clips in DIR (default 100)")
    p.add_argument("--virtual-cam", action="store_true",
                   help="send the annotated video to a virtual camera (pip install 'stream-guard[virtualcam]')")
    p.add_argument("--stream-to", metavar="URL",
                   help="push the annotated video live to a streaming server: rtmp(s)://, rtsp:// (RECORD) or "
                        "udp:// (MPEG-TS)")


def _add_serve_options(p: argparse.ArgumentParser) -> None:
    """The HTTP live view (``watch`` and ``demo``)."""
    p.add_argument("--serve", metavar="[HOST:]PORT",
                   help="serve a live view (dashboard, OBS overlay, metrics) on HOST:PORT (default host 127.0.0.1; "
                        "another host needs a token: $STREAM_GUARD_TOKEN or --serve-token-file)")
    p.add_argument("--serve-token-file", type=Path, metavar="PATH",
                   help="file whose first line is the token every --serve request must carry")


class _Parser(argparse.ArgumentParser):
    """Reads ``@FILE`` arguments as options files: shell-like words, any number a line, ``#`` comments."""

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        try:  # a byte-order mark (a file saved by Notepad) is not part of the first word
            return shlex.split(_without_comment(arg_line.lstrip("\ufeff")))
        except ValueError as e:  # an unclosed quote
            self.error(f"options file line {arg_line.strip()!r}: {e}")


def _without_comment(line: str) -> str:
    """``line`` up to its ``#`` comment, as a shell reads one: a ``#`` that starts a word, outside quotes
    (``--out take#2.mp4`` and a password's ``#`` are kept; shlex's own comments end any word at a ``#``)."""
    quote, escaped = None, False
    for i, c in enumerate(line):
        if escaped:
            escaped = False
        elif c == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _add_sound_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sound", dest="sound_device", metavar="DEVICE",
                        help="record the sound that --out, --clips, --stream-to and --serve carry from a sound "
                             "device instead of the source (live sources; Linux, PulseAudio or PipeWire): desktop "
                             "(what the computer plays: a call on the screen), mic (the default input) or part of "
                             "a sound source's name or description; several, comma-separated, are mixed "
                             "(desktop,mic: both sides of a call)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="stream-guard", description="Live deepfake monitor for video streams.",
                     fromfile_prefix_chars="@",
                     epilog="@FILE anywhere on the command line stands for the options in FILE (shell-like words, "
                            "# comments); later options override earlier ones.")
    parser.add_argument("--version", action="version", version=f"stream_guard {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    # -v is accepted after the command too; SUPPRESS keeps the subcommand from resetting it to 0
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    watch = sub.add_parser("watch", parents=[common], help="analyse a file, stream, webcam or screen",
                           description="SOURCE: a video file, rtsp:// rtmp:// http(s):// URL, webcam:N, "
                                       "screen[:DISPLAY][@MONITOR|@WxH+X+Y] (on Wayland, or screen:portal: the "
                                       "desktop's share dialog), window:TITLE (one window, X11) or demo.")
    watch.add_argument("source", metavar="SOURCE")
    watch.add_argument("--out", type=Path, metavar="FILE",
                       help="write the annotated video (.mp4 .mkv .mov .webm .avi)")
    watch.add_argument("--out-segment", dest="out_segment_s", type=_segment_seconds, metavar="S",
                       help="split --out into files of S seconds, each named after FILE and its UTC start time")
    watch.add_argument("--out-keep", type=_count, metavar="N", help="keep the newest N --out-segment files")
    watch.add_argument("--events", type=Path, metavar="FILE", help="write JSON Lines events ('-' for stdout)")
    watch.add_argument("--realtime", action="store_true", help="pace a file to its frame rate, like a live stream")
    watch.add_argument("--max-frames", type=_count, metavar="N", help="stop after N frames")
    _add_max_megapixels(watch, "refuse frames larger than M megapixels")
    watch.add_argument("--video-stream", type=_stream_id, metavar="ID",
                       help="analyse this video stream when SOURCE has several: its PID in an MPEG-TS with "
                            "several programs (0x100), its variant in an HLS playlist (0 = the first listed), its "
                            "track ID in MP4; default: the largest within --max-megapixels")
    watch.add_argument("--deinterlace", choices=("auto", "always", "off"), default="auto",
                       help="deinterlace (bwdif) the frames the stream flags as interlaced (auto, default), "
                            "every frame (always: a source that sends interlaced video flagged progressive), "
                            "or none (off)")
    watch.add_argument("--tone-map", choices=("auto", "off"), default="auto",
                       help="map HDR video (PQ, HLG: phones record it) to SDR for analysis (auto, default), "
                            "or read it as it is (off: dim and flat, faster)")
    _add_sound_option(watch)
    watch.add_argument("--input-option", dest="input_options", type=_input_option, action="append", default=[],
                       metavar="KEY=VALUE",
                       help="an FFmpeg option for opening SOURCE, repeatable: a webcam's video_size=1280x720, "
                            "framerate=30 or input_format=yuyv422; rtsp_transport=udp; user_agent=...; "
                            "format=NAME reads SOURCE as that format (FFmpeg's -f; udp:// and srt:// are read "
                            "as mpegts unless format=auto)")
    _add_run_options(watch)
    _add_alert_options(watch)
    _add_serve_options(watch)

    demo = sub.add_parser("demo", parents=[common], help="run on the embedded demo video (no camera or network needed)")
    demo.add_argument("--out-dir", type=_folder, default=Path("stream_guard_demo"), metavar="DIR",
                      help="folder for demo.mp4, events.jsonl and summary.json (default ./stream_guard_demo)")
    demo.add_argument("--seconds", type=_duration, default=10.0, help="length of the demo video (default 10)")
    _add_run_options(demo)
    _add_alert_options(demo)
    _add_serve_options(demo)

    evaluate = sub.add_parser("evaluate", parents=[common], help="measure detection quality on labelled clips",
                              description="MANIFEST: a TSV with columns 'file' (relative to its folder; videos "
                                          "or images) and 'label' (real/fake). Prints a per-family table.")
    evaluate.add_argument("--manifest", type=Path, required=True, metavar="PATH")
    evaluate.add_argument("--json", type=Path, metavar="OUT",
                          help="write the full report as JSON (-: to standard output; the table then goes to stderr)")
    evaluate.add_argument("--plot", type=Path, metavar="OUT.png",
                          help="draw the ROC curves (all files, each family) and the scores against the threshold "
                               "(.png, .svg, .pdf or .jpg)")
    evaluate.add_argument("--max-frames", type=_count, metavar="N", help="analyse at most N frames per file")
    _add_run_options(evaluate, show=False)
    _add_alert_rule_options(evaluate)

    compare = sub.add_parser("compare", parents=[common], help="is model A better than model B on the same clips?",
                             description="A, B: 'stream-guard evaluate --json' reports of the same manifest, one "
                                         "per model. Prints both AUCs and the paired bootstrap interval of A - B.")
    compare.add_argument("report_a", type=Path, metavar="A.json")
    compare.add_argument("report_b", type=Path, metavar="B.json")
    compare.add_argument("--json", type=Path, metavar="OUT",
                         help="write the comparison as JSON (-: to standard output; the table then goes to stderr)")

    _add_scan_and_gui(sub, common)
    from stream_guard.bench.command import add_parser as add_bench_parser

    add_bench_parser(sub, common)
    sub.add_parser("doctor", parents=[common], help="report versions, providers, devices and what is missing")
    verify = sub.add_parser("verify", parents=[common],
                            help="is the evidence in --snapshots/--clips folders unaltered?",
                            description="Checks each picture and clip against the SHA-256 its folder's log recorded, "
                                        "flags evidence files no log names, and says which model judged them.")
    verify.add_argument("folders", type=Path, nargs="+", metavar="DIR",
                        help="a --snapshots or --clips folder (or its alerts.jsonl or clips.jsonl)")
    unit = sub.add_parser("systemd-unit", parents=[common], help="print a systemd unit that runs this installation",
                          description="Prints a template unit, stream-guard@.service: instance NAME runs the "
                                      "options in ARGS_DIR/NAME.args with a watchdog and restarts. Save it as "
                                      "/etc/systemd/system/stream-guard@.service.")
    from stream_guard.systemd_unit import DEFAULT_ARGS_DIR

    unit.add_argument("--args-dir", type=Path, default=DEFAULT_ARGS_DIR, metavar="DIR",
                      help="folder of the instances' options files (default /etc/stream-guard)")
    return parser


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """Model and detector options for ``scan`` and ``gui`` (no outputs)."""
    p.add_argument("--model", type=Path, metavar="DIR", help="model folder, or the name of a shipped one such as "
                   "deepfake-ensemble (default: the shipped default model)")
    p.add_argument("--provider", default="auto", metavar="P",
                   help="ONNX Runtime providers: auto, or a comma list of tensorrt,cuda,coreml,directml,cpu")
    p.add_argument("--threshold", type=_threshold, metavar="T",
                   help="fake threshold 0..1, or a named operating point of the model: default (the model's "
                        "threshold), quiet (fewer false alarms), sensitive (more fakes caught); "
                        "`stream-guard doctor` lists what each flags")
    p.add_argument("--detector", choices=("full", "short"), default="full",
                   help="face detector: full-range (far faces, default) or short-range (faces near the camera)")
    p.add_argument("--detect-tiles", choices=("auto", "always", "off"), default="auto",
                   help="also search for faces in four overlapping tiles of the frame: auto (frames of 1400 px or "
                        "more, and pictures), always (a video call's gallery view: small faces in a smaller window), "
                        "or off; about 3x the detector's cost, so by default it then runs on every 3rd frame")
    p.add_argument("--min-face", dest="min_face_px", type=_min_face, metavar="PX",
                   help="judge only faces whose box is at least PX pixels high; smaller ones are tracked and "
                        "marked 'too small' (default 40; 0: faces of every size)")


def _add_max_megapixels(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--max-megapixels", type=_megapixels, metavar="M",
                   help=f"{what} (default 9, up to 4K; 8K needs 34)")


def _add_scan_and_gui(sub, common: argparse.ArgumentParser) -> None:
    scan = sub.add_parser("scan", parents=[common], help="score video and image files and folders, write a report",
                          description="PATH: files and folders (searched recursively for videos and images), "
                                      "or the URL of a recording (an MP4 or finished HLS playlist over http(s)...). "
                                      "Exit code 0: no fake found, 10: at least one fake found, 3: no fake "
                                      "found but a file could not be read.")
    scan.add_argument("paths", nargs="+", metavar="PATH")
    scan.add_argument("--report", type=Path, metavar="DIR",
                      help="write DIR/report.json and DIR/report.html (with plots and thumbnails)")
    scan.add_argument("--jsonl", metavar="FILE|-",
                      help="write a JSON line per file as soon as it is done (its report record), after a start "
                           "line and before a summary line; - writes them to standard output (the lines for "
                           "people then go to stderr)")
    scan.add_argument("--max-frames", type=_count, metavar="N", help="analyse at most N frames per file")
    _add_max_megapixels(scan, "refuse videos whose frames are larger than M megapixels, and shrink larger "
                              "pictures to M")
    scan.add_argument("--explain", nargs="?", const="fake", choices=("fake", "all"), metavar="fake|all",
                      help="with --report: show what each face's score rests on (an occlusion map of its most "
                           "suspicious window) for the faces judged fake (default), or for all faces; "
                           "about 4-8 s a face on a 2-core CPU")
    _add_model_options(scan)
    gui = sub.add_parser("gui", parents=[common], help="desktop app: pick a file, webcam, screen or URL and watch",
                         description="Opens a window; SOURCE (optional) pre-fills the source field.")
    gui.add_argument("source", nargs="?", default="", metavar="SOURCE")
    gui.add_argument("--start", action="store_true", help="start analysing SOURCE right away")
    _add_sound_option(gui)
    _add_model_options(gui)
    _add_alert_options(gui)


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="stream-guard: %(levelname)s: %(message)s")


def _config(args: argparse.Namespace, source: str, out: Path | None, events: Path | None,
            realtime: bool = False, max_frames: int | None = None, demo_seconds: float = 20.0):
    from stream_guard.config import ModelOptions, OutputOptions, RunConfig, SourceOptions, analysis_options
    from stream_guard.faces.detector import detector_options

    if args.detect_every < 0:
        raise StreamGuardError("--detect-every must be 'auto' or at least 1")
    return RunConfig(
        source=SourceOptions(spec=source, realtime=realtime, max_frames=max_frames, demo_seconds=demo_seconds,
                             deinterlace=getattr(args, "deinterlace", "auto"),
                             input_options=tuple(getattr(args, "input_options", ())),
                             tone_map=getattr(args, "tone_map", "auto") == "auto",
                             video_stream=getattr(args, "video_stream", None),
                             sound_device=getattr(args, "sound_device", None),
                             **({"max_megapixels": args.max_megapixels}
                                if getattr(args, "max_megapixels", None) else {})),
        model=ModelOptions(model_dir=args.model, provider=args.provider, threshold=args.threshold),
        detector=detector_options(args.detector, args.detect_tiles),
        analysis=analysis_options(args.detect_every, args.min_face_px),
        outputs=OutputOptions(out_path=out, events_path=events, show=getattr(args, "show", False),
                              **_recording_outputs(args),
                              **_alert_outputs(args), **_serve_outputs(args)),
    )


def _recording_outputs(args: argparse.Namespace) -> dict:
    """OutputOptions fields of ``--out-segment`` and ``--out-keep`` (``watch`` only)."""
    if not hasattr(args, "out_segment_s"):
        return {}
    given = _dependent_options(args, "out", out_segment_s="--out-segment", out_keep="--out-keep")
    if "out_keep" in given and "out_segment_s" not in given:
        raise ConfigError("--out-keep needs --out-segment")
    return given


def _alert_outputs(args: argparse.Namespace) -> dict:
    """OutputOptions fields of ``_add_alert_options`` and ``_add_alert_rule_options`` (absent for
    commands without them)."""
    from stream_guard.outputs.alerts import AlertOptions

    rule = {"alerts": AlertOptions(raise_windows=args.alert_raise, clear_windows=args.alert_clear)} \
        if hasattr(args, "alert_raise") else {}
    if not hasattr(args, "webhook"):
        return rule
    from stream_guard.outputs.mqtt import parse_mqtt_url
    from stream_guard.outputs.webhook import parse_webhook

    evidence = {**_dependent_options(args, "snapshots", snapshot_keep="--snapshot-keep"),
                **_dependent_options(args, "clips", clip_pad_s="--clip-pad", clip_keep="--clip-keep")}
    webhooks = tuple(args.webhook)
    for spec in webhooks:
        parse_webhook(spec)  # a mistake stops the run at start-up, in one line
    return {**rule, "webhooks": webhooks,
            "speak": args.speak, "virtual_cam": args.virtual_cam, "snapshots": args.snapshots, "clips": args.clips,
            "stream_to": None if args.stream_to is None else _stream_url(args.stream_to),
            "mqtt": None if args.mqtt is None else parse_mqtt_url(args.mqtt), **evidence,
            **_dependent_options(args, "mqtt", mqtt_discovery="--mqtt-discovery")}


def _stream_url(url: str) -> str:
    """``--stream-to``'s URL, checked at start-up (a bad scheme is one line, exit 2)."""
    from stream_guard.outputs.live_stream import stream_target

    stream_target(url)
    return url


def _dependent_options(args: argparse.Namespace, main: str, **flags: str) -> dict:
    """The given options that were set (``dest -> value``); each needs ``--main`` too."""
    given = {dest: getattr(args, dest) for dest in flags if getattr(args, dest) is not None}
    if given and getattr(args, main) is None:
        from stream_guard.errors import ConfigError

        raise ConfigError(f"{flags[next(iter(given))]} needs --{main}")
    return given


def _serve_outputs(args: argparse.Namespace) -> dict:
    """The OutputOptions field of ``--serve`` (absent for commands without it)."""
    if getattr(args, "serve", None) is None:
        if getattr(args, "serve_token_file", None) is not None:
            from stream_guard.errors import ConfigError

            raise ConfigError("--serve-token-file needs --serve")
        return {}
    from stream_guard.outputs.http.options import serve_options

    return {"serve": serve_options(args.serve, args.serve_token_file)}


def _run_with_signals(config, progress: bool = False):
    """Run a pipeline; SIGINT/SIGTERM ask it to stop cleanly (outputs are finalised). ``progress``: a bar of
    a file's frames on stderr when it is a terminal (log lines then print above it)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from stream_guard.outputs.progress import FrameProgress
    from stream_guard.pipeline import Pipeline
    from stream_guard.service import ServiceHeartbeat
    from stream_guard.sources.spec import parse_source

    service = ServiceHeartbeat.from_environment()  # started by systemd (Type=notify)
    bar = progress and sys.stderr.isatty()
    sinks = [FrameProgress(parse_source(config.source.spec).display_name, sys.stderr,
                           config.source.max_frames)] if bar else []
    pipeline = Pipeline(config, extra_sinks=sinks, service=service)
    handler: Callable = lambda signum, frame: pipeline.stop()  # noqa: E731
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with logging_redirect_tqdm() if bar else contextlib.nullcontext():
            return pipeline.run()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if service is not None:
            service.close()


def track_line(track: dict) -> str:
    """A face's verdict at the end of the run and what led to it: ``real (score 0.86; judged fake for
    11.9 s of its 20.0 s; mean 0.83, peak 0.92; 200 windows, 0.0-20.0 s)``. The verdict is the live one,
    with its hysteresis, so the time judged fake says what the last verdict alone would hide."""
    parts = ["score --" if track["score"] is None else f"score {track['score']:.2f}"]
    if track.get("fake_s"):
        parts.append(f"judged fake for {track['fake_s']:.1f} s of its {track['last_s'] - track['first_s']:.1f} s")
    if track["mean_score"] is not None:
        parts.append(f"mean {track['mean_score']:.2f}, peak {track['max_score']:.2f}")
    windows = "window" if track["n_scores"] == 1 else "windows"
    parts.append(f"{track['n_scores']} {windows}, {track['first_s']:.1f}-{track['last_s']:.1f} s")
    return f"{track['verdict'] or 'uncertain'} ({'; '.join(parts)})"


def _print_summary(summary, stream=sys.stderr) -> None:
    lat = "n/a" if summary.latency_p50_ms is None else f"{summary.latency_p50_ms:.1f} ms"
    print(f"{summary.frames_processed} frames in {summary.duration_s:.1f} s ({summary.fps:.1f} fps), "
          f"{summary.frames_dropped} dropped, latency p50 {lat}, {len(summary.tracks)} face track(s)", file=stream)
    for t in summary.tracks:
        print(f"  face #{t['track_id']}: {track_line(t)}", file=stream)
    if not summary.provenance.model_trained:
        print(f"  note: model '{summary.provenance.model}' is UNTRAINED: scores are meaningless", file=stream)


def _exit_code(summary) -> int:
    """0, or 130 when stopped by a signal; 5, with one line saying so, when an output failed during the run
    (a disk that filled up: a script must not take the recording for a whole one)."""
    failed = summary.failed_outputs_text()
    if failed is not None:
        print(f"stream-guard: error: {failed} (the error is above)", file=sys.stderr)
        return OutputError.exit_code
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    config = _config(args, args.source, args.out, args.events, args.realtime, args.max_frames)
    summary = _run_with_signals(config, progress=args.events != Path("-"))  # not between events on the terminal
    _print_summary(summary)
    return _exit_code(summary)


def cmd_demo(args: argparse.Namespace) -> int:
    from stream_guard.writable import check_writable_file, write_text

    out_dir: Path = args.out_dir
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"--out-dir {out_dir}: cannot create ({e.strerror})") from e
    try:
        (out_dir / "events.jsonl").unlink(missing_ok=True)  # the folder holds this run's outputs only
    except OSError as e:
        raise OutputError(f"--out-dir {out_dir}: cannot replace the earlier events.jsonl ({e.strerror})") from e
    check_writable_file(out_dir / "summary.json", "--out-dir")  # now, not after the run
    config = _config(args, "demo", out_dir / "demo.mp4", out_dir / "events.jsonl", demo_seconds=args.seconds,
                     realtime=args.serve is not None)  # a live view plays the demo at its own pace
    summary = _run_with_signals(config)
    write_text(out_dir / "summary.json", json.dumps(summary.to_json(), indent=2) + "\n", "--out-dir")
    _print_summary(summary)
    print(f"demo outputs in {out_dir.resolve()}/: demo.mp4 (annotated video), events.jsonl, summary.json",
          file=sys.stderr)
    return _exit_code(summary)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import threading

    from stream_guard.evaluate import evaluate, print_table, read_manifest, write_json
    from stream_guard.writable import check_outputs_spare_the_source, check_writable_file, is_stdout

    config = _config(args, "demo", None, None)
    outputs = ((args.json, "--json"), (args.plot, "--plot"))
    check_outputs_spare_the_source(Path(args.manifest), outputs, "the manifest: writing it would destroy its labels")
    for path, option in outputs:
        if path is not None:
            check_writable_file(path, option)  # now, not after an evaluation that may take hours
    if args.plot is not None:
        from stream_guard.evaluate_plot import plot_format

        plot_format(args.plot)
    rows = read_manifest(args.manifest)
    for row in rows:
        if isinstance(row.path, Path):
            check_outputs_spare_the_source(row.path, outputs,
                                           "one of the manifest's files: writing it would destroy it")

    def progress(i: int, n: int, name: str) -> None:
        print(f"[{i + 1}/{n}] {name}", file=sys.stderr, flush=True)

    def file_sinks(name: str) -> list:
        """On a terminal, a bar of the file's frames under its line (a long clip shows it is going on)."""
        from stream_guard.outputs.progress import FrameProgress

        return [FrameProgress(name, sys.stderr, args.max_frames)] if sys.stderr.isatty() else []

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()  # the file being scored is stopped part-way: no report is written from part of the manifest
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = evaluate(args.manifest, config, progress=progress, max_frames=args.max_frames,
                          file_sinks=file_sinks, should_stop=stop.is_set, rows=rows)
    except KeyboardInterrupt:
        print("stream-guard: interrupted: no report written (its figures would be of part of the manifest)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    print_table(report, sys.stderr if is_stdout(args.json) else sys.stdout)  # `--json -`: stdout is the JSON's
    if args.json is not None:
        write_json(report, args.json)
    if args.plot is not None:
        from stream_guard.evaluate_plot import plot_evaluation

        plot_evaluation(report, args.plot)
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from stream_guard.compare import compare_reports, print_comparison
    from stream_guard.evaluate import write_json
    from stream_guard.writable import check_outputs_spare_the_source, is_stdout

    for report in (args.report_a, args.report_b):  # an evaluation may have taken hours
        check_outputs_spare_the_source(Path(report), [(args.json, "--json")],
                                       "one of the reports compared: writing it would destroy it")
    result = compare_reports(args.report_a, args.report_b)
    print_comparison(result, sys.stderr if is_stdout(args.json) else sys.stdout)
    if args.json is not None:
        write_json(result, args.json)
    return EXIT_OK


def cmd_scan(args: argparse.Namespace) -> int:
    from stream_guard.scan.command import run_scan

    return run_scan(args)


def cmd_gui(args: argparse.Namespace) -> int:
    from stream_guard.config import OutputOptions
    from stream_guard.gui.app import run_gui

    return run_gui(args, OutputOptions(**_alert_outputs(args)))


def cmd_bench(args: argparse.Namespace) -> int:
    from stream_guard.bench.command import run_bench

    return run_bench(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from stream_guard.doctor import run_doctor

    return run_doctor(sys.stdout)


def cmd_verify(args: argparse.Namespace) -> int:
    from stream_guard.verify_evidence import run_verify

    return run_verify(args.folders, sys.stdout)


def cmd_systemd_unit(args: argparse.Namespace) -> int:
    from stream_guard.systemd_unit import write_unit

    if not args.args_dir.is_absolute():
        from stream_guard.errors import ConfigError

        raise ConfigError(f"--args-dir {args.args_dir}: must be an absolute path (systemd needs one)")
    write_unit(sys.stdout, args.args_dir)
    return EXIT_OK


COMMANDS = {"watch": cmd_watch, "demo": cmd_demo, "evaluate": cmd_evaluate, "compare": cmd_compare,
            "doctor": cmd_doctor, "scan": cmd_scan, "gui": cmd_gui, "bench": cmd_bench,
            "systemd-unit": cmd_systemd_unit, "verify": cmd_verify}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line, with its ``@FILE`` options files read (which imports the commands' modules: a second
    or two to Ctrl-C in). A file that is not UTF-8 text, or that names itself, is a :class:`ConfigError`."""
    try:
        return _parser().parse_args(argv)
    except UnicodeDecodeError as e:
        raise ConfigError(f"an @ options file is not UTF-8 text ({e.reason} at byte {e.start}): save it as UTF-8") \
            from None
    except RecursionError:
        raise ConfigError("an @ options file names itself, or files that name each other, without end") from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parse(argv)
        _setup_logging(args.verbose)
        return COMMANDS[args.command](args)
    except StoppedBeforeStart as e:
        print(f"stream-guard: interrupted ({e})", file=sys.stderr)
        return e.exit_code
    except StreamGuardError as e:
        print(f"stream-guard: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:  # anything else here is a bug: keep its traceback
            raise
        # a path given on the command line that no file system can hold, wherever it was first used
        print(f"stream-guard: error: {e.filename}: the name is too long for the file system", file=sys.stderr)
        return ConfigError.exit_code
    except KeyboardInterrupt:
        print("stream-guard: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
