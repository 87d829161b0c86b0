"""Landmark-region contrasts: a cue measured, not yet shipped (models/MODEL_CARD.md, eighth CPU session).

The shipped encoder summarises Lite0's maps inside a fixed ellipse and around it. These
features follow the face itself, with MediaPipe's 468 face-mesh landmarks:

* **the seam**: a band just inside the face-oval hull against a band just outside it (where a
  swap or a self-blend joins two faces), per channel the log std ratio and the mean difference;
* **mouth and eyes** against the rest of the face (the lips and eye polygons' log std ratio to
  the face core): generated heads and swaps render teeth and eyes with their own detail.

For the grey high-pass bands and Lite0 blocks 0, 2 and 4 (3 + 16 + 24 + 40 channels) that is 332
numbers per crop. The pipeline does not run the face mesh yet, so no model uses them; this
module computes them for the labelled clips, the real videos and ``fit_head``'s self-blended
draws (row for row), and compares ``fit_head``'s protocol with and without them::

    python -m tools.sbi.landmark_regions --labelled /work/cache/faces/dev \\
        --real /work/cache/faces/train_real --work /work/cache/fit_work --repeats 4
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

from stream_guard.faces.crop import crop_face, crop_matrix, transform_points
from tools.sbi import fit_head as fh
from tools.sbi.data import Clip, SampleOptions, load_cache, sample_pair_with_landmarks
from tools.sbi.fit_head import FeatureSet, real_video_key
from tools.sbi.model import Encoder, RegionStatsEncoder
from tools.sbi.train import to_tensor

# MediaPipe face-mesh indices: the face oval, the outer lip line and each eye's outline.
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
             176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
SEAM_WIDTH = 0.05  # each band's width, as a share of the map's side


def region_masks(landmarks: np.ndarray, crop_size: int, res: int) -> dict[str, np.ndarray]:
    """Masks ``[res, res]`` of ``core`` (the face inside the seam band, mouth and eyes removed),
    ``seam_in``, ``seam_out``, ``mouth`` and ``eyes``, from landmarks in ``crop_size`` pixels."""
    scale = res / crop_size

    def polygon(idx: tuple[int, ...], convex: bool = False) -> np.ndarray:
        m = np.zeros((res, res), np.uint8)
        pts = np.round(landmarks[list(idx), :2] * scale).astype(np.int32)
        if convex:
            cv2.fillConvexPoly(m, cv2.convexHull(pts), 1)
        else:
            cv2.fillPoly(m, [pts], 1)
        return m

    hull = polygon(FACE_OVAL, convex=True)
    w = max(1, int(round(res * SEAM_WIDTH)))
    kernel = np.ones((2 * w + 1, 2 * w + 1), np.uint8)
    inside, outside = cv2.erode(hull, kernel), cv2.dilate(hull, kernel)
    mouth, eyes = polygon(LIPS), polygon(LEFT_EYE) | polygon(RIGHT_EYE)
    masks = {"core": inside & (1 - (mouth | eyes)), "seam_in": hull - inside, "seam_out": outside - hull,
             "mouth": mouth, "eyes": eyes}
    return {k: m.astype(np.float32) for k, m in masks.items()}


def _moments(x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel mean and std of ``x`` ``[C, H, W]`` over mask ``m`` (an empty mask: 0 and 1)."""
    total = m.sum()
    if total < 1:
        return np.zeros(x.shape[0]), np.ones(x.shape[0])
    w = m / total
    mu = (x * w).sum((1, 2))
    return mu, np.sqrt(((x - mu[:, None, None]) ** 2 * w).sum((1, 2)) + 1e-6)


def region_contrasts(maps: list[np.ndarray], landmarks: np.ndarray, crop_size: int) -> np.ndarray:
    """Per map ``[C, H, W]``: seam log std ratio, seam mean difference, mouth and eyes log std
    ratios to the core (``4 C`` numbers each, maps in order)."""
    out = []
    for x in maps:
        st = {k: _moments(x, m) for k, m in region_masks(landmarks, crop_size, x.shape[1]).items()}
        out += [np.log(st["seam_in"][1] / st["seam_out"][1]), st["seam_in"][0] - st["seam_out"][0],
                np.log(st["mouth"][1] / st["core"][1]), np.log(st["eyes"][1] / st["core"][1])]
    return np.concatenate(out).astype(np.float32)


class LandmarkRegionFeatures:
    """:func:`region_contrasts` of the grey high-pass bands and the tapped Lite0 blocks of
    ``encoder`` (a :class:`RegionStatsEncoder`: the shipped model's frozen maps)."""

    def __init__(self, encoder: RegionStatsEncoder, size: int) -> None:
        self.enc, self.size = encoder.eval(), size

    def maps(self, crops: np.ndarray) -> list[list[np.ndarray]]:
        """Each crop's maps: the bands, then every tap."""
        with torch.no_grad():
            bands, maps = self.enc.feature_maps(to_tensor(crops, torch.device("cpu")))
        found = [torch.cat(bands, 1)] + [maps[str(i)] for i in self.enc.taps]
        return [[m[j].numpy() for m in found] for j in range(len(crops))]

    def __call__(self, crops: np.ndarray, landmarks: list[np.ndarray]) -> np.ndarray:
        return np.stack([region_contrasts(m, lm, self.size) for m, lm in zip(self.maps(crops), landmarks)])


