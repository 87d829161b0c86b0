"""Pack a face cache small enough to carry to a training machine.

    python -m tools.sbi.pack_faces /work/cache/faces/train_real /work/main/.carry/train_real \
        --max-frames 12 --quality 90 [--exclude-files held_out.txt]

Same layout as :mod:`tools.sbi.prepare_faces` (``index.tsv`` + ``clips/<id>.npz``), but
each clip keeps at most ``--max-frames`` evenly spaced frames, stored as JPEG
(``jpeg`` bytes + ``jpeg_offsets``) instead of raw ``frames``; boxes and landmarks are
kept for the frames kept. :func:`tools.sbi.data.load_cache` reads both layouts. The
full train_real cache (1.2 GB) packs to about 35 MB at 12 frames, quality 90.
``--exclude-files`` drops every clip of the source files listed (one per line), for
training runs that must leave whole sources out.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np


def encode_frames(frames: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 ``[F, S, S, 3]`` -> (concatenated JPEG bytes, ``F + 1`` offsets)."""
    chunks = []
    for f in frames:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(f[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        chunks.append(buf.reshape(-1))
    offsets = np.cumsum([0] + [len(c) for c in chunks]).astype(np.int64)
    return np.concatenate(chunks), offsets


def decode_frames(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_frames`: RGB uint8 ``[F, S, S, 3]``."""
    frames = [cv2.imdecode(data[offsets[i]:offsets[i + 1]], cv2.IMREAD_COLOR)[..., ::-1]
              for i in range(len(offsets) - 1)]
    return np.ascontiguousarray(np.stack(frames))


def spaced(n: int, keep: int) -> np.ndarray:
    """Indices of ``min(n, keep)`` frames spread evenly over ``n``."""
    if n <= keep:
        return np.arange(n)
    return np.round(np.linspace(0, n - 1, keep)).astype(int)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", type=Path, help="face cache from tools.sbi.prepare_faces")
    ap.add_argument("out", type=Path, help="packed cache folder to write")
    ap.add_argument("--max-frames", type=int, default=12)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--exclude-files", type=Path, help="source files to leave out, one per line")
    args = ap.parse_args(argv)
    index = args.cache / "index.tsv"
    if not index.is_file():
        print(f"error: {index} not found (build the cache with tools.sbi.prepare_faces)", file=sys.stderr)
        return 2
    excluded = set()
    if args.exclude_files:
        excluded = {line.strip() for line in args.exclude_files.read_text().splitlines() if line.strip()}
    (args.out / "clips").mkdir(parents=True, exist_ok=True)
    kept, total = [], 0
    with open(index, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        if row["file"] in excluded:
            continue
        with np.load(args.cache / "clips" / f"{row['clip']}.npz") as d:
            idx = spaced(len(d["frames"]), args.max_frames)
            data, offsets = encode_frames(d["frames"][idx], args.quality)
            extra = {k: d[k][idx] for k in d.files if k != "frames"}
        path = args.out / "clips" / f"{row['clip']}.npz"
        np.savez(path, jpeg=data, jpeg_offsets=offsets, **extra)
        total += path.stat().st_size
        kept.append({**row, "frames": str(len(idx))})
    with open(args.out / "index.tsv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        w.writeheader()
        w.writerows(kept)
    print(f"packed {len(kept)} of {len(rows)} clips, {sum(int(r['frames']) for r in kept)} frames, "
          f"{total / 2**20:.1f} MiB -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
