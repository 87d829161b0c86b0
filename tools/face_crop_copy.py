"""A labelled manifest's clips and pictures cut down to their face, as face-crop datasets hold them.

    python -m tools.face_crop_copy MANIFEST OUT [--size 224] [--margin 0] [--frames 90]
    stream-guard evaluate --manifest OUT/MANIFEST.tsv

Many datasets and moderation queues keep only a square crop of each face (VoxCeleb's 224 px clips,
UTKFace's 200 px pictures), where the face fills the frame and its surroundings are gone. Each file's
largest face is followed (its detector box, smoothed over frames) and cut out as a ``size`` px square
``1 + 2 * margin`` times the box's side, pixels beyond the frame repeating its edge; videos are written as
H.264 (CRF 18, the first ``frames`` frames with a face), pictures as PNG. OUT/MANIFEST.tsv lists them
with their labels, named as before so the families stay. A file in which no face is found is left out
and named. Recordings at URLs are left out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import cv2
import numpy as np

from stream_guard.errors import ConfigError
from stream_guard.evaluate import read_manifest
from stream_guard.faces.crop import crop_face
from stream_guard.faces.detector import FaceDetector
from stream_guard.file_analysis import IMAGE_SUFFIXES

BOX_SMOOTHING = 0.3  # weight of each frame's box in the followed box


class FaceFollower:
    """The largest face's box over a clip's frames, smoothed (None until a face is seen)."""

    def __init__(self, detector: FaceDetector) -> None:
        self.detector = detector
        self.box: np.ndarray | None = None

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        found = self.detector.detect(rgb)
        if len(found):
            box = found.boxes[int(np.argmax(found.boxes[:, 2] - found.boxes[:, 0]))]
            self.box = box if self.box is None else (1 - BOX_SMOOTHING) * self.box + BOX_SMOOTHING * box
        return self.box


def crop_video(source: Path, target: Path, detector: FaceDetector, size: int, margin: float, frames: int) -> int:
    """Writes ``source``'s face as a ``size`` px H.264 clip at ``target``; returns the frames written (0: no face,
    and no file)."""
    follow = FaceFollower(detector)
    crops = []
    with av.open(str(source)) as src:
        if not src.streams.video:
            raise ValueError("it has no video stream")
        rate = src.streams.video[0].average_rate or 25
        for frame in src.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            box = follow(rgb)
            if box is not None:
                crops.append(crop_face(rgb, box, size, margin))
            if len(crops) >= frames:
                break
    if crops:
        with av.open(str(target), "w") as dst:
            stream = dst.add_stream("libx264", rate=rate)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18"}
            for crop in crops:
                dst.mux(stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")))
            dst.mux(stream.encode(None))
    return len(crops)


def crop_picture(source: Path, target: Path, detector: FaceDetector, size: int, margin: float) -> int:
    """Writes ``source``'s largest face as a ``size`` px PNG at ``target``; 1, or 0 where it has no face."""
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a picture OpenCV can read")
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    box = FaceFollower(detector)(rgb)
    if box is None:
        return 0
    cv2.imwrite(str(target), cv2.cvtColor(crop_face(rgb, box, size, margin), cv2.COLOR_RGB2BGR))
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.face_crop_copy", description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path, help="a labelled manifest (file and label columns)")
    parser.add_argument("out", type=Path, help="folder for the crops and their MANIFEST.tsv")
    parser.add_argument("--size", type=int, default=224, help="side of the crops in pixels (default 224)")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="added around the face box on each side, as a share of its side (default 0)")
    parser.add_argument("--frames", type=int, default=90,
                        help="frames with a face to keep of each video (default 90)")
    args = parser.parse_args(argv)
    try:
        rows = read_manifest(args.manifest)
    except ConfigError as e:
        parser.exit(2, f"face_crop_copy: error: {e}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    detector = FaceDetector()
    listed, names = [], set()
    for row in rows:
        if not isinstance(row.path, Path):
            print(f"left out (a URL): {row.path}", file=sys.stderr)
            continue
        picture = row.path.suffix.lower() in IMAGE_SUFFIXES
        target = args.out / (row.path.stem + (".png" if picture else ".mp4"))
        if target.name in names:  # real/a.mp4 and fake/a.mp4
            target = target.with_stem(f"{target.stem}-{len(names)}")
        try:
            written = (crop_picture(row.path, target, detector, args.size, args.margin) if picture
                       else crop_video(row.path, target, detector, args.size, args.margin, args.frames))
        except (av.FFmpegError, OSError, ValueError) as e:
            print(f"left out (cannot read it: {e}): {row.path}", file=sys.stderr)
            continue
        if not written:
            print(f"left out (no face found): {row.path}", file=sys.stderr)
            continue
        names.add(target.name)
        listed.append(f"{target.name}\t{row.label}\n")
    (args.out / "MANIFEST.tsv").write_text("file\tlabel\n" + "".join(listed), encoding="utf-8")
    print(f"{args.out / 'MANIFEST.tsv'}: {len(listed)} of {len(rows)} files, faces cut out at {args.size} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
