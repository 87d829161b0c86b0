"""Build the face-crop cache for SBI training and evaluation.

    python -m tools.sbi.prepare_faces /work/shared/data/train_real /work/cache/faces/train_real

Reads ``DATA/MANIFEST.tsv``; for every photo keeps up to ``--max-faces`` faces, for every
video follows the largest face at ``--hz`` frames per second. Each face track becomes one
``clips/<id>.npz`` holding ``frames`` ``[F, S, S, 3]`` RGB uint8 (square crops at
``--margin`` via :func:`stream_guard.faces.crop.crop_face`), and, in crop pixels, the
detector ``boxes`` ``[F, 4]``, ``keypoints`` ``[F, 6, 2]`` and 468 mesh ``landmarks``
``[F, 468, 2]``. ``index.tsv`` lists the clips with their file and label.
"""
from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from stream_guard.faces.crop import crop_face, crop_matrix, transform_points
from stream_guard.faces.landmarks import MODEL_FILE as FACE_MESH_MODEL
from stream_guard.faces.landmarks import FaceMesh
from stream_guard.paths import bundled_model
from stream_guard.sources.display import stream_display
from stream_guard.sources.tone_map import SdrPictures

# method_notes marking photos altered on purpose (data README): not natural real faces.
ALTERED = re.compile(r"converted to grayscale|collage|strongly (motion-)?blurred", re.IGNORECASE)
VIDEO_EXT = {".mp4", ".mpg", ".mov", ".avi", ".mkv", ".webm"}


@dataclass(frozen=True)
class PrepOptions:
    """How crops are cut and sampled."""

    size: int = 320
    margin: float = 0.5
    hz: float = 8.0
    max_frames: int = 64
    min_face: float = 40.0
    max_faces: int = 6
    min_mesh_score: float = 0.5


@dataclass
class Face:
    """One face in one frame, in full-image pixels."""

    box: np.ndarray
    keypoints: np.ndarray
    landmarks: np.ndarray


