"""Train the swapping autoencoder on a face cache's real faces (CUDA with bf16 when present).

    python -m tools.swapgen.train --cache FACES --out RUN [--size 128] [--minutes 8]
    python -m tools.swapgen.train --cache FACES --out RUN --save-faces FACES.npz   # align only, then
    python -m tools.swapgen.train --faces FACES.npz --out RUN                       # train elsewhere (a GPU)

The ``--identities`` longest video tracks, one per source file, each get a decoder; every other
face goes to one shared "everyone else" decoder. Writes ``RUN/swapgen.pt`` (float16 weights,
what ``fit_head --learned-swaps`` reads), ``RUN/last.pt`` (for ``--resume``), ``RUN/preview.png``
(rows: a face, its reconstruction, its swaps into the first identities) and ``RUN/train.log``.
``--save-faces`` writes the aligned training set as JPEG (about 6 KB a face at 128 px, a twentieth
of the crops it came from) so it can travel to a GPU machine; ``--faces`` trains from it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from tools.sbi.data import Clip, load_cache, synthetic_clips
from tools.sbi.pack_faces import decode_frames, encode_frames
from tools.sbi.train import Logger
from tools.swapgen.align import aligned_face, face_weight, mean_shape_template
from tools.swapgen.model import SwapAutoencoder, save_generator


def pick_identities(clips: list[Clip], k: int) -> tuple[list[Clip], list[Clip]]:
    """The ``k`` longest video tracks, at most one per file, and every other clip."""
    chosen: list[Clip] = []
    files: set[str] = set()
    for clip in sorted((c for c in clips if c.kind == "video"), key=len, reverse=True):
        if len(chosen) < k and clip.file not in files:
            chosen.append(clip)
            files.add(clip.file)
    ids = {c.clip_id for c in chosen}
    others = [c for c in clips if c.clip_id not in ids]
    if len(chosen) < 2 or not others:
        raise ValueError(f"need video tracks of at least 2 files and other faces besides; found {len(chosen)} files, "
                         f"{len(others)} other clips")
    return chosen, others


def aligned_sets(identities: list[Clip], others: list[Clip], template: np.ndarray, size: int) -> list[np.ndarray]:
    """Aligned faces ``uint8 [n, S, S, 3]`` per decoder: one per identity, then everyone else."""
    def faces(clips: list[Clip]) -> np.ndarray:
        return np.stack([aligned_face(c.frames[i], c.landmarks[i], template, size) for c in clips for i in range(len(c))])
    return [faces([c]) for c in identities] + [faces(others)]


def save_faces(path: Path, sets: list[np.ndarray], template: np.ndarray, names: list[str], quality: int = 92) -> None:
    """The aligned training set as one ``.npz``: each decoder's faces as JPEG, the template, the names."""
    coded = [encode_frames(s, quality) for s in sets]
    np.savez(path, template=template, names=np.array(names), sizes=np.array([len(s) for s in sets]),
             **{f"jpeg_{i}": c[0] for i, c in enumerate(coded)}, **{f"offsets_{i}": c[1] for i, c in enumerate(coded)})


def load_faces(path: Path) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Inverse of :func:`save_faces`."""
    with np.load(path) as d:
        sets = [decode_frames(d[f"jpeg_{i}"], d[f"offsets_{i}"]) for i in range(len(d["sizes"]))]
        return sets, d["template"], [str(n) for n in d["names"]]


def warped(batch: torch.Tensor, rng: np.random.Generator, amount: float) -> torch.Tensor:
    """Each face through a small random affine warp: the decoder must draw the face, not copy pixels."""
    n = batch.shape[0]
    theta = torch.eye(2, 3).repeat(n, 1, 1) + torch.from_numpy(rng.normal(0, amount, (n, 2, 3))).float()
    grid = F.affine_grid(theta.to(batch.device), list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, padding_mode="reflection", align_corners=False)


def reconstruction_loss(y: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Face-weighted L1 plus L1 of the image gradients (keeps edges sharp)."""
    l1 = ((y - target).abs().mean(1) * weight).mean()
    dy = ((y[..., 1:, :] - y[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])).abs().mean()
    dx = ((y[..., 1:] - y[..., :-1]) - (target[..., 1:] - target[..., :-1])).abs().mean()
    return l1 + 0.5 * (dx + dy)


