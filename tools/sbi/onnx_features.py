"""Frozen feature graphs run by ONNX Runtime: how ``fit_head`` turns crops into features.

The frozen encoder is exported once, in memory, and every crop goes through ONNX Runtime, the
engine the pipeline itself runs: training features are the run-time graph's (to float rounding),
and on a 2-core CPU ONNX Runtime encodes about five times faster than eager PyTorch
(``python -m tools.sbi.onnx_features`` times both on the shipped model's three views).
"""
from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch

from stream_guard.model.contract import REGION_NAMES
from tools.sbi.export import encoder_feed, export_encoder, session
from tools.sbi.landmark_regions import LandmarkContrastGraph, crop_regions
from tools.sbi.train import to_tensor


class OnnxFeaturiser:
    """``(crops uint8 [N, S, S, 3], landmarks in crop pixels) -> float32 [N, D]`` of ``graph``,
    a frozen module taking normalised crops and, for each of ``region_sizes``, the crops' region
    masks ``[N, 5, s, s]`` (none: the landmarks are ignored)."""

    def __init__(self, graph: torch.nn.Module, size: int, region_sizes: tuple[int, ...] = (),
                 threads: int = 1, chunk: int = 32) -> None:
        buf = io.BytesIO()
        export_encoder(graph, size, buf, [(len(REGION_NAMES), s) for s in region_sizes])
        self.session = session(buf.getvalue(), threads)
        self.size, self.region_sizes, self.chunk = size, region_sizes, chunk

    def __call__(self, crops: np.ndarray, landmarks: list[np.ndarray]) -> np.ndarray:
        if crops.shape[1] != self.size:
            raise ValueError(f"crops of {crops.shape[1]} px for a graph of {self.size} px")
        out = []
        for i in range(0, len(crops), self.chunk):
            x = to_tensor(crops[i:i + self.chunk], torch.device("cpu")).contiguous().numpy()
            masks = [m.numpy() for m in crop_regions(landmarks[i:i + self.chunk], self.size, self.region_sizes)]
            out.append(self.session.run(None, encoder_feed(x, masks))[0])
        return np.concatenate(out).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    """Time PyTorch against ONNX Runtime on the three views of ``models/deepfake`` (colour and grey
    statistics, landmark contrasts), crops of synthetic faces; prints seconds per 100 crops."""
    from tools.sbi.data import synthetic_clips
    from tools.sbi.model import Encoder, RegionStatsEncoder
    ap = argparse.ArgumentParser(description=main.__doc__.split(";")[0])
    ap.add_argument("--crops", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clips = synthetic_clips(max(1, args.crops // 6), size=224, margin=0.25)
    frames = [(f, lm) for c in clips for f, lm in zip(c.frames, c.landmarks)][:args.crops]
    crops, marks = np.stack([f for f, _ in frames]), [lm for _, lm in frames]
    backbone = Encoder()
    stats = [RegionStatsEncoder(224, 0.25, encoder=backbone, views=(v,)).eval() for v in ("colour", "greystd")]
    contrasts = RegionStatsEncoder(224, 0.25, encoder=backbone, landmark_regions=True)
    graphs = [(g, ()) for g in stats] + [(LandmarkContrastGraph(contrasts), contrasts.region_sizes)]
    per_100 = {}
    for name in ("pytorch", "onnxruntime"):
        t0 = time.perf_counter()
        for graph, sizes in graphs:
            if name == "onnxruntime":
                OnnxFeaturiser(graph, 224, sizes, threads=args.threads)(crops, marks)
                continue
            with torch.no_grad():
                for i in range(0, len(crops), 32):
                    regions = crop_regions(marks[i:i + 32], 224, sizes)
                    graph(to_tensor(crops[i:i + 32], torch.device("cpu")), *regions)
        per_100[name] = 100 * (time.perf_counter() - t0) / len(crops)
        print(f"{name:12s} {per_100[name]:6.2f} s per 100 crops ({len(crops)} crops, {args.threads} threads)")
    print(f"onnxruntime is {per_100['pytorch'] / per_100['onnxruntime']:.1f}x faster (export included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
