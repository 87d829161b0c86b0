"""Convert MediaPipe's face mesh (``face_landmark.tflite``) to ONNX for stream_guard.

Run with the same throwaway Python as ``tools/convert_face_detector.py`` (``tensorflow-cpu`` and
``tf2onnx``; build-time tools only)::

    pip download --no-deps mediapipe==0.10.21 -d /tmp/mpw
    /tmp/tfenv/bin/python -m tools.convert_face_mesh /tmp/mpw/mediapipe-0.10.21-*.whl

It writes ``models/face_landmark.onnx`` (input ``[1, 192, 192, 3]`` RGB in ``[0, 1]``; outputs 468
``(x, y, z)`` points in input pixels and a face-presence logit) and checks it against the TFLite
interpreter on random inputs.
"""
from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from tools.convert_face_detector import OPSET, tflite_interpreter, wheel_parser

WHEEL_PATH = "mediapipe/modules/face_landmark/face_landmark.tflite"
ONNX_NAME = "face_landmark.onnx"


def compare(tflite: Path, onnx_path: Path, trials: int = 3, seed: int = 0) -> float:
    """Max abs difference between TFLite and ONNX Runtime outputs on random inputs in [0, 1]
    (outputs matched by size)."""
    import onnxruntime as ort

    interp = tflite_interpreter(tflite)
    inp = interp.get_input_details()[0]
    outs = sorted(interp.get_output_details(), key=lambda d: -int(np.prod(d["shape"])))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sorted(sess.get_outputs(), key=lambda o: -int(np.prod(o.shape)))]
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(trials):
        x = rng.uniform(0, 1, inp["shape"]).astype(np.float32)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        got = sess.run(names, {sess.get_inputs()[0].name: x})
        for ref_detail, g in zip(outs, got):
            ref = interp.get_tensor(ref_detail["index"])
            worst = max(worst, float(np.max(np.abs(ref.reshape(-1) - g.reshape(-1)))))
    return worst


def main(argv: list[str] | None = None) -> int:
    args = wheel_parser(__doc__.splitlines()[0]).parse_args(argv)
    import onnx
    import tf2onnx

    with tempfile.TemporaryDirectory() as tmp:
        tflite = Path(tmp) / "face_landmark.tflite"
        with zipfile.ZipFile(args.wheel) as zf:
            tflite.write_bytes(zf.read(WHEEL_PATH))
        model_proto, _ = tf2onnx.convert.from_tflite(str(tflite), opset=OPSET)
        onnx.checker.check_model(model_proto)
        out = args.models / ONNX_NAME
        onnx.save(model_proto, str(out))
        print(f"{ONNX_NAME}: max abs diff vs TFLite {compare(tflite, out):.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
