"""Convert MediaPipe's BlazeFace face detectors (.tflite) to ONNX for stream_guard.

Run with a Python that has ``tensorflow-cpu`` and ``tf2onnx`` (a throwaway venv; they are
build-time tools only, never runtime dependencies of stream_guard)::

    python3.11 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0
    pip download --no-deps mediapipe==0.10.21 -d /tmp/mpw    # the wheel that still ships the models
    /tmp/tfenv/bin/python tools/convert_face_detector.py /tmp/mpw/mediapipe-0.10.21-*.whl

It copies the two .tflite files out of the wheel into ``models/`` (licence record and the
reference test), writes ``models/face_detection_short_range.onnx`` and
``models/face_detection_full_range.onnx``, and checks both against the TFLite interpreter.

The full-range model stores its weights sparse (TFLite ``DENSIFY`` ops), which tf2onnx
cannot read. We run the TFLite reference kernels once, take the dense value each
``DENSIFY`` op produces (weights only, so independent of the input), write those values
into the flatbuffer as ordinary constant buffers, drop the ``DENSIFY`` ops and convert
the resulting dense model.

The ONNX graphs get a symbolic batch dimension (``batch``), so one ONNX Runtime call can
run several frames.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

WHEEL_DIR = "mediapipe/modules/face_detection/"
SHORT_TFLITE = "face_detection_short_range.tflite"
FULL_TFLITE = "face_detection_full_range_sparse.tflite"
SHORT_ONNX = "face_detection_short_range.onnx"
FULL_ONNX = "face_detection_full_range.onnx"
OPSET = 17
OUTPUT_NAMES = ("regressors", "classificators")


def extract_tflite(wheel: Path, models: Path) -> tuple[Path, Path]:
    """Copy the two face detection .tflite files out of the mediapipe wheel into ``models``."""
    out = []
    with zipfile.ZipFile(wheel) as zf:
        for name in (SHORT_TFLITE, FULL_TFLITE):
            target = models / name
            with zf.open(WHEEL_DIR + name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            out.append(target)
    return out[0], out[1]


def tflite_interpreter(path: Path, preserve: bool = False):
    """A TFLite interpreter on the reference kernels (no XNNPACK delegate)."""
    import tensorflow as tf

    interp = tf.lite.Interpreter(
        model_path=str(path),
        experimental_preserve_all_tensors=preserve,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    return interp


def dense_values(path: Path) -> dict[int, np.ndarray]:
    """Dense value of every DENSIFY op's output, keyed by the op's sparse input tensor index."""
    interp = tflite_interpreter(path, preserve=True)
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    interp.invoke()
    values = {}
    for op in interp._get_ops_details():  # noqa: SLF001 (public enough: used by TF's own tools)
        if op["op_name"] == "DENSIFY":
            values[int(op["inputs"][0])] = np.array(interp.get_tensor(int(op["outputs"][0])))
    return values


def densify(src: Path, dst: Path) -> int:
    """Write ``dst``: ``src`` with every sparse constant stored dense and its DENSIFY op removed."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    values = dense_values(src)
    model = flatbuffer_utils.read_model(str(src))
    graph = model.subgraphs[0]
    densify_codes = {
        i for i, code in enumerate(model.operatorCodes)
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.DENSIFY
    }
    rename: dict[int, int] = {}
    kept = []
    for op in graph.operators:
        if op.opcodeIndex not in densify_codes:
            kept.append(op)
            continue
        sparse_idx, dense_idx = int(op.inputs[0]), int(op.outputs[0])
        tensor = graph.tensors[sparse_idx]
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(values[sparse_idx].tobytes(), np.uint8)
        model.buffers.append(buffer)
        tensor.buffer = len(model.buffers) - 1
        tensor.sparsity = None
        tensor.shape = np.array(values[sparse_idx].shape, np.int32)
        rename[dense_idx] = sparse_idx
    for op in kept:
        op.inputs = np.array([rename.get(int(i), int(i)) for i in op.inputs], np.int32)
    graph.operators = kept
    flatbuffer_utils.write_model(model, str(dst))
    return len(rename)


