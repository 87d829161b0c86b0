"""Fine-tune the whole CNN on labelled clips and self-blended pairs, every score out of fold.

    python -m tools.sbi.finetune_cv --labelled packed_dev/ --real packed_train_real/ --out /tmp/ft \
        --folds 5 --steps 700 --workers 14 --final          # GPU machine: about 1 min per training
    python -m tools.sbi.finetune_cv --smoke --out /tmp/ft_smoke   # CI: synthetic faces, CPU

Where :mod:`tools.sbi.fit_head` fits a linear head on frozen ImageNet statistics, this
trains EfficientNet-Lite0 end to end. Each step mixes labelled fake frames (families
drawn evenly), labelled real frames, frames of the real videos of ``--real`` (as reals)
and single-frame self-blended pairs from every face of ``--real``. The folds are
:func:`tools.sbi.fit_head.folds_with_real_videos`' (identity-grouped labelled clips,
real videos grouped by source); while a fold is tested, its clips, its real videos and
the pseudo-fakes made from them are all left out of training. A clip's score is the
mean of its frame logits (crops cut as the pipeline cuts them, no jitter).

Writes ``out/oof.json`` (every file's out-of-fold logit and fold, real videos named by
:func:`tools.sbi.fit_head.real_video_key`), ``out/report.json`` (the metrics of
:func:`tools.sbi.fit_head.report`) and, with ``--final``, ``out/weights.pt``: the model
trained on everything, in :func:`tools.sbi.model.load_checkpoint`'s format.
``--exclude-family`` leaves a fake family out of every training (leave-family-out).
Each fold's scores are added to ``out/oof.json`` as soon as the fold ends (``report.json``
comes only when all are in), so a run cut off by a time limit keeps the folds it finished;
``--resume`` skips them.
"""
from __future__ import annotations

import argparse
import json
import time
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stream_guard.scoring import family_of
from stream_guard.faces.crop import crop_face
from tools.sbi.augment import apply_aug, crop_with_jitter, sample_aug, sample_crop
from tools.sbi.data import Clip, PairSampler, SampleOptions, load_cache
from tools.sbi.fit_head import folds_with_real_videos, real_video_key, report, smoke_clips
from tools.sbi.model import EMBED_DIM, RegionStatsEncoder, TemporalHead
from tools.sbi.train import (Logger, add_model_args, batch_stream, initial_encoder, save, start_run, to_tensor,
                             train_frames)


class MixedFrames:
    """``rng -> (x uint8 [N, 1, S, S, 3], y float32 [N])``: labelled fakes, labelled reals,
    real-video frames and self-blended pairs, in fixed numbers per batch."""

    def __init__(self, fakes: list[Clip], reals: list[Clip], videos: list[Clip], sbi: list[Clip],
                 opts: SampleOptions, n_fake: int, n_real: int, n_sbi_pairs: int) -> None:
        self.by_family: dict[str, list[Clip]] = defaultdict(list)
        for c in fakes:
            self.by_family[family_of(c.file)].append(c)
        self.families = sorted(self.by_family)
        self.reals, self.videos, self.opts = reals, videos, opts
        self.sbi = PairSampler(sbi, opts) if sbi and n_sbi_pairs else None
        self.n_fake, self.n_real, self.n_sbi = n_fake, n_real, n_sbi_pairs

    def frame(self, clip: Clip, rng: np.random.Generator) -> np.ndarray:
        i = int(rng.integers(len(clip)))
        crop, _ = crop_with_jitter(clip.frames[i], clip.boxes[i], clip.landmarks[i], self.opts.size,
                                   sample_crop(rng, self.opts.margin, self.opts.jitter))
        return apply_aug([crop], sample_aug(rng, self.opts.aug_strength), int(rng.integers(1 << 30)))[0]

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        if self.families:
            for _ in range(self.n_fake):
                fam = self.by_family[self.families[int(rng.integers(len(self.families)))]]
                xs.append(self.frame(fam[int(rng.integers(len(fam)))], rng))
                ys.append(1.0)
        pools = [p for p in (self.reals, self.videos) if p]
        for k in range(self.n_real if pools else 0):
            pool = pools[k % len(pools)]
            xs.append(self.frame(pool[int(rng.integers(len(pool)))], rng))
            ys.append(0.0)
        x = np.stack(xs)[:, None] if xs else None
        y = np.asarray(ys, np.float32)
        if self.sbi is not None:
            sx, sy = self.sbi.batch(self.n_sbi, 1, rng)
            x = sx if x is None else np.concatenate([x, sx])
            y = np.concatenate([y, sy])
        return x, y


