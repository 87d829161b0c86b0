"""``stream-guard doctor``: what this installation has, and what is missing."""
from __future__ import annotations

import glob
import importlib
import importlib.metadata as md
import os
import platform
import sys
from typing import TextIO

OK, WARN, MISSING = "ok", "warn", "missing"


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _opencv_builds() -> list[str]:
    names = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
    return [f"{n} {_version(n)}" for n in names if _version(n)]


def _screen_capture_row() -> tuple[str, str, str]:
    """How ``screen`` would be captured here: the desktop portal on Wayland, x11grab on X11."""
    from stream_guard.sources.portal_screen import portal_readiness
    from stream_guard.sources.screencast_portal import wayland_session

    if wayland_session():
        ready, detail = portal_readiness()
        return (OK if ready else WARN), "screen capture", f"Wayland session: {detail}"
    display = os.environ.get("DISPLAY")
    if not display:
        return WARN, "screen capture", "no DISPLAY and no Wayland session: only screen:DISPLAY or screen:portal"
    from stream_guard.errors import SourceError
    from stream_guard.sources.x11_display import screen_contents

    try:
        monitors, windows = screen_contents(display)
    except (SourceError, ImportError) as e:
        return WARN, "screen capture", f"X11 display {display} (x11grab); cannot list its monitors and windows ({e})"
    names = ", ".join(m.name for m in monitors)
    return OK, "screen capture", (f"X11 display {display} (x11grab); {len(monitors)} monitor(s) ({names}); "
                                  f"window:TITLE sees {len(windows)} application window(s)")


def _sound_row() -> tuple[str, str, str]:
    """What ``--sound`` would record here: the sound server's default output monitor and input."""
    from stream_guard.errors import StreamGuardError
    from stream_guard.sources.sound_device import check_sound_device_support, list_sound_sources

    try:
        check_sound_device_support()
        sources, monitor, default_input = list_sound_sources()
    except StreamGuardError as e:
        return WARN, "sound (--sound)", str(e)
    return OK, "sound (--sound)", (f"desktop = {monitor or 'none (no default output)'}; "
                                   f"mic = {default_input or 'none (no default input)'}; {len(sources)} source(s)")


def _checks() -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    rows.append((OK, "python", f"{platform.python_version()} on {sys.platform} ({platform.machine()})"))
    for dist in ("numpy", "av", "onnxruntime", "onnxruntime-gpu"):
        v = _version(dist)
        if v or dist != "onnxruntime-gpu":
            rows.append((OK if v else MISSING, dist, v or "not installed"))
    cv = _opencv_builds()
    gui = [c for c in cv if "headless" not in c]
    rows.append((WARN if gui or len(cv) != 1 else OK, "opencv",
                 ", ".join(cv) + (" (a GUI OpenCV build can crash screen capture: keep only the headless one)"
                                  if gui else "")))
    try:
        import onnxruntime as ort

        rows.append((OK, "providers", ", ".join(ort.get_available_providers())))
    except ImportError as e:
        rows.append((MISSING, "providers", str(e)))
    try:
        importlib.import_module("tkinter")
        display = os.environ.get("DISPLAY") if sys.platform.startswith("linux") else "n/a"
        rows.append((OK if display else WARN, "window (--show)",
                     "tkinter ok" + ("" if display else "; DISPLAY not set, no window possible")))
    except ImportError:
        rows.append((MISSING, "window (--show)", "tkinter not installed (e.g. apt install python3-tk)"))
    if sys.platform.startswith("linux"):
        rows.append(_screen_capture_row())
        rows.append(_sound_row())
    cams = sorted(glob.glob("/dev/video*")) if sys.platform.startswith("linux") else []
    rows.append((OK if cams else WARN, "webcams", ", ".join(cams) if cams else "no /dev/video* devices"))
    for what, dist, extra in (("virtual camera", "pyvirtualcam", "virtualcam"), ("HEIC photos", "pillow-heif", "heic")):
        v = _version(dist)  # optional extras: what they add is unavailable without them, nothing else
        rows.append((OK if v else WARN, what,
                     f"{dist} {v}" if v else f"{dist} not installed: pip install 'stream-guard[{extra}]'"))
    from stream_guard.paths import bundled_model
    from stream_guard.pipeline import default_model_dir, shipped_model_names

    from stream_guard.faces.landmarks import MODEL_FILE as FACE_MESH_MODEL

    for what, name in (("face detector", "face_detection_full_range.onnx"),
                       ("face detector", "face_detection_short_range.onnx"), ("face mesh", FACE_MESH_MODEL)):
        try:
            present = bundled_model(name).is_file()
        except FileNotFoundError:
            present = False
        rows.append((OK if present else MISSING, what, name + ("" if present else " not found")))
    try:
        from stream_guard.model.contract import load_model_spec
        from stream_guard.model.provenance import model_digest

        spec = load_model_spec(default_model_dir())
        rows.append((OK if spec.trained else WARN, "deepfake model",
                     f"{spec.name} {spec.version}" + ("" if spec.trained else " (UNTRAINED placeholder)")
                     + f", sha256 {model_digest(spec)}; --model NAME: {', '.join(shipped_model_names())}"))
        rows.append((OK, "thresholds", "; ".join(p.describe() for p in spec.named_thresholds())
                     + " (held-out clips; --threshold NAME or a number)"))
    except Exception as e:  # noqa: BLE001 - doctor reports, it does not fail
        rows.append((MISSING, "deepfake model", str(e)))
    return rows


def run_doctor(out: TextIO) -> int:
    """Print one line per check; exit 1 if something required is missing."""
    rows = _checks()
    for status, what, detail in rows:
        print(f"[{status:>7}] {what:16} {detail}", file=out)
    return 1 if any(s == MISSING for s, _, _ in rows) else 0