def labelled_region_features(feats: LandmarkRegionFeatures, clips: list[Clip], margin: float,
                             max_frames: int) -> FeatureSet:
    """The frames ``fit_head.labelled_features`` takes (same order), as landmark-region features."""
    xs, files, labels = [], [], []
    for clip in clips:
        idx = np.unique(np.linspace(0, len(clip) - 1, min(len(clip), max_frames)).astype(int))
        crops = np.stack([crop_face(clip.frames[i], clip.boxes[i], feats.size, margin) for i in idx])
        marks = [transform_points(clip.landmarks[i], crop_matrix(clip.boxes[i], feats.size, margin)) for i in idx]
        xs.append(feats(crops, marks))
        files += [clip.file] * len(idx)
        labels += [int(clip.label == "fake")] * len(idx)
    return FeatureSet(np.concatenate(xs), np.array(files), np.array(labels))


def sbi_region_features(feats: LandmarkRegionFeatures, clips: list[Clip], margin: float, draws: int, seed: int,
                        small_faces: bool = False) -> FeatureSet:
    """``fit_head.sbi_features``'s draws (same seed: the same pairs, row for row) as landmark-region features."""
    rng = np.random.default_rng(seed)
    opts = SampleOptions(size=feats.size, margin=margin, small_faces=small_faces)
    reals, fakes, sources = [], [], []
    for _ in range(draws):
        for clip in clips:
            r, f, marks = sample_pair_with_landmarks(clip, 4, opts, rng)
            reals.append(feats(np.stack(r), marks))
            fakes.append(feats(np.stack(f), marks))
            sources += [real_video_key(clip.file) if clip.kind == "video" else clip.file] * len(r)
    n = len(sources)
    return FeatureSet(np.concatenate(reals + fakes), np.array(sources * 2), np.r_[np.zeros(n, int), np.ones(n, int)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labelled", type=Path, required=True, help="face cache of labelled clips (dev)")
    ap.add_argument("--real", type=Path, required=True, help="face cache of real faces (train_real)")
    ap.add_argument("--work", type=Path, required=True, help="fit_head's feature cache folder")
    ap.add_argument("--repeats", type=int, default=2, help="fold shuffles")
    ap.add_argument("--sbi-small-face-draws", type=int, default=4)
    ap.add_argument("--json", type=Path, help="write both runs' mean AUCs here")
    args = ap.parse_args(argv)
    ns = argparse.Namespace(size=224, margin=0.25, taps=(0, 2, 4), features=("stats",), max_frames=64,
                            labelled=args.labelled, real=args.real, work=args.work, sbi_draws=2,
                            sbi_small_face_draws=args.sbi_small_face_draws)
    torch.set_num_threads(2)
    labelled, reals = load_cache(args.labelled), load_cache(args.real, labels={"real"})
    backbone = Encoder()
    base = [fh.view_features(ns, v, backbone, labelled, reals) for v in ("colour", "greystd")]
    feats = LandmarkRegionFeatures(RegionStatsEncoder(ns.size, ns.margin, encoder=backbone), ns.size)
    key = "lmregions|" + fh.feature_key(ns.size, ns.margin, ns.taps, ns.features, ns.max_frames, ns.labelled)
    videos = [replace(c, file=fh.real_video_key(c.file)) for c in reals if c.kind == "video"]
    lab = fh.concat([fh.cached(args.work, "lab|" + key, lambda: labelled_region_features(
                        feats, labelled, ns.margin, ns.max_frames)),
                     fh.cached(args.work, f"realvid|{key}|{ns.real}", lambda: labelled_region_features(
                         feats, videos, ns.margin, ns.max_frames))])
    sbi = fh.concat([fh.cached(args.work, f"{name}|{key}|{ns.real}|{draws}", lambda: sbi_region_features(
                         feats, reals, ns.margin, draws, seed=1, small_faces=small))
                     for name, draws, small in (("sbi-by-source", 2, False),
                                                ("sbi-small-faces", args.sbi_small_face_draws, True)) if draws > 0])
    results = {}
    for name, views in (("colour+greystd", base), ("colour+greystd+lmregions", base + [(lab, sbi)])):
        all_lab = fh.side_by_side([v[0] for v in views])
        all_sbi = fh.side_by_side([v[1] for v in views])
        labels = {str(f): int(y) for f, y in zip(all_lab.files, all_lab.labels)}
        clf = fh.FrameClassifier(0.001, 1.0, 0.0, 0.5)
        runs = [fh.shuffled_run(clf, all_lab, all_sbi, sorted(labels), labels, 5, s, True)
                for s in range(args.repeats)]
        results[name] = fh.spread(runs)
        mean = results[name]["mean"]
        lofo = np.mean([v for k, v in mean.items() if k.startswith("lofo:")])
        print(f"{name}: dev pooled {mean['pooled']:.3f}, with real videos {mean['pooled+realvid']:.3f}, "
              f"dfl {mean['dfl']:.3f}, mean leave-family-out {lofo:.3f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
