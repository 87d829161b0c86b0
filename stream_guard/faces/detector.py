"""Face detection with MediaPipe's BlazeFace models, run in ONNX Runtime.

The graphs are MediaPipe's own face detectors converted to ONNX
(``tools/convert_face_detector.py``; provenance in ``models/FACE_DETECTOR.md``). Around
the network we do what MediaPipe's face detection graph does, so results match it:

1. letterbox: the whole image, padded with black to a centred square, sampled with
   bilinear interpolation onto the model input (MediaPipe maps the square's corners onto
   the tensor's corners), values scaled to [-1, 1];
2. decode: SSD anchors (see :mod:`stream_guard.faces.anchors`), box centre/size and six
   keypoints as offsets in input pixels, scores ``sigmoid(clip(logit, -100, 100))``;
3. weighted non-maximum suppression: every cluster of boxes overlapping the best one by
   IoU > ``nms_iou`` becomes one detection, its box and keypoints the score-weighted mean,
   its score the best score;
4. map back to the input image's pixels. Boxes are not clipped to the image.

Beyond MediaPipe: large frames (and, on request, smaller ones) are also searched in four
overlapping tiles, for faces too small for the whole-frame pass; a face only the tiles found
must pass :meth:`FaceDetector.confirm_tile_faces` (apart from the faces the whole frame showed,
and a face again at a second look), as tiles seen closer also take parts of faces and
face-like patterns for faces. A frame where no face was found is looked at once more, zoomed out
(:meth:`FaceDetector.zoomed_out_faces`), for a face too large for the model: a close-up, a face crop.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Sequence

import cv2
import numpy as np

from stream_guard.errors import ConfigError, ModelError, ProviderUnavailableError
from stream_guard.faces.anchors import FULL_RANGE, SHORT_RANGE, AnchorSpec, anchor_centers
from stream_guard.paths import bundled_model
from stream_guard.types import FaceDetections

log = logging.getLogger(__name__)

NUM_KEYPOINTS = 6
SCORE_CLIP = 100.0


@dataclass(frozen=True, slots=True)
class DetectorModel:
    """One shipped face detector graph and how MediaPipe decodes it."""

    file_name: str
    anchors: AnchorSpec

    @property
    def input_size(self) -> int:
        return self.anchors.input_size


MODELS = MappingProxyType({
    "short": DetectorModel("face_detection_short_range.onnx", SHORT_RANGE),
    "full": DetectorModel("face_detection_full_range.onnx", FULL_RANGE),
})


@dataclass(frozen=True, slots=True)
class DetectorOptions:
    """``model``: "full" (faces up to ~5 m, 192 px input) or "short" (within ~2 m, 128 px);
    ``min_score``: keep detections scoring at least this; ``nms_iou``: boxes overlapping
    more than this are merged. ``tile_above``: frames whose long side is at least this many
    pixels are also searched in 2x2 overlapping tiles (one batched model call), because the
    model misses faces under ~12 px at its input size (e.g. ~110 px faces on a 1600 px
    screen); 0 turns tiling off. There every box is the score-weighted mean of the passes that
    found it. ``add_tiles_above``: smaller frames from this size on are searched in tiles too,
    which only add the faces the whole-frame pass missed (its own boxes stay as they are); 0, the
    default, does not. ``zoom_out``: a frame where no face was found is looked at once more, zoomed
    out (:meth:`FaceDetector.zoomed_out_faces`)."""

    model: Literal["full", "short"] = "full"
    min_score: float = 0.5
    nms_iou: float = 0.3
    tile_above: int = 1400
    add_tiles_above: int = 0
    zoom_out: bool = True

    def tiling(self, width: int, height: int) -> Literal["merge", "add"] | None:
        """How a ``width x height`` frame is searched in tiles: ``merge`` (from ``tile_above``), ``add``
        (from ``add_tiles_above``), or not at all (None)."""
        size = max(width, height)
        if self.tile_above and size >= self.tile_above:
            return "merge"
        return "add" if self.add_tiles_above and size >= self.add_tiles_above else None

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"unknown face detector model {self.model!r}; choose from {sorted(MODELS)}")
        if not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(f"face detector min_score must be in [0, 1], got {self.min_score}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ConfigError(f"face detector nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.tile_above < 0:
            raise ConfigError(f"face detector tile_above must be >= 0, got {self.tile_above}")


DETECT_TILES = ("auto", "always", "off")


def detector_options(model: str = "full", tiles: str = "auto") -> DetectorOptions:
    """The detector's options from the command line: ``tiles`` ``auto`` searches frames in tiles from
    ``tile_above``; ``always`` also searches every smaller frame in tiles that add the faces its whole-frame pass missed
    (a video call's gallery view: many small faces in a 720p window); ``off`` never searches in tiles."""
    if tiles not in DETECT_TILES:
        raise ConfigError(f"unknown tiles choice {tiles!r}; choose from {', '.join(DETECT_TILES)}")
    if tiles == "off":
        return DetectorOptions(model=model, tile_above=0)  # type: ignore[arg-type]
    return DetectorOptions(model=model, add_tiles_above=1 if tiles == "always" else 0)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Where the model input lies in the image: a square of side ``size`` pixels whose
    top-left corner is at ``(x0, y0)`` (negative on the padded side)."""

    x0: float
    y0: float
    size: float

    @staticmethod
    def for_image(width: int, height: int, zoom_out: float = 1.0) -> "Letterbox":
        """The centred square around the image, ``zoom_out`` times its longer side."""
        size = float(max(width, height)) * zoom_out
        return Letterbox((width - size) / 2.0, (height - size) / 2.0, size)

    def matrix(self, input_size: int) -> np.ndarray:
        """2x3 affine map from image pixels to model input pixels."""
        k = input_size / self.size
        return np.array([[k, 0.0, -self.x0 * k], [0.0, k, -self.y0 * k]], np.float64)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Map ``[..., 2]`` points from [0, 1] model input coordinates to image pixels."""
        return points * np.float32(self.size) + np.array([self.x0, self.y0], np.float32)


def letterbox(image: np.ndarray, input_size: int, out: np.ndarray, zoom_out: float = 1.0) -> Letterbox:
    """Write the letterboxed ``image`` into ``out`` (float32 ``[S, S, 3]`` in [-1, 1]), in a black square
    ``zoom_out`` times its longer side."""
    box = Letterbox.for_image(image.shape[1], image.shape[0], zoom_out)
    warped = cv2.warpAffine(
        image, box.matrix(input_size), (input_size, input_size),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
    )
    np.multiply(warped, np.float32(2.0 / 255.0), out=out, dtype=np.float32)
    out -= np.float32(1.0)
    return box


def decode(
    regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray, input_size: int, min_score: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, boxes ``[x1, y1, x2, y2]`` and keypoints ``[6, 2]`` in [0, 1] input coordinates
    of the anchors scoring at least ``min_score`` (boxes with a negative size dropped)."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)))
    keep = np.flatnonzero(scores >= min_score)
    raw = regressors[keep] / np.float32(input_size)
    centers = anchors[keep]
    middle = raw[:, 0:2] + centers
    half = raw[:, 2:4] / 2.0
    boxes = np.concatenate([middle - half, middle + half], axis=1)
    keypoints = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + centers[:, None, :]
    valid = np.all(raw[:, 2:4] >= 0.0, axis=1)
    return scores[keep][valid].astype(np.float32), boxes[valid], keypoints[valid]


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``[x1, y1, x2, y2]`` box with each of ``boxes`` (0 where the union is empty)."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0.0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0.0, None)
    inter = width * height
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0.0)


def weighted_nms(
    scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-maximum suppression; detections come out best first."""
    remaining = np.argsort(-scores, kind="stable")
    out_scores, out_boxes, out_points = [], [], []
    while remaining.size:
        top = remaining[0]
        cluster = iou_one_to_many(boxes[top], boxes[remaining]) > iou_threshold
        members = remaining[cluster] if cluster.any() else remaining[:1]
        weights = scores[members] / scores[members].sum()
        out_scores.append(scores[top])
        out_boxes.append(weights @ boxes[members])
        out_points.append(np.tensordot(weights, keypoints[members], axes=1))
        if not cluster.any():  # a degenerate best box: MediaPipe stops here as well
            break
        remaining = remaining[~cluster]
    return np.array(out_scores, np.float32), np.array(out_boxes, np.float32), np.array(out_points, np.float32)


def _one_line(error: Exception) -> str:
    """The first non-empty line of an error message (ONNX Runtime's can run to many)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("face detector expects an RGB uint8 array of shape (H, W, 3)")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"face detector got an empty image of shape {image.shape}")


def _choose_providers(requested: Sequence[str]) -> list[str]:
    """The requested ONNX Runtime providers that this installation has, in order."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    chosen = [p for p in requested if p in available]
    if not chosen:
        raise ProviderUnavailableError(
            f"none of the ONNX Runtime providers {list(requested)} is available here (have {sorted(available)})"
        )
    return chosen


def _open_session(path, providers: list[str], intra_op_threads: int):
    """An ONNX Runtime session for ``path``; any failure becomes a :class:`ModelError`."""
    import onnxruntime as ort

    if not path.is_file():
        raise ModelError(f"face detector model not found: {path} (see tools/convert_face_detector.py)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime's errors derive from Exception only
        raise ModelError(f"cannot load face detector model {path}: {_one_line(e)}") from e


def tile_grid(width: int, height: int, fraction: float = 0.6) -> list[tuple[int, int, int, int]]:
    """Four overlapping tiles ``(x0, y0, x1, y1)``, each ``fraction`` of the frame per side."""
    tw, th = int(round(width * fraction)), int(round(height * fraction))
    return [(x0, y0, x0 + tw, y0 + th) for y0 in (0, height - th) for x0 in (0, width - tw)]


# A tile-only box lying at least this much inside a face the whole frame showed is a part of it.
TILE_ONLY_MAX_INSIDE = 0.5
# A tile-only face is looked at again in a square this many times its size around it (a face then fills a
# third of the detector's input, where it finds faces best): a hand, a sleeve or an armour's pattern that a
# tile took for a face is seldom a face there, a small face in a gallery nearly always is.
SECOND_LOOK_SCALE = 3.0

# A face that fills the frame (a webcam close-up, a dataset's 224 px face crop) is too large for the model's
# anchors: the full-range pass finds none on about 1 in 60 frames of ../shared/data's videos. Zoomed out into a
# black square twice the frame's side it finds most of them, with the boxes it gives at the usual size (median IoU
# 0.92 against them), where the short-range model's are smaller and lower (0.80). It keeps only a large, clear
# face: on face-free parts of real frames it otherwise finds necks, hair and ears, scoring 0.5-0.67
# (models/RESEARCH_LOG.md).
ZOOM_OUT_SCALE = 2.0
ZOOM_OUT_MIN_SCORE = 0.7
ZOOM_OUT_MIN_SIDE = 0.6  # of the frame's shorter side


def inside_share(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The share of ``box``'s area that lies inside each of ``boxes``."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0.0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0.0, None)
    return width * height / max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-6)


def adds_a_face(box: np.ndarray, whole_boxes: np.ndarray, iou: float) -> bool:
    """Whether a box found only in a tile is apart from every face the whole-frame pass found
    (``whole_boxes``): none overlaps it by ``iou`` or holds most of it (:data:`TILE_ONLY_MAX_INSIDE`);
    tiles seen closer find parts of a face the whole frame showed (an eye, a mouth)."""
    if not len(whole_boxes):
        return True
    return not ((iou_one_to_many(box, whole_boxes) > iou).any()
                or (inside_share(box, whole_boxes) >= TILE_ONLY_MAX_INSIDE).any())


def _square_around(image: np.ndarray, box: np.ndarray, scale: float) -> np.ndarray:
    """A square ``scale`` times the box's longer side, centred on it, black beyond the image's edges."""
    side = max(2, int(round(scale * max(box[2] - box[0], box[3] - box[1]))))
    x0, y0 = int(round((box[0] + box[2] - side) / 2)), int(round((box[1] + box[3] - side) / 2))
    square = np.zeros((side, side, 3), np.uint8)
    h, w = image.shape[:2]
    ax0, ay0, ax1, ay1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if ax1 > ax0 and ay1 > ay0:
        square[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = image[ay0:ay1, ax0:ax1]
    return square


def inside_tile(found: FaceDetections, tile: tuple[int, int, int, int], width: int, height: int,
                 edge_px: float = 2.0) -> FaceDetections:
    """Move a tile's detections to frame coordinates, dropping faces cut by an inner tile edge
    (the neighbouring tile or the whole-frame pass sees them whole)."""
    x0, y0, x1, y1 = tile
    if len(found) == 0:
        return found
    b = found.boxes
    cut = (((b[:, 0] <= edge_px) & (x0 > 0)) | ((b[:, 1] <= edge_px) & (y0 > 0))
           | ((b[:, 2] >= x1 - x0 - edge_px) & (x1 < width)) | ((b[:, 3] >= y1 - y0 - edge_px) & (y1 < height)))
    keep = found.select(~cut)
    offset = np.array([x0, y0], np.float32)
    return FaceDetections(keep.boxes + np.tile(offset, 2), keep.scores, keep.keypoints + offset)


class FaceDetector:
    """Finds faces in RGB images; one instance per thread (it owns an ORT session)."""

    def __init__(
        self,
        options: DetectorOptions = DetectorOptions(),
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 1,
    ) -> None:
        self.options = options
        self._model = MODELS[options.model]
        try:
            path = bundled_model(self._model.file_name)
        except FileNotFoundError as e:
            raise ModelError(f"face detector model folder not found: {e}") from e
        self._session = _open_session(path, _choose_providers(providers), intra_op_threads)
        self._check_graph(path)
        self._anchors = anchor_centers(self._model.anchors)
        log.info("face detector %s on %s", path.name, self._session.get_providers()[0])

    def _check_graph(self, path) -> None:
        size = self._model.input_size
        inputs = self._session.get_inputs()
        shape = list(inputs[0].shape) if inputs else []
        names = {o.name for o in self._session.get_outputs()}
        if len(shape) != 4 or shape[1:] != [size, size, 3] or not {"regressors", "classificators"} <= names:
            raise ModelError(f"{path.name} is not a {size}x{size} BlazeFace graph (input {shape}, outputs {sorted(names)})")
        self._input_name = inputs[0].name
        self._dynamic_batch = not isinstance(shape[0], int)

    @property
    def input_size(self) -> int:
        """Side of the square model input in pixels."""
        return self._model.input_size

    def detect(self, image: np.ndarray) -> FaceDetections:
        """Faces in one RGB uint8 ``(H, W, 3)`` image, in its pixel coordinates, best first.
        Large images are searched whole and in overlapping tiles (see ``tile_above`` and
        ``add_tiles_above``); where none is found, zoomed out (``zoom_out``)."""
        found = self._detect_in_tiles(image)
        if len(found) or not self.options.zoom_out:
            return found
        return self.zoomed_out_faces(image)

    def zoomed_out_faces(self, image: np.ndarray, only_large_clear: bool = True) -> FaceDetections:
        """Faces too large for the model's anchors: the image zoomed out, in the middle of a black square
        :data:`ZOOM_OUT_SCALE` times its longer side. With ``only_large_clear``, only clear faces
        (:data:`ZOOM_OUT_MIN_SCORE`) at least :data:`ZOOM_OUT_MIN_SIDE` of the image's shorter side wide."""
        _check_image(image)
        size = self.input_size
        tensor = np.empty((1, size, size, 3), np.float32)
        box = letterbox(image, size, tensor[0], ZOOM_OUT_SCALE)
        regressors, logits = self._run(tensor)
        found = self._postprocess(regressors[0], logits[0], box)
        if len(found) == 0 or not only_large_clear:
            return found
        wide = found.boxes[:, 2] - found.boxes[:, 0] >= ZOOM_OUT_MIN_SIDE * min(image.shape[:2])
        return found.select(wide & (found.scores >= ZOOM_OUT_MIN_SCORE))

    def _detect_in_tiles(self, image: np.ndarray) -> FaceDetections:
        """The whole-frame pass, and the tiles' where the frame's size asks for them."""
        h, w = image.shape[:2]
        tiling = self.options.tiling(w, h)
        if tiling is None:
            return self.detect_batch([image])[0]
        tiles = tile_grid(w, h)
        found = self.detect_batch([image] + [image[y0:y1, x0:x1] for x0, y0, x1, y1 in tiles])
        whole, parts = found[0], [inside_tile(d, t, w, h) for d, t in zip(found[1:], tiles)]
        if tiling == "merge":  # every pass's boxes merged; those no whole-frame box is part of must be confirmed
            merged = self._merged([whole, *parts])
            tile_only = np.array([not (len(whole) and (iou_one_to_many(box, whole.boxes) > self.options.nms_iou).any())
                                  for box in merged.boxes], bool)
            keep = ~tile_only
            keep[tile_only] = self.confirm_tile_faces(image, merged.boxes[tile_only], whole.boxes)
            return merged.select(keep)
        extra = self._merged(parts)  # "add": the whole-frame boxes stay as they are, tiles only add faces
        extra = extra.select(self.confirm_tile_faces(image, extra.boxes, whole.boxes)) if len(extra) else extra
        both = FaceDetections(np.concatenate([whole.boxes, extra.boxes]), np.concatenate([whole.scores, extra.scores]),
                              np.concatenate([whole.keypoints, extra.keypoints]))
        return both.select(np.argsort(-both.scores, kind="stable"))

    def confirm_tile_faces(self, image: np.ndarray, boxes: np.ndarray, whole_boxes: np.ndarray) -> np.ndarray:
        """Which boxes found only in tiles are faces: :func:`adds_a_face`, and a second look (the
        detector on a square :data:`SECOND_LOOK_SCALE` times the box around it, where a face fills
        a third of its input) still finds a face there, at its centre."""
        keep = np.array([adds_a_face(box, whole_boxes, self.options.nms_iou) for box in boxes], bool)
        if keep.any():
            centred = [_square_around(image, box, SECOND_LOOK_SCALE) for box in boxes[keep]]
            looks = self.detect_batch(centred)
            keep[keep] = [bool(((d.boxes[:, 0] < c.shape[1] / 2) & (c.shape[1] / 2 < d.boxes[:, 2])
                                & (d.boxes[:, 1] < c.shape[0] / 2) & (c.shape[0] / 2 < d.boxes[:, 3])).any())
                          for d, c in zip(looks, centred)]
        return keep

    def _merged(self, parts: Sequence[FaceDetections]) -> FaceDetections:
        """Several passes' detections as one: weighted non-maximum suppression over them all."""
        scores = np.concatenate([d.scores for d in parts])
        if scores.size == 0:
            return FaceDetections.empty()
        scores, boxes, keypoints = weighted_nms(scores, np.concatenate([d.boxes for d in parts]),
                                                np.concatenate([d.keypoints for d in parts]), self.options.nms_iou)
        return FaceDetections(boxes, scores, keypoints)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[FaceDetections]:
        """:meth:`detect` for several images, with one model call when the graph allows it."""
        if not images:
            return []
        for image in images:
            _check_image(image)
        size = self.input_size
        tensor = np.empty((len(images), size, size, 3), np.float32)
        boxes = [letterbox(image, size, tensor[i]) for i, image in enumerate(images)]
        regressors, logits = self._run(tensor)
        return [self._postprocess(regressors[i], logits[i], box) for i, box in enumerate(boxes)]

    def _run(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._session is None:
            raise ModelError("face detector used after close()")
        names = ["regressors", "classificators"]
        try:
            if self._dynamic_batch or tensor.shape[0] == 1:
                regressors, logits = self._session.run(names, {self._input_name: tensor})
                return regressors, logits
            parts = [self._session.run(names, {self._input_name: tensor[i : i + 1]}) for i in range(tensor.shape[0])]
        except Exception as e:  # onnxruntime's errors derive from Exception only
            raise ModelError(f"face detector inference failed: {_one_line(e)}") from e
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _postprocess(self, regressors: np.ndarray, logits: np.ndarray, box: Letterbox) -> FaceDetections:
        scores, boxes, keypoints = decode(regressors, logits, self._anchors, self.input_size, self.options.min_score)
        if scores.size == 0:
            return FaceDetections.empty()
        scores, boxes, keypoints = weighted_nms(scores, boxes, keypoints, self.options.nms_iou)
        boxes = box.to_image(boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        return FaceDetections(boxes.astype(np.float32), scores, box.to_image(keypoints).astype(np.float32))

    def close(self) -> None:
        """Release the ONNX Runtime session; safe to call twice."""
        self._session = None

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
