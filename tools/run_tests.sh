#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian/Ubuntu machine, then run it.
#   bash tools/run_tests.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# systemd-analyze checks the unit; a real MQTT broker; D-Bus, PipeWire and GStreamer for Wayland screen capture;
# a window manager (openbox) for window capture as on a desktop; PipeWire's PulseAudio server for --sound
APT_PACKAGES=(xvfb x11-utils espeak-ng chromium systemd mosquitto dbus pipewire wireplumber pipewire-bin
              gstreamer1.0-tools gstreamer1.0-pipewire gstreamer1.0-plugins-base gstreamer1.0-plugins-good openbox
              pipewire-pulse)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  # "installed", not merely known: a removed package whose config files remain is not
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,train]"
# The real mediapipe package is the reference our ONNX face detector is compared with.
# --no-deps: it declares a GUI OpenCV build that must not shadow the headless one
# (see tests/REFERENCE_DEPS.md); these are the few packages its face detector imports.
.venv/bin/python -m pip install -q --no-deps mediapipe==1.2.3
.venv/bin/python -m pip install -q absl-py==2.5.1 certifi flatbuffers==25.12.19 matplotlib==3.11.2
export MPLBACKEND=Agg

# TensorFlow + tf2onnx for tests/test_keras_conversion.py, in their own venv: they must not
# pin numpy/protobuf under the main one. ~1.7 GB; ~30 s to create from a warm local index.
[ -x .venv-keras/bin/python ] || "$PY" -m venv .venv-keras
.venv-keras/bin/python -m pip install -q --upgrade pip
.venv-keras/bin/python -m pip install -q "tensorflow-cpu==2.21.*" "tf2onnx==1.17.*" "onnxruntime==1.32.*" "numpy==2.4.*"

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
