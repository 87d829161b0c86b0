"""Build an UNTRAINED random-weights model folder in the stream_guard model contract.

Its scores mean nothing: it exists so the pipeline, the tests and the CLI can run
before (or without) a trained model, with ``"trained": false`` in its model.json so
the CLI warns. Needs only the ``onnx`` package (no PyTorch).

    python -m tools.placeholder_model OUT_DIR [--size 112] [--dim 64] [--window 8]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stream_guard.model.contract import ModelSpec

OPSET = 17


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array.astype(np.float32), name)


def build_encoder(size: int, dim: int, rng: np.random.Generator) -> onnx.ModelProto:
    """Two strided convolutions, global pooling and a linear layer: crops -> embeddings."""
    inits = [
        _init("w1", rng.normal(0, 0.3, (16, 3, 5, 5))), _init("b1", np.zeros(16)),
        _init("w2", rng.normal(0, 0.1, (32, 16, 3, 3))), _init("b2", np.zeros(32)),
        _init("w3", rng.normal(0, 0.2, (32, dim))), _init("b3", np.zeros(dim)),
    ]
    nodes = [
        helper.make_node("Conv", ["crops", "w1", "b1"], ["c1"], strides=[4, 4], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "w3"], ["m"]),
        helper.make_node("Add", ["m", "b3"], ["embeddings"]),
    ]
    graph = helper.make_graph(
        nodes, "placeholder_encoder",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", dim])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def build_temporal(dim: int, hidden: int, rng: np.random.Generator) -> onnx.ModelProto:
    """A GRU over ``[N, T, D]`` embeddings, its last hidden state -> one logit."""
    inits = [
        _init("W", rng.normal(0, 0.2, (1, 3 * hidden, dim))),
        _init("R", rng.normal(0, 0.2, (1, 3 * hidden, hidden))),
        _init("B", np.zeros((1, 6 * hidden))),
        _init("wo", rng.normal(0, 0.5, (hidden, 1))), _init("bo", np.zeros(1)),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
    ]
    nodes = [
        helper.make_node("Transpose", ["embeddings"], ["tnd"], perm=[1, 0, 2]),
        helper.make_node("GRU", ["tnd", "W", "R", "B"], ["", "h"], hidden_size=hidden),
        helper.make_node("Squeeze", ["h", "axis0"], ["h2"]),
        helper.make_node("MatMul", ["h2", "wo"], ["lo"]),
        helper.make_node("Add", ["lo", "bo"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "placeholder_temporal",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["N", "T", dim])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def write_placeholder_model(
    out_dir: str | Path, size: int = 112, dim: int = 64, hidden: int = 32, window: int = 8,
    sample_hz: float = 10.0, seed: int = 0,
) -> ModelSpec:
    """Write encoder.onnx, temporal.onnx and model.json; return the spec."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, model in (("encoder.onnx", build_encoder(size, dim, rng)),
                        ("temporal.onnx", build_temporal(dim, hidden, rng))):
        onnx.checker.check_model(model)
        onnx.save(model, str(out / name))
    spec = ModelSpec(
        folder=out.resolve(), name="untrained-placeholder", version="0.0.0", trained=False,
        description="UNTRAINED random weights: scores are meaningless. For tests and wiring only.",
        encoder_path=out.resolve() / "encoder.onnx", temporal_path=out.resolve() / "temporal.onnx",
        input_size=size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_margin=0.25,
        embedding_dim=dim, window=window, sample_hz=sample_hz, threshold=0.5,
        calibration_a=1.0, calibration_b=0.0,
    )
    spec.save()
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    spec = write_placeholder_model(args.out_dir, size=args.size, dim=args.dim, window=args.window, seed=args.seed)
    print(f"wrote untrained placeholder model to {spec.folder}")


if __name__ == "__main__":
    main()