def to_onnx(tflite: Path, onnx_path: Path) -> None:
    """Convert with tf2onnx, then rename the outputs and make the batch dimension symbolic."""
    import onnx
    import tf2onnx

    model_proto, _ = tf2onnx.convert.from_tflite(str(tflite), opset=OPSET)
    model_proto = make_batch_dynamic(model_proto)
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(onnx_path))


def make_batch_dynamic(model):
    """Name the graph input ``input`` and outputs ``regressors``/``classificators`` (sorted by
    last dimension), give them a symbolic batch, and turn constant Reshape targets that pin
    the batch to 1 into 0 (ONNX: copy that dimension from the input)."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    outputs = sorted(graph.output, key=lambda o: -o.type.tensor_type.shape.dim[2].dim_value)
    renames = {graph.input[0].name: "input"}
    renames.update({o.name: new for o, new in zip(outputs, OUTPUT_NAMES)})
    for node in graph.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
        node.output[:] = [renames.get(n, n) for n in node.output]
    for value in list(graph.input) + list(graph.output):
        value.name = renames.get(value.name, value.name)
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    reshape_shapes = {n.input[1] for n in graph.node if n.op_type == "Reshape"}
    for init in graph.initializer:
        if init.name in reshape_shapes:
            shape = numpy_helper.to_array(init).copy()
            if shape.ndim == 1 and shape.size > 1 and shape[0] == 1:
                shape[0] = 0
                init.CopyFrom(numpy_helper.from_array(shape, init.name))
    for node in graph.node:  # Reshape targets held in Constant nodes
        if node.op_type == "Constant" and node.output[0] in reshape_shapes:
            shape = numpy_helper.to_array(node.attribute[0].t).copy()
            if shape.ndim == 1 and shape.size > 1 and shape[0] == 1:
                shape[0] = 0
                node.attribute[0].t.CopyFrom(numpy_helper.from_array(shape))
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


def compare(tflite: Path, onnx_path: Path, seed: int = 0) -> float:
    """Max abs difference between TFLite and ONNX Runtime outputs on random inputs in [-1, 1],
    for batch 1 and (ONNX only, each item against TFLite) batch 3."""
    import onnxruntime as ort

    interp = tflite_interpreter(tflite)
    inp = interp.get_input_details()[0]
    outs = sorted(interp.get_output_details(), key=lambda d: -int(d["shape"][2]))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    batch = rng.uniform(-1, 1, (3, *inp["shape"][1:])).astype(np.float32)
    onnx_out = sess.run(list(OUTPUT_NAMES), {"input": batch})
    worst = 0.0
    for i in range(batch.shape[0]):
        interp.set_tensor(inp["index"], batch[i : i + 1])
        interp.invoke()
        for ref_detail, got in zip(outs, onnx_out):
            ref = interp.get_tensor(ref_detail["index"])
            worst = max(worst, float(np.max(np.abs(ref - got[i : i + 1]))))
    return worst


def wheel_parser(description: str) -> argparse.ArgumentParser:
    """Arguments of the MediaPipe conversion tools: the wheel, and the models folder to write."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("wheel", type=Path, help="mediapipe-0.10.21-*.whl")
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = wheel_parser(__doc__.splitlines()[0]).parse_args(argv)
    args.models.mkdir(parents=True, exist_ok=True)
    short, full = extract_tflite(args.wheel, args.models)
    to_onnx(short, args.models / SHORT_ONNX)
    print(f"{SHORT_ONNX}: max abs diff vs TFLite {compare(short, args.models / SHORT_ONNX):.2e}")
    with tempfile.TemporaryDirectory() as tmp:
        dense = Path(tmp) / "face_detection_full_range_dense.tflite"
        count = densify(full, dense)
        print(f"densified {count} sparse weight tensors")
        to_onnx(dense, args.models / FULL_ONNX)
        print(f"{FULL_ONNX}: max abs diff vs sparse TFLite {compare(full, args.models / FULL_ONNX):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
