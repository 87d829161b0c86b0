"""How well the faces that only the detector's tiles find hold up (``FaceDetector.confirm_tile_faces``).

Tiles (frames of 1400 px or more; pictures; ``--detect-tiles always``) see the frame 1.67x closer
than the whole-frame pass: they find small faces it misses, and also parts of faces and face-like
patterns. Two measurements on real media from a data folder (searched recursively):

* video frames and pictures: every box the tiles find that no whole-frame face overlaps, and
  whether the confirmation keeps it; on talking heads nearly all of them are false faces, in
  group photos most are true;
* 3x3 galleries of those frames in 1280x720, as a video call shows them: the boxes only the tiles
  find there are mostly small true faces, which the confirmation should keep.

    python -m tools.tile_faces_check ../shared/data --videos 100

``--show`` lists each box (score, side as a share of the frame's long side, share inside a
whole-frame face, kept or dropped, where) so a person can look at the frames.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import av
import cv2
import numpy as np

from stream_guard.faces.detector import (DetectorOptions, FaceDetector, inside_share, inside_tile, iou_one_to_many,
                                         tile_grid, weighted_nms)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi")
PICTURE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
GALLERY = (1280, 720)


def sample_frames(path: Path, n: int) -> list[np.ndarray]:
    """``n`` RGB frames spread over the video (among its first 90 if it does not say how many it has)."""
    with av.open(str(path)) as container:
        total = container.streams.video[0].frames or 90
        wanted = {int(total * k / (n + 1)) for k in range(1, n + 1)}
        frames = []
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
            if i >= max(wanted):
                break
    return frames


def gallery(frames: list[np.ndarray]) -> np.ndarray:
    """Up to nine frames shrunk into a 3x3 call gallery on a dark 1280x720 window."""
    canvas = np.full((GALLERY[1], GALLERY[0], 3), 40, np.uint8)
    for index, image in enumerate(frames[:9]):
        row, column = divmod(index, 3)
        x0, y0 = 10 + column * 423, 10 + row * 236
        scale = min(413 / image.shape[1], 226 / image.shape[0])
        size = (max(1, int(image.shape[1] * scale)), max(1, int(image.shape[0] * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        canvas[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return canvas


class TileOnly:
    """The boxes the four tiles find that no whole-frame face overlaps, and the confirmation's say on each."""

    def __init__(self) -> None:
        self.detector = FaceDetector(DetectorOptions(tile_above=0))

    def __call__(self, image: np.ndarray) -> list[tuple[float, float, float, bool]]:
        """(score, side as a share of the long side, share inside a whole-frame face, kept) per box."""
        h, w = image.shape[:2]
        tiles = tile_grid(w, h)
        found = self.detector.detect_batch([image] + [image[y0:y1, x0:x1] for x0, y0, x1, y1 in tiles])
        whole = found[0].boxes
        parts = [inside_tile(d, t, w, h) for d, t in zip(found[1:], tiles)]  # as the detector takes them
        iou = self.detector.options.nms_iou
        if not sum(len(d) for d in parts):
            return []
        scores, merged, _ = weighted_nms(np.concatenate([d.scores for d in parts]),
                                         np.concatenate([d.boxes for d in parts]),
                                         np.concatenate([d.keypoints for d in parts]), iou)
        boxes = [(box, score) for box, score in zip(merged, scores)
                 if not (len(whole) and (iou_one_to_many(box, whole) > iou).any())]
        if not boxes:
            return []
        candidates = np.array([box for box, _ in boxes], np.float32)
        kept = self.detector.confirm_tile_faces(image, candidates, whole)
        return [(float(score), float(max(box[2] - box[0], box[3] - box[1]) / max(h, w)),
                 float(inside_share(box, whole).max()) if len(whole) else 0.0,
                 bool(keep)) for (box, score), keep in zip(boxes, kept)]


def media_parser(description: str, frames: int) -> argparse.ArgumentParser:
    """The command line these measuring tools share: a data folder, how many of its videos, frames of each."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("data", type=Path, help="a folder of videos and pictures (searched recursively)")
    parser.add_argument("--videos", type=int, default=60, help="how many videos to sample (default 60)")
    parser.add_argument("--frames", type=int, default=frames, help=f"frames per video (default {frames})")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def list_media(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """The videos (shuffled by ``--seed``) and pictures under ``args.data``; a usage error if there are none."""
    media = sorted(p for p in args.data.rglob("*") if p.is_file())
    videos = [p for p in media if p.suffix.lower() in VIDEO_SUFFIXES]
    pictures = [p for p in media if p.suffix.lower() in PICTURE_SUFFIXES]
    if not videos and not pictures:
        parser.error(f"{args.data}: no videos or pictures found")
    random.Random(args.seed).shuffle(videos)
    return videos, pictures


def main(argv: list[str] | None = None) -> int:
    parser = media_parser(__doc__.split("\n\n")[0], frames=3)
    parser.add_argument("--galleries", type=int, default=20, help="how many 3x3 galleries to make (default 20)")
    parser.add_argument("--show", action="store_true", help="list every box")
    args = parser.parse_args(argv)
    videos, pictures = list_media(parser, args)
    frames = [(image, path.name) for path in videos[:args.videos] for image in sample_frames(path, args.frames)]
    stills = [(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), path.name) for path in pictures
              for image in [cv2.imread(str(path))] if image is not None]
    pool = [image for image, _ in frames + stills]
    random.Random(args.seed).shuffle(pool)
    galleries = [(gallery(pool[k:k + 9]), f"gallery {k // 9}") for k in range(0, len(pool) - 8, 9)][:args.galleries]
    tile_only = TileOnly()
    for name, images in (("video frames", frames), ("pictures", stills), ("3x3 galleries", galleries)):
        rows = [(*row, where) for image, where in images for row in tile_only(image)]
        kept = sum(1 for row in rows if row[3])
        print(f"{name}: {len(images)}, {len(rows)} box(es) only the tiles found, {kept} kept, {len(rows) - kept} "
              "dropped")
        if args.show:
            for score, side, inside, keep, where in sorted(rows, reverse=True):
                print(f"  score {score:.3f}  side {side:.3f}  inside a face {inside:.2f}  "
                      f"{'kept   ' if keep else 'dropped'}  {where}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