def read_manifest(folder: Path) -> list[dict[str, str]]:
    """Rows of ``folder/MANIFEST.tsv`` as dicts."""
    with open(folder / "MANIFEST.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def video_frames(path: Path, hz: float, max_frames: int) -> Iterator[tuple[float, np.ndarray]]:
    """``(time_s, rgb)`` frames sampled at about ``hz`` per second, as displayed: square pixels,
    upright and HDR tone-mapped, as the pipeline reads them."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        next_t = 0.0
        count = 0
        display, pictures = None, SdrPictures()
        for frame in container.decode(stream):
            if display is None:
                display = stream_display(stream, frame)
            t = float(frame.time) if frame.time is not None else count / hz
            if t + 1e-6 < next_t:
                continue
            next_t = t + 1.0 / hz
            yield t, display.apply(pictures.rgb(frame))
            count += 1
            if count >= max_frames:
                return


class FaceFinder:
    """Detector + face mesh: every usable face in an RGB image."""

    def __init__(self, mesh_path: Path, opts: PrepOptions) -> None:
        from stream_guard.faces.detector import DetectorOptions, FaceDetector

        self._detector = FaceDetector(DetectorOptions(model="full"))
        self._mesh = FaceMesh(mesh_path)
        self._opts = opts

    def find(self, rgb: np.ndarray) -> list[Face]:
        """Faces sorted by size, largest first, after size and mesh-score filters."""
        dets = self._detector.detect(rgb)
        faces = []
        for box, kps in zip(dets.boxes, dets.keypoints):
            if max(box[2] - box[0], box[3] - box[1]) < self._opts.min_face:
                continue
            pts, score = self._mesh.landmarks(rgb, box, kps)
            if score >= self._opts.min_mesh_score:
                faces.append(Face(box.astype(np.float32), kps.astype(np.float32), pts))
        faces.sort(key=lambda f: -float(f.box[2] - f.box[0]))
        return faces[: self._opts.max_faces]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / max(union, 1e-6)


def pack(rgbs: list[np.ndarray], faces: list[Face], opts: PrepOptions) -> dict[str, np.ndarray]:
    """Crop each face from its frame and move its geometry into crop pixels."""
    frames, boxes, kps, lms = [], [], [], []
    for rgb, face in zip(rgbs, faces):
        matrix = crop_matrix(face.box, opts.size, opts.margin)
        frames.append(crop_face(rgb, face.box, opts.size, opts.margin))
        corners = transform_points(face.box.reshape(2, 2), matrix)
        boxes.append(corners.reshape(4))
        kps.append(transform_points(face.keypoints, matrix))
        lms.append(transform_points(face.landmarks, matrix))
    return {
        "frames": np.stack(frames).astype(np.uint8),
        "boxes": np.stack(boxes).astype(np.float32),
        "keypoints": np.stack(kps).astype(np.float32),
        "landmarks": np.stack(lms).astype(np.float32),
    }


def photo_clips(path: Path, finder: FaceFinder, opts: PrepOptions) -> list[dict[str, np.ndarray]]:
    """One single-frame clip per face of a photo."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return []
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    faces = finder.find(rgb)
    # Tight face crops: the detector wants context around the face. Its zoomed-out look now finds most (the
    # pipeline's way); padding stays for the rest, as the shipped model's training faces were found so.
    if not faces:
        pad = int(0.4 * max(rgb.shape[:2]))
        padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        shift = np.float32(pad)
        faces = [Face(f.box - shift, f.keypoints - shift, f.landmarks - shift) for f in finder.find(padded)]
    return [pack([rgb], [face], opts) for face in faces]


def video_clips(path: Path, finder: FaceFinder, opts: PrepOptions, min_len: int = 4) -> list[dict[str, np.ndarray]]:
    """Follow the largest face; a jump (IoU < 0.3) or a miss starts a new clip."""
    clips: list[dict[str, np.ndarray]] = []
    rgbs: list[np.ndarray] = []
    faces: list[Face] = []
    times: list[float] = []

    def flush() -> None:
        if len(faces) >= min_len:
            clip = pack(rgbs, faces, opts)
            clip["times"] = np.asarray(times, np.float32)
            clips.append(clip)
        rgbs.clear(), faces.clear(), times.clear()

    for t, rgb in video_frames(path, opts.hz, opts.max_frames):
        found = finder.find(rgb)
        if not found:
            flush()
            continue
        face = found[0]
        if faces and _iou(faces[-1].box, face.box) < 0.3:
            near = [f for f in found if _iou(faces[-1].box, f.box) >= 0.3]
            if near:
                face = near[0]
            else:
                flush()
        rgbs.append(rgb), faces.append(face), times.append(t)
    flush()
    return clips


def clip_id(rel: str, k: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", rel.rsplit(".", 1)[0].replace("/", "__"))
    return f"{stem}__{k}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="data folder with MANIFEST.tsv")
    ap.add_argument("out", type=Path, help="cache folder (outside the repository)")
    ap.add_argument("--mesh", type=Path, default=bundled_model(FACE_MESH_MODEL), help="face-mesh ONNX")
    ap.add_argument("--size", type=int, default=PrepOptions.size)
    ap.add_argument("--margin", type=float, default=PrepOptions.margin)
    ap.add_argument("--hz", type=float, default=PrepOptions.hz)
    ap.add_argument("--max-frames", type=int, default=PrepOptions.max_frames)
    ap.add_argument("--max-faces", type=int, default=PrepOptions.max_faces)
    ap.add_argument("--limit", type=int, default=0, help="only the first N manifest rows (testing)")
    ap.add_argument("--keep-altered", action="store_true", help="keep photos that method_notes mark as altered")
    args = ap.parse_args(argv)
    opts = PrepOptions(size=args.size, margin=args.margin, hz=args.hz, max_frames=args.max_frames,
                       max_faces=args.max_faces)
    finder = FaceFinder(args.mesh, opts)
    (args.out / "clips").mkdir(parents=True, exist_ok=True)
    rows = read_manifest(args.data)
    if args.limit:
        rows = rows[: args.limit]
    index = []
    t0 = time.time()
    for i, row in enumerate(rows):
        rel = row["file"]
        if not args.keep_altered and ALTERED.search(row.get("method_notes", "")):
            print(f"skip altered {rel}", file=sys.stderr)
            continue
        path = args.data / rel
        is_video = path.suffix.lower() in VIDEO_EXT
        try:
            clips = video_clips(path, finder, opts) if is_video else photo_clips(path, finder, opts)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            print(f"skip unreadable {rel}: {e}", file=sys.stderr)
            continue
        for k, clip in enumerate(clips):
            cid = clip_id(rel, k)
            np.savez(args.out / "clips" / f"{cid}.npz", **clip)
            index.append((cid, rel, row["label"], "video" if is_video else "photo", len(clip["frames"])))
        print(f"[{i + 1}/{len(rows)}] {rel}: {len(clips)} clip(s), {time.time() - t0:.0f}s", flush=True)
    with open(args.out / "index.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["clip", "file", "label", "kind", "frames"])
        w.writerows(index)
    print(f"{len(index)} clips -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
