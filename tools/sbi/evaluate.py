"""Video-level AUC of a checkpoint or an exported model on a labelled face cache (e.g. dev).

    python -m tools.sbi.evaluate --ckpt /work/cache/run1/last.pt --cache /work/cache/faces/dev
    python -m tools.sbi.evaluate --model models/sbi_lite0 --cache /work/cache/faces/dev

Each clip is cropped exactly as the pipeline does (no jitter), encoded once per frame,
and scored by the temporal head over sliding windows of ``window`` frames (shorter
clips: one window). A file's score is the mean window probability (``--agg median``
or ``frame`` for alternatives). AUC is reported pooled and per family (file-name
prefix up to the first ``_``).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from stream_guard.faces.crop import crop_face
from tools.sbi.data import Clip, load_cache
from tools.sbi.metrics import auc


class TorchScorer:
    def __init__(self, ckpt: Path, threads: int) -> None:
        import torch

        from tools.sbi.model import load_checkpoint

        torch.set_num_threads(threads)
        self.torch = torch
        self.enc, self.head, state = load_checkpoint(str(ckpt))
        cfg = state["config"]
        self.size, self.margin, self.window = int(cfg["size"]), float(cfg["margin"]), int(cfg["window"])
        self.a, self.b = 1.0, 0.0
        self.step = state["step"]

    def encode(self, crops: np.ndarray) -> np.ndarray:
        from tools.sbi.train import embed

        return embed(self.enc, crops[:, None], self.torch.device("cpu"))[:, 0].numpy()

    def logits(self, seqs: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.head(self.torch.from_numpy(seqs.astype(np.float32))).numpy().reshape(-1)

    def frame_logits(self, emb: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.head.frame_logits(self.torch.from_numpy(emb)).numpy()


class OnnxScorer:
    def __init__(self, folder: Path, threads: int) -> None:
        import onnxruntime as ort

        from stream_guard.model.contract import load_model_spec

        self.spec = load_model_spec(folder)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.enc = ort.InferenceSession(str(self.spec.encoder_path), opts, providers=["CPUExecutionProvider"])
        self.head = ort.InferenceSession(str(self.spec.temporal_path), opts, providers=["CPUExecutionProvider"])
        self.size, self.margin, self.window = self.spec.input_size, self.spec.crop_margin, self.spec.window
        self.a, self.b = self.spec.calibration_a, self.spec.calibration_b
        self.step = self.spec.version

    def encode(self, crops: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.spec.mean, np.float32) * 255
        std = np.asarray(self.spec.std, np.float32) * 255
        x = ((crops.astype(np.float32) - mean) / std).transpose(0, 3, 1, 2)
        name = self.enc.get_inputs()[0].name
        return np.concatenate([self.enc.run(None, {name: np.ascontiguousarray(x[i:i + 16])})[0]
                               for i in range(0, len(x), 16)])

    def logits(self, seqs: np.ndarray) -> np.ndarray:
        return self.head.run(None, {self.head.get_inputs()[0].name: seqs.astype(np.float32)})[0].reshape(-1)

    def frame_logits(self, emb: np.ndarray) -> np.ndarray:
        return self.logits(emb[:, None, :])


def clip_scores(clip: Clip, scorer, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Window logits and frame logits of one clip."""
    n = min(len(clip), max_frames)
    crops = np.stack([crop_face(clip.frames[i], clip.boxes[i], scorer.size, scorer.margin) for i in range(n)])
    emb = scorer.encode(crops)
    w = min(scorer.window, n)
    windows = np.stack([emb[i:i + w] for i in range(0, n - w + 1)])
    return scorer.logits(windows), scorer.frame_logits(emb)


def family(file: str) -> str:
    return Path(file).name.split("_", 1)[0]


def evaluate(scorer, clips: list[Clip], max_frames: int, agg: str) -> dict:
    per_file: dict[str, dict] = defaultdict(lambda: {"win": [], "frame": []})
    for clip in clips:
        win, frame = clip_scores(clip, scorer, max_frames)
        d = per_file[clip.file]
        d["label"] = clip.label
        d["win"].extend(win.tolist())
        d["frame"].extend(frame.tolist())

    def prob(z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-np.clip(scorer.a * z + scorer.b, -60, 60)))

    files = sorted(per_file)
    scores = {}
    for f in files:
        d = per_file[f]
        if agg == "frame":
            scores[f] = float(prob(np.asarray(d["frame"])).mean())
        elif agg == "median":
            scores[f] = float(np.median(prob(np.asarray(d["win"]))))
        else:
            scores[f] = float(prob(np.asarray(d["win"])).mean())
    labels = {f: per_file[f]["label"] == "fake" for f in files}
    fams: dict[str, list[str]] = defaultdict(list)
    for f in files:
        fams[family(f)].append(f)
    result = {"pooled": auc([scores[f] for f in files], [labels[f] for f in files]), "families": {}}
    for fam, fs in sorted(fams.items()):
        ys = [labels[f] for f in fs]
        result["families"][fam] = {
            "auc": auc([scores[f] for f in fs], ys), "n_real": int(len(ys) - sum(ys)), "n_fake": int(sum(ys)),
            "mean_real": float(np.mean([scores[f] for f in fs if not labels[f]])) if len(ys) > sum(ys) else None,
            "mean_fake": float(np.mean([scores[f] for f in fs if labels[f]])) if sum(ys) else None,
        }
    pairs = [(f, r) for f in files for r in files
             if f.endswith("_R.mp4") and Path(r).name == Path(f).name[:-6] + "_L.mp4"]
    if pairs:  # same scene, same encoding: does the swapped half score higher?
        result["pair_accuracy"] = float(np.mean([scores[f] > scores[r] for f, r in pairs]))
        result["n_pairs"] = len(pairs)
    result["scores"] = scores
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", type=Path)
    src.add_argument("--model", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("/work/cache/faces/dev"))
    ap.add_argument("--max-frames", type=int, default=32)
    ap.add_argument("--agg", choices=["mean", "median", "frame"], default="mean")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the full result here")
    args = ap.parse_args(argv)
    scorer = TorchScorer(args.ckpt, args.threads) if args.ckpt else OnnxScorer(args.model, args.threads)
    clips = load_cache(args.cache)
    res = evaluate(scorer, clips, args.max_frames, args.agg)
    print(f"step {scorer.step}  agg={args.agg}  pooled video AUC {res['pooled']:.3f}")
    if "pair_accuracy" in res:
        print(f"  same-scene pairs (_R fake scores above _L real): {res['pair_accuracy']:.2f} of {res['n_pairs']}")
    for fam, r in res["families"].items():
        mr = "-" if r["mean_real"] is None else f"{r['mean_real']:.3f}"
        mf = "-" if r["mean_fake"] is None else f"{r['mean_fake']:.3f}"
        a = "  n/a" if np.isnan(r["auc"]) else f"{r['auc']:.3f}"
        print(f"  {fam:12s} AUC {a}  real {r['n_real']:2d} (mean {mr})  fake {r['n_fake']:2d} (mean {mf})")
    if args.json:
        args.json.write_text(json.dumps({"step": str(scorer.step), "agg": args.agg, **res}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