@torch.no_grad()
def clip_logit(enc: nn.Module, head: TemporalHead, clip: Clip, opts: SampleOptions, device: torch.device) -> float:
    """Mean frame logit of a clip, crops as the pipeline cuts them."""
    crops = np.stack([crop_face(clip.frames[i], clip.boxes[i], opts.size, opts.margin) for i in range(len(clip))])
    enc.eval(), head.eval()
    logits = [head.frame_logits(enc(to_tensor(crops[i:i + 64], device)).float()) for i in range(0, len(crops), 64)]
    return float(torch.cat(logits).mean())


def build_encoder(args: argparse.Namespace) -> tuple[nn.Module, int]:
    """The network to train and its embedding size: pooled Lite0 (``--arch lite0``) or
    standardised inner-face vs surround statistics of its first blocks (``--arch regionstats``)."""
    enc = initial_encoder(args)
    if args.arch == "lite0":
        return enc, EMBED_DIM
    stats = RegionStatsEncoder(args.size, args.margin, encoder=enc)
    # statistics differ in scale by orders of magnitude; batch norm standardises them (a fixed affine map once exported)
    return nn.Sequential(stats, nn.BatchNorm1d(stats.dim)), stats.dim


def train_one(args: argparse.Namespace, make_batch: MixedFrames, device: torch.device, log: Logger,
              tag: str) -> tuple[nn.Module, TemporalHead]:
    """One end-to-end training from the initial encoder."""
    enc, dim = build_encoder(args)
    enc = enc.to(device).to(memory_format=torch.channels_last)
    head = TemporalHead(dim=dim, hidden=args.hidden).to(device)
    opt = torch.optim.AdamW([{"params": enc.parameters(), "lr_scale": 1.0},
                             {"params": head.parameters(), "lr_scale": 3.0}], lr=args.lr, weight_decay=1e-4)
    run = argparse.Namespace(**vars(args))
    run.out = args.out / tag
    run.out.mkdir(parents=True, exist_ok=True)
    run.ckpt_every = run.keep_every = 10 ** 9  # no checkpoints: each training is short
    run.val_every = 10 ** 9
    batches = batch_stream(make_batch, args.seed + zlib.crc32(tag.encode()) % 1000, args.workers)
    t0 = time.time()
    steps = train_frames(run, enc, head, opt, batches, None, 0, device, log)
    log.log(f"{tag}: {steps} steps in {time.time() - t0:.0f}s")
    return enc, head


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labelled", type=Path, help="labelled face cache (real and fake clips)")
    ap.add_argument("--real", type=Path, help="face cache of real faces (photos and videos)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny synthetic run for CI")
    ap.add_argument("--arch", choices=["lite0", "regionstats"], default="lite0")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fold-seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--fake-frames", type=int, default=16)
    ap.add_argument("--real-frames", type=int, default=16)
    ap.add_argument("--sbi-pairs", type=int, default=16)
    ap.add_argument("--no-real-videos", action="store_true", help="do not train on --real's videos as reals")
    ap.add_argument("--exclude-family", action="append", default=[], help="fake family never trained on")
    ap.add_argument("--final", action="store_true", help="also train on everything and write weights.pt")
    ap.add_argument("--resume", action="store_true", help="keep the folds already in out/oof.json, train the rest")
    ap.add_argument("--log-every", type=int, default=100)
    add_model_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.folds, args.fake_frames, args.real_frames, args.sbi_pairs = 3, 2, 2, 2, 2
        args.size, args.log_every = 64, 1
    elif args.labelled is None or args.real is None:
        ap.error("--labelled and --real are required (or --smoke)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device, log = start_run(args, "finetune.log")
    if args.smoke:
        labelled, real = smoke_clips()  # fit_head --smoke's clips: the same folds, so the two can be joined
    else:
        labelled, real = load_cache(args.labelled), load_cache(args.real, labels={"real"})
    opts = SampleOptions(size=args.size, margin=args.margin, aug_strength=args.aug)
    videos = [c for c in real if c.kind == "video"]
    names = {c.file: c.file for c in labelled} | {c.file: real_video_key(c.file) for c in videos}
    labels = {c.file: int(c.label == "fake") for c in labelled} | {real_video_key(c.file): 0 for c in videos}
    folds = folds_with_real_videos(sorted(labels), labels, args.folds, seed=args.fold_seed)
    excluded = set(args.exclude_family)
    log.log(f"device {device}; {len(labelled)} labelled clips, {len(real)} real faces ({len(videos)} video tracks); "
            f"{args.folds} folds; never trained on: {sorted(excluded) or 'none'}")

    def mixer(test: set[str]) -> MixedFrames:
        train_lab = [c for c in labelled if names[c.file] not in test]
        return MixedFrames(
            fakes=[c for c in train_lab if c.label == "fake" and family_of(c.file) not in excluded],
            reals=[c for c in train_lab if c.label == "real"],
            videos=[] if args.no_real_videos else [c for c in videos if names[c.file] not in test],
            sbi=[c for c in real if c.kind != "video" or names[c.file] not in test],
            opts=opts, n_fake=args.fake_frames, n_real=args.real_frames, n_sbi_pairs=args.sbi_pairs)

    oof_path = args.out / "oof.json"
    oof: dict[str, dict] = json.loads(oof_path.read_text()) if args.resume and oof_path.is_file() else {}
    done = {v["fold"] for v in oof.values()}
    for k, test in enumerate(folds):
        if k in done:
            log.log(f"fold{k}: kept from {oof_path}")
            continue
        enc, head = train_one(args, mixer(test), device, log, f"fold{k}")
        per_file: dict[str, list[float]] = defaultdict(list)
        for c in labelled + videos:
            if names[c.file] in test:
                per_file[names[c.file]].append(clip_logit(enc, head, c, opts, device))
        for f, v in per_file.items():
            oof[f] = {"logit": float(np.mean(v)), "label": labels[f], "fold": k}
        oof_path.write_text(json.dumps(oof, indent=1))
        log.log(f"fold{k}: scored {len(per_file)} files")
    scores = {f: v["logit"] for f, v in oof.items()}
    scored = {f: y for f, y in labels.items() if f in scores}
    result = report(scores, scored, 0.0)
    (args.out / "report.json").write_text(json.dumps(result, indent=1, default=float))
    ext = result.get("with_real_videos", {})
    log.log(f"out of fold: pooled AUC {result['auc']:.3f}; with real videos {ext.get('auc', float('nan')):.3f}; "
            + " ".join(f"{fam} {m['auc']:.3f}" for fam, m in result["families"].items() if m.get("auc") is not None))
    if args.final:
        enc, head = train_one(args, mixer(set()), device, log, "final")
        config = {k: getattr(args, k) for k in ("size", "margin", "window", "hidden", "lr", "steps", "seed", "aug",
                                                 "arch")}
        config["holdout"] = 0.0
        save(args.out / "weights.pt", enc, head, None, args.steps, config, "finetune",
             {"excluded_families": sorted(excluded)})
        log.log(f"final model: {args.out / 'weights.pt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
