"""PNG sheet of real / pseudo-fake / mask triplets from a face cache, to eyeball the SBI data.

    python -m tools.make_sbi_sheet /work/cache/faces/train_real /work/cache/sbi_sheet.png --n 12

``--swaps`` shows face-swap pseudo-fakes instead (another person's face blended in,
:mod:`tools.sbi.swap_blend`), ``--rerender`` re-rendered ones (the face redrawn as a talking-head
generator would, :mod:`tools.sbi.rerender_blend`), ``--learned-swaps SWAPGEN_PT`` faces redrawn as
another person by a trained swap generator (:mod:`tools.swapgen`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from tools.sbi.augment import crop_with_jitter, sample_crop
from stream_guard.synth.self_blend import blend_frame, sample_clip_blend
from tools.sbi.data import (learned_swap_frame, load_cache, sample_learned_swap_blend, source_key,
                            synthetic_clips)
from tools.sbi.rerender_blend import rerender_frame, sample_rerender_blend
from tools.sbi.swap_blend import ShapeIndex, sample_swap_blend, swap_frame
from tools.swapgen.model import FaceSwapper


def triplet(clip, rng: np.random.Generator, size: int, margin: float,
            swaps: ShapeIndex | None = None, rerender: bool = False,
            swapper: FaceSwapper | None = None) -> list[np.ndarray]:
    """Real crop, its pseudo-fake (no augmentation) and the mask, side by side material; with
    ``swaps``, the pseudo-fake has a face of another file blended in; with ``rerender``, it is the
    face re-rendered (as frame 0 to 5 of a clip); with ``swapper``, the face redrawn as another identity."""
    i = int(rng.integers(len(clip)))
    crop, lms = crop_with_jitter(clip.frames[i], clip.boxes[i], clip.landmarks[i], size, sample_crop(rng, margin))
    if rerender:
        params = sample_rerender_blend(rng)
        fake, mask = rerender_frame(crop, lms, params, int(rng.integers(6)), rng)
        notes = (f"{'box' if params.box else 'oval'} warp={params.warp_amp:.2f}",
                 f"scale {params.scale:.2f} smooth {params.smooth:.1f}")
    elif swapper is not None:
        identity = swapper.target_identity(clip.file, rng)
        swap = sample_learned_swap_blend(rng)
        fake, mask = learned_swap_frame(crop, lms, swapper, identity, swap, rng)
        notes = (f"as {Path(swapper.identities[identity]).stem[:20]}",
                 f"{swap.blend.region} colour {swap.transfer:.1f}")
    elif swaps is None:
        params = sample_clip_blend(rng)
        fake, mask = blend_frame(crop, lms, params, rng)
        notes = (f"{params.region} r={params.ratio:.2f}", f"{params.freq} {'src' if params.alter_source else 'tgt'}")
    else:
        source = swaps.nearest(lms, source_key(clip), rng)
        if source is None:
            raise ValueError("--swaps needs faces from at least two files")
        j = int(rng.integers(len(source)))
        swap = sample_swap_blend(rng)
        fake, mask = swap_frame(crop, lms, source.frames[j], source.landmarks[j], swap, rng)
        notes = (f"{swap.blend.region} r={swap.blend.ratio:.2f}",
                 f"colour {swap.transfer:.1f}{' alt' if swap.alter_source else ''}")
    m = cv2.cvtColor((mask * 255).astype(np.uint8), cv2.COLOR_GRAY2RGB)
    for k, note in enumerate(notes):
        cv2.putText(m, note, (4, 14 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 80, 80), 1)
    return [crop, fake, m]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", help="face cache folder, or 'synthetic'")
    ap.add_argument("out", type=Path)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--margin", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--swaps", action="store_true", help="face-swap pseudo-fakes instead of self-blended ones")
    kind.add_argument("--rerender", action="store_true", help="re-rendered pseudo-fakes instead of self-blended ones")
    kind.add_argument("--learned-swaps", type=Path, metavar="SWAPGEN_PT",
                      help="faces redrawn as other people by this trained generator (tools.swapgen.train)")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    clips = synthetic_clips(4) if args.cache == "synthetic" else load_cache(args.cache)
    pick = rng.choice(len(clips), size=args.n, replace=len(clips) < args.n)
    swaps = ShapeIndex(clips, source_key) if args.swaps else None
    try:
        swapper = FaceSwapper.load(args.learned_swaps) if args.learned_swaps else None
        rows = [np.hstack(triplet(clips[k], rng, args.size, args.margin, swaps, args.rerender, swapper))
                for k in pick]
    except (OSError, ValueError) as e:
        ap.error(str(e))
    half = (len(rows) + 1) // 2
    left, right = rows[:half], rows[half:] + [np.zeros_like(rows[0])] * (2 * half - len(rows))
    sheet = np.hstack([np.vstack(left), np.full((half * args.size, 8, 3), 255, np.uint8), np.vstack(right)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out} ({len(rows)} real / fake / mask triplets)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