def preview(model: SwapAutoencoder, faces: np.ndarray, device: torch.device, swaps: int) -> np.ndarray:
    """Rows: each face, its own decoder's reconstruction, then its swaps into identities 0..swaps-1."""
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(faces).permute(0, 3, 1, 2).float().div(255).to(device)
        cols = [x, model(x, len(model.decoders) - 1)] + [model(x, d) for d in range(swaps)]
    model.train()
    grid = torch.cat([torch.cat(list(c), 1) for c in cols], 2)  # faces down, variants across
    return (grid.permute(1, 2, 0).float().cpu().numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, help="face cache (tools.sbi.prepare_faces or pack_faces); its real faces")
    ap.add_argument("--faces", type=Path, help="an aligned training set written by --save-faces, instead of --cache")
    ap.add_argument("--save-faces", type=Path, metavar="NPZ", help="write the aligned training set there and stop")
    ap.add_argument("--out", type=Path, required=True, help="run folder")
    ap.add_argument("--smoke", action="store_true", help="tiny synthetic run for tests (seconds)")
    ap.add_argument("--resume", action="store_true", help="continue from out/last.pt")
    ap.add_argument("--size", type=int, default=128, help="aligned face side, a multiple of 16")
    ap.add_argument("--width", type=int, default=24, help="channels of the first layer")
    ap.add_argument("--latent", type=int, default=128)
    ap.add_argument("--identities", type=int, default=8, help="decoders for named identities (+1 for everyone else)")
    ap.add_argument("--minutes", type=float, default=8.0, help="training time budget")
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: the time budget alone)")
    ap.add_argument("--batch", type=int, default=16, help="faces per decoder per step")
    ap.add_argument("--decoders-per-step", type=int, default=3)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warp", type=float, default=0.03, help="random affine warp of the inputs (std)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.smoke and (args.cache is None) == (args.faces is None):
        ap.error("give one of --cache and --faces (or --smoke)")
    if args.faces is not None and args.save_faces is not None:
        ap.error("--save-faces needs --cache")
    for path in (args.cache, args.faces):
        if path is not None and not path.exists():
            ap.error(f"no such file or folder: {path}")
    if args.size % 16:
        ap.error(f"--size must be a multiple of 16, got {args.size}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        args.size, args.width, args.latent, args.identities, args.batch = 32, 8, 32, 3, 4
        args.steps = args.steps or 20
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    log = Logger(args.out / "train.log")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.faces is not None:
        sets, template, names = load_faces(args.faces)
        args.size = sets[0].shape[1]
    else:
        clips = synthetic_clips(8, seed=args.seed) if args.smoke else load_cache(args.cache, labels={"real"})
        try:
            identities, others = pick_identities(clips, args.identities)
        except ValueError as e:
            print(f"tools.swapgen.train: error: {args.cache}: {e}", file=sys.stderr)
            return 2
        template = mean_shape_template([c.landmarks[i] for c in clips for i in range(0, len(c), 4)], args.size)
        sets = aligned_sets(identities, others, template, args.size)
        names = [c.file for c in identities] + ["(everyone else)"]
        if args.save_faces is not None:
            save_faces(args.save_faces, sets, template, names)
            log.log(f"wrote {args.save_faces} ({sum(map(len, sets))} aligned faces, "
                    f"{args.save_faces.stat().st_size / 2 ** 20:.1f} MiB)")
            return 0
    log.log(f"device {device}; {len(sets)} decoders: " + ", ".join(f"{n} ({len(s)})" for n, s in zip(names, sets)))
    model = SwapAutoencoder(len(sets), args.size, args.width, args.latent).to(device)
    opt = torch.optim.Adam(model.parameters(), args.lr, betas=(0.5, 0.999))
    step, spent = 0, 0.0
    last = args.out / "last.pt"
    if args.resume and last.exists():
        ck = torch.load(last, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, spent = ck["step"], ck["seconds"]
        log.log(f"resumed at step {step} ({spent:.0f} s spent)")
    weight = torch.from_numpy(face_weight(template, args.size)).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    rng = np.random.default_rng(args.seed + step)
    budget = args.minutes * 60
    start, loss_sum, n_sum = time.time() - spent, torch.zeros((), device=device), 0

    def checkpoint() -> None:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "seconds": time.time() - start}, last)
        size = save_generator(args.out / "swapgen.pt", model, template, names)
        log.log(f"step {step}: swapgen.pt {size / 2 ** 20:.1f} MiB")

    while time.time() - start < budget and not (args.steps and step >= args.steps):
        opt.zero_grad(set_to_none=True)
        for d in rng.choice(len(sets), min(args.decoders_per_step, len(sets)), replace=False):
            faces = sets[d][rng.integers(0, len(sets[d]), args.batch)]
            if rng.random() < 0.5:
                faces = faces[:, :, ::-1]
            target = torch.from_numpy(np.ascontiguousarray(faces)).to(device).permute(0, 3, 1, 2).float() / 255
            with autocast:
                loss = reconstruction_loss(model(warped(target, rng, args.warp), int(d)).float(), target, weight)
            loss.backward()
            loss_sum, n_sum = loss_sum + loss.detach(), n_sum + 1  # summed on the device: no sync per step
        opt.step()
        step += 1
        if step % 10 == 0:
            log.progress(int(time.time() - start), int(budget), f"step {step} (time budget)")
        if step % 200 == 0 or step == args.steps:
            log.log(f"step {step} loss {float(loss_sum) / n_sum:.4f} {time.time() - start:.0f} s")
            loss_sum, n_sum = torch.zeros((), device=device), 0
        if step % 1000 == 0:
            checkpoint()
    checkpoint()
    sample = sets[-1][np.random.default_rng(1).integers(0, len(sets[-1]), 6)]
    cv2.imwrite(str(args.out / "preview.png"),
                cv2.cvtColor(preview(model, sample, device, min(5, len(sets) - 1)), cv2.COLOR_RGB2BGR))
    log.log(f"done: {step} steps in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
