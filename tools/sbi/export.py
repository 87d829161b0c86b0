"""Export a trained checkpoint to the stream_guard model contract (two ONNX graphs + model.json).

    python -m tools.sbi.export --ckpt /work/cache/run1/final.pt --out models/sbi_lite0 \
        --calib-cache /work/cache/faces/train_real

* ``encoder.onnx``: ``[N, 3, S, S] -> [N, D]``, dynamic N;
* ``temporal.onnx``: ``[N, T, D] -> [N, 1]``, dynamic N and T (native GRU op, legacy exporter);
* calibration: Platt scaling of window logits on held-out real faces and their
  pseudo-fakes (files never trained on); the threshold is the calibrated probability
  that keeps the held-out false-positive rate at ``--target-fpr`` (at least 0.5);
* parity: ONNX Runtime against PyTorch on the calibration crops, max abs diff <= 1e-4.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

from stream_guard.model.contract import ModelSpec
from tools.sbi.data import PairSampler, SampleOptions, is_held_out, load_cache, synthetic_clips
from tools.sbi.metrics import auc, calibrate
from tools.sbi.model import EMBED_DIM, MEAN, STD, load_checkpoint
from tools.sbi.train import embed, fixed_set, to_tensor

PARITY_TOL = 1e-4
FP16_LOGIT_TOL = 0.05  # frame-logit change allowed when weights are stored as fp16 (calibrated scale ~ +-4)


def region_input_name(size: int) -> str:
    """The encoder input holding the region masks drawn at ``size`` pixels (the model contract's name)."""
    return f"regions_{size}"


def export_encoder(enc: torch.nn.Module, size: int, f: Path | BinaryIO,
                   regions: Sequence[tuple[int, int]] = ()) -> None:
    """Write ``enc`` (``crops [N, 3, S, S]``, then one ``regions_s [N, R, s, s]`` per ``(R, s)`` of
    ``regions``, -> ``embeddings [N, D]``) as ONNX to a path or a binary stream, dynamic N."""
    enc = enc.to(memory_format=torch.contiguous_format).eval()
    inputs: tuple[torch.Tensor, ...] = (torch.randn(2, 3, size, size),)
    names = ["crops"]
    for count, side in regions:
        inputs += ((torch.rand(2, count, side, side) > 0.5).float(),)
        names.append(region_input_name(side))
    torch.onnx.export(enc, inputs, f if not isinstance(f, Path) else str(f), input_names=names,
                      output_names=["embeddings"],
                      dynamic_axes={**{n: {0: "batch"} for n in names}, "embeddings": {0: "batch"}},
                      opset_version=17, dynamo=False)


def export_graphs(enc: torch.nn.Module, head: torch.nn.Module, size: int, window: int, out: Path,
                  dim: int = EMBED_DIM, regions: Sequence[tuple[int, int]] = ()) -> None:
    """Write encoder.onnx and temporal.onnx with dynamic batch (and time) axes. ``regions``: for an
    encoder that also takes region masks, ``(R, s)`` per mask input, ``regions_s [N, R, s, s]``."""
    export_encoder(enc, size, out / "encoder.onnx", regions)
    export_temporal(head, window, dim, out / "temporal.onnx")


def export_temporal(head: torch.nn.Module, window: int, dim: int, path: Path) -> None:
    """Write ``head`` (``embeddings [N, T, D] -> logits [N, 1]``) as ONNX, dynamic N and T."""
    seq = torch.randn(2, window, dim)
    torch.onnx.export(head.eval(), (seq,), str(path), input_names=["embeddings"], output_names=["logits"],
                      dynamic_axes={"embeddings": {0: "batch", 1: "time"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)


def store_weights_fp16(path: Path, min_elements: int = 256) -> None:
    """Rewrite an ONNX graph with its float initializers of ``min_elements`` or more stored as
    float16, each cast back by a ``Cast`` node that ONNX Runtime folds into a float32 constant
    when the session loads: half the file, the same float32 arithmetic, weights rounded to fp16."""
    model = onnx.load(str(path))
    casts, halves = [], []
    for init in list(model.graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        half = onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
        model.graph.initializer.remove(init)
        halves.append(half)
        casts.append(onnx.helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT))
    model.graph.initializer.extend(halves)
    nodes = casts + list(model.graph.node)  # a Cast must precede the nodes reading its output
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def encoder_feed(crops: np.ndarray, regions: Sequence[np.ndarray] = ()) -> dict[str, np.ndarray]:
    """The encoder graph's inputs: normalised crops, and each size's region masks when it takes them."""
    return {"crops": crops} | {region_input_name(m.shape[-1]): m for m in regions}


def onnx_frame_logits(folder: Path, crops: np.ndarray, regions: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Frame logits (T = 1) of the graph pair in ``folder`` for normalised crops ``[N, 3, S, S]``
    (and their region masks, for an encoder that takes them)."""
    enc, head = session(folder / "encoder.onnx"), session(folder / "temporal.onnx")
    emb = enc.run(None, encoder_feed(crops, regions))[0]
    return head.run(None, {head.get_inputs()[0].name: emb[:, None]})[0][:, 0]


def session(model: Path | bytes, threads: int = 1) -> ort.InferenceSession:
    """A CPU ONNX Runtime session of a graph file or of a serialised graph."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                providers=["CPUExecutionProvider"])


def parity_exit_code(diff: dict[str, float]) -> int:
    """0 when every graph is within :data:`PARITY_TOL` of PyTorch, else 1 with one line on stderr."""
    if max(diff.values()) > PARITY_TOL:
        print(f"PARITY FAILED: {diff} > {PARITY_TOL}", file=sys.stderr)
        return 1
    return 0


def parity(enc: torch.nn.Module, head: torch.nn.Module, out: Path, crops: np.ndarray, window: int,
           regions: Sequence[np.ndarray] = ()) -> dict:
    """Max abs differences ORT vs PyTorch for embeddings and logits (several T and N); ``regions``:
    the crops' region masks at each size, for an encoder that takes them."""
    enc_s, head_s = session(out / "encoder.onnx"), session(out / "temporal.onnx")
    x = to_tensor(crops, torch.device("cpu")).contiguous()
    with torch.no_grad():
        ref = enc(x, *(torch.from_numpy(m) for m in regions)).numpy()
    got = enc_s.run(None, encoder_feed(x.numpy(), regions))[0]
    result = {"encoder": float(np.abs(ref - got).max())}
    diffs = []
    rng = np.random.default_rng(0)
    for n, t in [(1, 1), (3, window), (2, max(1, window // 2)), (5, window)]:
        idx = rng.integers(0, len(ref), (n, t))
        seq = ref[idx].astype(np.float32)
        with torch.no_grad():
            r = head(torch.from_numpy(seq)).numpy()
        g = head_s.run(None, {"embeddings": seq})[0]
        diffs.append(float(np.abs(r - g).max()))
    result["temporal"] = max(diffs)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="model folder to write")
    ap.add_argument("--calib-cache", type=Path, help="face cache; its held-out files calibrate")
    ap.add_argument("--smoke", action="store_true", help="calibrate on synthetic faces")
    ap.add_argument("--calib-pairs", type=int, default=96)
    ap.add_argument("--target-fpr", type=float, default=0.05)
    ap.add_argument("--name", default="sbi-effnetlite0-gru")
    ap.add_argument("--version", default="0.1.0")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    enc, head, state = load_checkpoint(str(args.ckpt))
    cfg = state["config"]
    size, window = int(cfg["size"]), int(cfg["window"])
    args.out.mkdir(parents=True, exist_ok=True)
    export_graphs(enc, head, size, window, args.out)

    if args.smoke:
        clips = synthetic_clips(8)
        held = [c for c in clips if is_held_out(c.file, 0.25)] or clips
        pairs = min(args.calib_pairs, 8)
    else:
        if args.calib_cache is None:
            ap.error("--calib-cache is required (or --smoke)")
        clips = load_cache(args.calib_cache, labels={"real"})
        held = [c for c in clips if is_held_out(c.file, float(cfg["holdout"]))]
        pairs = args.calib_pairs
    opts = SampleOptions(size=size, margin=float(cfg["margin"]), window=window, aug_strength=float(cfg["aug"]))
    x, y = fixed_set(PairSampler(held, opts), pairs, window, 12345)
    emb = embed(enc, x, torch.device("cpu"))
    with torch.no_grad():
        logits = head(emb).squeeze(1).numpy()
    a, b, probs, threshold = calibrate(logits, y, args.target_fpr)
    diff = parity(enc, head, args.out, x[: min(len(x), 6), 0], window)

    spec = ModelSpec(
        folder=args.out.resolve(), name=args.name, version=args.version, trained=True,
        encoder_path=(args.out / "encoder.onnx").resolve(), temporal_path=(args.out / "temporal.onnx").resolve(),
        input_size=size, mean=MEAN, std=STD, crop_margin=float(cfg["margin"]), embedding_dim=EMBED_DIM,
        window=window, sample_hz=float(cfg.get("sample_hz", 8.0)), threshold=round(threshold, 4),
        calibration_a=a, calibration_b=b,
        description=("EfficientNet-Lite0 (ImageNet init) + GRU head, trained only on real faces and "
                     "self-blended pseudo-fakes (Shiohara & Yamasaki 2022 method). Training faces carry "
                     "research / non-commercial terms, which the weights inherit. "
                     f"Step {state['step']}; held-out SBI window AUC {auc(logits, y):.3f}."),
    )
    spec.save()
    report = {"parity_max_abs": diff, "held_out_auc": auc(logits, y), "calibration": [a, b],
              "threshold": threshold, "step": state["step"], "calib_sequences": int(len(y))}
    (args.out / "export_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return parity_exit_code(diff)


if __name__ == "__main__":
    raise SystemExit(main())
