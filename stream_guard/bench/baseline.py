"""The seed project's method as a cost baseline: ResNeXt-50 (32x4d) on the whole frame at
224x224, every frame, then an LSTM (2048 -> 2048) over the last few frames' features.

Random weights (this measures cost, not accuracy). The ONNX graphs are built with
``onnx.helper`` (no PyTorch) into a cache folder on first use (~230 MB, not shipped);
batch norm is folded into each convolution's bias, as an exported inference graph has it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from stream_guard.errors import StreamGuardError

BASELINE_NAME = "resnext50_32x4d+lstm2048"
CACHE_VERSION = "v1"
INPUT_SIZE = 224
FEATURES = 2048
LSTM_WINDOW = 8  # frames of features the LSTM reads per step
GROUPS = 32
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (planes, blocks, stride)
OPSET = 17


def cache_dir() -> Path:
    """``$STREAM_GUARD_CACHE`` or ``$XDG_CACHE_HOME/stream_guard`` (default ``~/.cache/stream_guard``)."""
    root = os.environ.get("STREAM_GUARD_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stream_guard"


class _Graph:
    """Accumulates nodes and random initialisers for one ONNX graph."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def weight(self, shape: tuple[int, ...], std: float) -> str:
        from onnx import numpy_helper

        name = self.name("w")
        array = self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, group: int = 1, relu: bool = True) -> str:
        from onnx import helper

        w = self.weight((c_out, c_in // group, k, k), (2.0 / (c_in // group * k * k)) ** 0.5)
        b = self.weight((c_out,), 0.01)
        y = self.name("conv")
        pad = k // 2
        self.nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[stride, stride],
                                           pads=[pad] * 4, group=group))
        return self.relu(y) if relu else y

    def relu(self, x: str) -> str:
        from onnx import helper

        y = self.name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [y]))
        return y

    def bottleneck(self, x: str, c_in: int, planes: int, stride: int) -> tuple[str, int]:
        """ResNeXt block: 1x1 -> grouped 3x3 (32 groups, width 4 per group at planes 64) -> 1x1, + shortcut."""
        from onnx import helper

        width = planes * 4 // 64 * GROUPS
        c_out = planes * 4
        y = self.conv(x, c_in, width, 1)
        y = self.conv(y, width, width, 3, stride=stride, group=GROUPS)
        y = self.conv(y, width, c_out, 1, relu=False)
        short = x if (stride == 1 and c_in == c_out) else self.conv(x, c_in, c_out, 1, stride=stride, relu=False)
        s = self.name("add")
        self.nodes.append(helper.make_node("Add", [y, short], [s]))
        return self.relu(s), c_out


