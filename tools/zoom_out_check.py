"""How well the detector's zoomed-out look holds up (``FaceDetector.zoomed_out_faces``).

Where the detector finds no face in a frame, it looks once more with the frame zoomed out, for a
face too large for the model (a close-up, a dataset's face crop). Three measurements on real media
from a data folder (searched recursively):

* frames and pictures where the detector finds no face: how many the zoomed-out look finds a face in,
  before and after its rules (a clear face, large in the frame);
* frames where it does find a face: how the zoomed-out look's box for it compares (IoU, width ratio),
  as the model was fitted on crops of the usual boxes;
* strips of those frames beside the faces, where there is none: the false faces the zoomed-out look
  finds there, before and after its rules.

    python -m tools.zoom_out_check ../shared/data --videos 100 --frames 12
"""
from __future__ import annotations

import random

import cv2
import numpy as np

from stream_guard.faces.detector import DetectorOptions, FaceDetector, iou_one_to_many
from tools.tile_faces_check import list_media, media_parser, sample_frames

MIN_STRIP = 48  # px; narrower strips beside a face are left out
STRIP_GAP = 10  # px kept clear of a face's box (hair and ears lie outside it)


def face_free_strips(image: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """The parts of ``image`` left of, right of, above and below all of its faces' ``boxes``."""
    h, w = image.shape[:2]
    x1, y1 = int(boxes[:, 0].min()) - STRIP_GAP, int(boxes[:, 1].min()) - STRIP_GAP
    x2, y2 = int(boxes[:, 2].max()) + STRIP_GAP, int(boxes[:, 3].max()) + STRIP_GAP
    strips = [image[:, :max(0, x1)], image[:, min(w, x2):], image[:max(0, y1)], image[min(h, y2):]]
    return [np.ascontiguousarray(s) for s in strips if min(s.shape[:2]) >= MIN_STRIP]


def main(argv: list[str] | None = None) -> int:
    parser = media_parser(__doc__.split("\n\n")[0], frames=6)
    parser.add_argument("--pictures", type=int, default=200, help="how many pictures to sample (default 200)")
    args = parser.parse_args(argv)
    videos, pictures = list_media(parser, args)
    random.Random(args.seed).shuffle(pictures)
    detector = FaceDetector(DetectorOptions(zoom_out=False))
    frames = [image for path in videos[:args.videos] for image in sample_frames(path, args.frames)]
    stills = [cv2.cvtColor(image, cv2.COLOR_BGR2RGB) for path in pictures[:args.pictures]
              for image in [cv2.imread(str(path))] if image is not None]
    for name, images in (("video frames", frames), ("pictures", stills)):
        missed = found_raw = found_kept = 0
        agreement, strips, false_raw, false_kept = [], 0, 0, 0
        for image in images:
            faces = detector.detect(image)
            if not len(faces):
                missed += 1
                found_raw += bool(len(detector.zoomed_out_faces(image, only_large_clear=False)))
                found_kept += bool(len(detector.zoomed_out_faces(image)))
                continue
            zoomed = detector.zoomed_out_faces(image, only_large_clear=False)
            if len(zoomed):
                overlap = iou_one_to_many(faces.boxes[0], zoomed.boxes)
                best = zoomed.boxes[int(overlap.argmax())]
                width = faces.boxes[0, 2] - faces.boxes[0, 0]
                agreement.append((float(overlap.max()), float((best[2] - best[0]) / width)))
            for strip in face_free_strips(image, faces.boxes):
                if len(detector.detect(strip)):
                    continue  # a face the strip cut from a larger one, or one the whole frame missed
                strips += 1
                false_raw += bool(len(detector.zoomed_out_faces(strip, only_large_clear=False)))
                false_kept += bool(len(detector.zoomed_out_faces(strip)))
        print(f"{name}: {len(images)}, no face found in {missed}; zoomed out, a face in {found_raw}, "
              f"{found_kept} kept")
        if agreement:
            ious, widths = np.array(agreement).T
            print(f"  where a face was found, the zoomed-out box for it: IoU median {np.median(ious):.3f} "
                  f"(10th percentile {np.percentile(ious, 10):.3f}), width ratio median {np.median(widths):.3f} "
                  f"({len(agreement)} faces)")
        print(f"  face-free strips beside the faces: {strips}, a false face zoomed out in {false_raw}, "
              f"{false_kept} kept")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
