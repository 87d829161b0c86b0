"""How a stored picture is displayed: stretched to square pixels, then turned and mirrored.

**Pixel shape.** Anamorphic video (DVB and DVD standard definition, HDV) stores pictures whose
pixels are not square: a 16:9 PAL broadcast is 720x576 pixels with a sample aspect ratio of
64:45, shown 1024x576. Faces read from the stored picture are squeezed, so frames are stretched
to square pixels first (never shrunk: the shorter side grows).

**Orientation.** Phones record portrait video as landscape pictures plus a display matrix (the MP4/MOV track
header's ``tkhd`` matrix, FFmpeg's ``DISPLAYMATRIX`` side data) that says "show this turned
90 degrees". Players obey it; decoded frames come out as stored. A face lying on its side is
not found by the face detector, and a recording of it would be sideways, so every frame is
turned upright before anything else sees it.

The matrix maps a stored pixel ``(x, y)`` to the displayed ``(a*x + c*y + tx, b*x + d*y + ty)``
(ISO/IEC 14496-12, y pointing down; ``a b c d`` in 16.16 fixed point). Only the eight
right-angle orientations (four turns, each optionally mirrored) are applied; a matrix that
turns by another angle is left alone, as most players do.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

# Sample aspect ratios outside this range are taken as damaged metadata and ignored.
_SANE_ASPECT = (Fraction(1, 4), Fraction(4, 1))
# Off-axis terms below this share of the on-axis ones count as zero (rounding in the writer).
_RIGHT_ANGLE_TOLERANCE = 0.02


@dataclass(frozen=True, slots=True)
class Orientation:
    """How to turn a stored picture into the displayed one: transpose first, then flip."""

    transpose: bool = False
    flip_horizontal: bool = False
    flip_vertical: bool = False

    @property
    def is_upright(self) -> bool:
        """True when stored and displayed pictures are the same."""
        return not (self.transpose or self.flip_horizontal or self.flip_vertical)

    def display_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` of the displayed picture for a stored one of ``width x height``."""
        return (height, width) if self.transpose else (width, height)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The displayed picture of a stored ``HxWxC`` image (a new C-contiguous array unless upright)."""
        out = cv2.transpose(image) if self.transpose else image
        if self.flip_horizontal and self.flip_vertical:
            return cv2.flip(out, -1)
        if self.flip_horizontal:
            return cv2.flip(out, 1)
        if self.flip_vertical:
            return cv2.flip(out, 0)
        return out

    def describe(self) -> str:
        """In words, e.g. ``"turned 90 degrees clockwise"`` (for logs)."""
        turns = {
            (False, False, False): "upright",
            (True, True, False): "turned 90 degrees clockwise",
            (True, False, True): "turned 90 degrees anticlockwise",
            (False, True, True): "turned 180 degrees",
            (False, True, False): "mirrored left to right",
            (False, False, True): "mirrored top to bottom",
            (True, False, False): "mirrored across the main diagonal",
            (True, True, True): "mirrored across the anti-diagonal",
        }
        return turns[(self.transpose, self.flip_horizontal, self.flip_vertical)]


UPRIGHT = Orientation()


def orientation_from_matrix(matrix: np.ndarray | list[int]) -> Orientation:
    """The orientation of a 3x3 display matrix given as its 9 int32 values, row by row."""
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    on_axis, off_axis = abs(a) + abs(d), abs(b) + abs(c)
    if on_axis > 0 and off_axis <= _RIGHT_ANGLE_TOLERANCE * on_axis and a != 0 and d != 0:
        # x' = a*x, y' = d*y
        return Orientation(False, a < 0, d < 0)
    if off_axis > 0 and on_axis <= _RIGHT_ANGLE_TOLERANCE * off_axis and b != 0 and c != 0:
        # x' = c*y, y' = b*x: displayed rows follow stored columns (a transpose), then the signs flip
        return Orientation(True, c < 0, b < 0)
    return UPRIGHT  # degenerate, or not a right angle


# A frame's turn anticlockwise in degrees (PyAV's ``VideoFrame.rotation``) as an orientation.
_TURNS = {0: UPRIGHT, 90: Orientation(True, False, True), -90: Orientation(True, True, False),
          180: Orientation(False, True, True), -180: Orientation(False, True, True)}


def frame_orientation(frame: av.VideoFrame) -> Orientation:
    """The orientation a decoded frame's display matrix asks for (upright when it has none)."""
    try:
        listed = list(frame.side_data)
    except ValueError:
        # PyAV 18.1 cannot list a frame's side data when one is of a type newer than its table: FFmpeg 8
        # attaches the EXIF block of each JPEG (camera MJPEG video) so. Its EXIF orientation is also given
        # as a display matrix, read here through its turn alone (a mirrored EXIF orientation is left
        # unmirrored).
        return _TURNS.get(round(frame.rotation), UPRIGHT)
    for side_data in listed:
        if side_data.type == av.sidedata.sidedata.Type.DISPLAYMATRIX:
            values = np.frombuffer(bytes(side_data), dtype=np.int32)
            if values.size >= 9:
                return orientation_from_matrix(values)
    return UPRIGHT


def square_pixel_size(width: int, height: int, sample_aspect: Fraction | None) -> tuple[int, int]:
    """``(width, height)`` of a ``width x height`` picture stretched to square pixels (even sides).

    Wide pixels (aspect > 1) widen the picture, tall ones heighten it; unknown, square or
    implausible aspects leave the size as it is."""
    if not sample_aspect or sample_aspect == 1 or not _SANE_ASPECT[0] <= sample_aspect <= _SANE_ASPECT[1]:
        return width, height
    if sample_aspect > 1:
        return 2 * max(1, round(width * sample_aspect / 2)), height
    return width, 2 * max(1, round(height / sample_aspect / 2))


@dataclass(frozen=True, slots=True)
class DisplayTransform:
    """Stored picture -> displayed picture: stretched to square pixels, then oriented."""

    sample_aspect: Fraction | None = None
    orientation: Orientation = UPRIGHT

    @property
    def stretches(self) -> bool:
        """True when the pixels are not square (and the aspect is plausible): frames are resized."""
        return square_pixel_size(2, 2, self.sample_aspect) != (2, 2)

    @property
    def is_identity(self) -> bool:
        """True when frames are used as decoded."""
        return self.orientation.is_upright and not self.stretches

    def display_size(self, width: int, height: int) -> tuple[int, int]:
        """``(width, height)`` displayed for a stored ``width x height`` picture."""
        return self.orientation.display_size(*square_pixel_size(width, height, self.sample_aspect))

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The displayed picture of a stored ``HxWxC`` image."""
        height, width = image.shape[:2]
        size = square_pixel_size(width, height, self.sample_aspect)
        if size != (width, height):
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        return self.orientation.apply(image)

    def describe(self) -> str:
        """In words, for logs: what is done to each frame."""
        steps = []
        if self.stretches:
            steps.append(f"stretched to square pixels (sample aspect ratio {self.sample_aspect})")
        if not self.orientation.is_upright:
            steps.append(self.orientation.describe() + " (display matrix)")
        return ", then ".join(steps) or "used as stored"


def stream_display(stream: av.video.stream.VideoStream, first_frame: av.VideoFrame | None) -> DisplayTransform:
    """The transform for a stream: its sample aspect ratio, and the first frame's display matrix."""
    sample_aspect = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    return DisplayTransform(sample_aspect, frame_orientation(first_frame) if first_frame is not None else UPRIGHT)