def build_resnext50(rng: np.random.Generator):
    """ResNeXt-50 (32x4d) feature extractor: ``frames [N,3,224,224]`` -> ``features [N,2048]``."""
    from onnx import TensorProto, helper

    g = _Graph(rng)
    x = g.conv("frames", 3, 64, 7, stride=2)
    pooled = g.name("pool")
    g.nodes.append(helper.make_node("MaxPool", [x], [pooled], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, c = pooled, 64
    for planes, blocks, stride in STAGES:
        for i in range(blocks):
            x, c = g.bottleneck(x, c, planes, stride if i == 0 else 1)
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    g.nodes.append(helper.make_node("Flatten", ["gap"], ["features"]))
    graph = helper.make_graph(
        g.nodes, "resnext50_32x4d",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["N", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", FEATURES])], g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def build_lstm(rng: np.random.Generator):
    """LSTM 2048 -> 2048 over ``features [T,1,2048]``, last hidden state -> 2 logits (as the seed)."""
    from onnx import TensorProto, helper, numpy_helper

    h = FEATURES
    std = 1.0 / h ** 0.5
    inits = [numpy_helper.from_array(rng.standard_normal(shape, dtype=np.float32) * np.float32(std), name)
             for name, shape in (("W", (1, 4 * h, FEATURES)), ("R", (1, 4 * h, h)), ("B", (1, 8 * h)),
                                 ("wo", (h, 2)))]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    nodes = [
        helper.make_node("LSTM", ["features", "W", "R", "B"], ["", "h"], hidden_size=h),
        helper.make_node("Squeeze", ["h", "axis0"], ["h2"]),
        helper.make_node("MatMul", ["h2", "wo"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "lstm2048",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["T", 1, FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def ensure_baseline(folder: Path | None = None) -> Path:
    """Build the two graphs into the cache folder unless they are there; returns the folder."""
    try:
        import onnx
    except ImportError as e:
        raise StreamGuardError("the baseline needs the onnx package: pip install 'stream-guard[bench]' "
                               "(or run with --no-baseline)") from e

    folder = folder or cache_dir() / f"baseline-{BASELINE_NAME}-{CACHE_VERSION}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StreamGuardError(f"cannot create the baseline cache folder {folder} ({e.strerror}); "
                               "set STREAM_GUARD_CACHE") from e
    rng = np.random.default_rng(0)
    for file_name, build in (("resnext50.onnx", build_resnext50), ("lstm.onnx", build_lstm)):
        path = folder / file_name
        if path.is_file() and path.stat().st_size > 0:
            continue
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            onnx.save(build(rng), str(tmp))
            tmp.replace(path)  # atomic: a half-written cache file is never picked up
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise StreamGuardError(f"cannot write the baseline model to {folder} ({e.strerror})") from e
    return folder


@dataclass(frozen=True, slots=True)
class BaselineResult:
    frames: int
    seconds: float
    fps: float
    ms_per_frame: float
    threads: int
    cpu_ms_per_frame: float

    def to_json(self) -> dict:
        return {"model": BASELINE_NAME, "weights": "random", "input": f"whole frame {INPUT_SIZE}x{INPUT_SIZE}",
                "lstm_window": LSTM_WINDOW, "frames": self.frames, "seconds": round(self.seconds, 3),
                "fps": round(self.fps, 3), "ms_per_frame": round(self.ms_per_frame, 2),
                "cpu_ms_per_frame": round(self.cpu_ms_per_frame, 2),
                "intra_op_threads": self.threads}


def run_baseline(frames: Iterable[np.ndarray], max_seconds: float, threads: int = 0,
                 folder: Path | None = None, min_frames: int = 3) -> BaselineResult:
    """Run the baseline on decoded RGB frames until ``max_seconds`` (at least ``min_frames``).
    Per frame: resize to 224, normalise, CNN, LSTM over the last ``LSTM_WINDOW`` features.
    Decode time is left out (in the baseline's favour). ``threads`` 0 = ONNX Runtime's default."""
    import onnxruntime as ort

    folder = ensure_baseline(folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    cnn = ort.InferenceSession(str(folder / "resnext50.onnx"), options, providers=["CPUExecutionProvider"])
    lstm = ort.InferenceSession(str(folder / "lstm.onnx"), options, providers=["CPUExecutionProvider"])
    mean = np.array([0.485, 0.456, 0.406], np.float32) * 255
    inv_std = 1.0 / (np.array([0.229, 0.224, 0.225], np.float32) * 255)

    def step(image: np.ndarray, window: list[np.ndarray]) -> None:
        x = (cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)
             - mean) * inv_std
        window.append(cnn.run(None, {"frames": x.transpose(2, 0, 1)[None]})[0])
        del window[:-LSTM_WINDOW]
        lstm.run(None, {"features": np.stack(window)})

    frames = iter(frames)
    warm = next(frames)
    step(warm, [])  # first-call set-up is not counted
    window: list[np.ndarray] = []
    n = 0
    cpu_started = time.process_time()
    started = time.perf_counter()
    for image in frames:
        step(image, window)
        n += 1
        elapsed = time.perf_counter() - started
        if elapsed >= max_seconds and n >= min_frames:
            break
    elapsed = max(1e-9, time.perf_counter() - started)
    cpu_ms = (time.process_time() - cpu_started) * 1e3 / max(1, n)
    return BaselineResult(n, elapsed, n / elapsed, elapsed * 1e3 / max(1, n), threads, cpu_ms)
