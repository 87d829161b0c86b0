"""Videos are read as players show them: upright (a phone's portrait clip is stored sideways
with a display matrix) and with square pixels (anamorphic video)."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from stream_guard.sources import PyAVSource, parse_source
from stream_guard.sources.display import UPRIGHT, DisplayTransform, orientation_from_matrix, square_pixel_size
from tests.conftest import run_cli
from tests.support.faces import one_face_moving
from tests.support.synth_video import make_test_clip

WIDTH, HEIGHT = 96, 64


def _blocks(i: int) -> np.ndarray:
    """A picture no turn or mirror leaves unchanged: four coloured blocks of different sizes."""
    rgb = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
    rgb[:16, :32] = (250, 30, 30)
    rgb[:16, 32:] = (30, 250, 30)
    rgb[40:, :48] = (30, 30, 250)
    rgb[16:48, 80:] = (230, 230, 230)
    return rgb


def _displayed(stored: np.ndarray, degrees: int, hflip: bool) -> np.ndarray:
    """What a player shows: turned ``degrees`` anticlockwise, then mirrored left to right."""
    shown = np.rot90(stored, k=(degrees // 90) % 4)
    return shown[:, ::-1] if hflip else shown


def _read_all(path: Path) -> tuple[tuple[int, int], list[np.ndarray], DisplayTransform]:
    source = PyAVSource(parse_source(str(path)))
    info = source.open()
    try:
        images = []
        for frame in source.frames():
            size = (frame.height, frame.width)  # known before the picture is converted
            images.append(frame.image)
            assert images[-1].shape[:2] == size
        return (info.width, info.height), images, source.display
    finally:
        source.close()


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip", [False, True])
def test_frames_are_turned_as_a_player_shows_them(tmp_path: Path, degrees: int, hflip: bool) -> None:
    clip = make_test_clip(tmp_path / "c.mp4", seconds=0.5, width=WIDTH, height=HEIGHT, fps=10, draw=_blocks,
                          display_rotation=degrees, display_hflip=hflip)
    size, images, display = _read_all(clip)
    orientation = display.orientation
    expected = _displayed(_blocks(0), degrees, hflip)
    assert size == (expected.shape[1], expected.shape[0])
    assert orientation.is_upright == (degrees == 0 and not hflip)
    assert len(images) == 5
    for image in images:
        assert image.shape == expected.shape and image.flags.c_contiguous
        assert np.abs(image.astype(int) - expected).mean() < 6  # lossy yuv420p: small error only
    if not orientation.is_upright:  # the check can fail: the stored picture is far from the shown one
        stored = _blocks(0)
        assert stored.shape != expected.shape or np.abs(stored.astype(int) - expected).mean() > 30


@pytest.mark.parametrize("matrix", [
    [0, 0, 0, 0, 0, 0, 0, 0, 1 << 30],  # all zero: degenerate
    [56756, 32768, 0, -32768, 56756, 0, 0, 0, 1 << 30],  # turned 30 degrees: not a right angle
])
def test_other_matrices_leave_frames_as_stored(matrix: list[int]) -> None:
    assert orientation_from_matrix(matrix) == UPRIGHT


def test_portrait_phone_clip_is_watched_and_recorded_upright(tmp_path: Path) -> None:
    """A portrait recording stored as landscape with a 90-degree display matrix: the run sees
    and writes it portrait, and the face (upright only once turned) is judged in every window."""
    upright = one_face_moving(width=360, height=640, face_px=200)
    clip = make_test_clip(tmp_path / "phone.mp4", seconds=2.0, width=640, height=360, fps=15,
                          draw=lambda i: np.ascontiguousarray(np.rot90(upright(i), k=1)), display_rotation=-90)
    out, events = tmp_path / "out.mp4", tmp_path / "events.jsonl"
    result = run_cli("watch", str(clip), "--out", str(out), "--events", str(events))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    start = records[0]
    assert (start["type"], start["width"], start["height"]) == ("start", 360, 640)
    assert sum(r["type"] == "track" for r in records) >= 14  # 15 sampled frames; stored sideways: 6
    with av.open(str(out)) as container:
        frames = list(container.decode(container.streams.video[0]))
    assert len(frames) == 30
    assert {(f.width, f.height) for f in frames} == {(360, 640)}
    assert all(f.rotation == 0 for f in frames)  # written upright, no matrix left to apply twice


def test_training_faces_are_read_upright_too(tmp_path: Path) -> None:
    """``prepare_faces`` must crop what the pipeline sees, so it turns frames the same way."""
    from tools.sbi.prepare_faces import video_frames

    clip = make_test_clip(tmp_path / "c.mp4", seconds=0.5, width=WIDTH, height=HEIGHT, fps=10, draw=_blocks,
                          display_rotation=-90)
    frames = list(video_frames(clip, hz=10.0, max_frames=10))
    expected = _displayed(_blocks(0), -90, False)
    assert len(frames) == 5
    assert all(np.abs(rgb.astype(int) - expected).mean() < 6 for _, rgb in frames)


def test_photos_are_turned_by_their_exif_orientation(tmp_path: Path) -> None:
    """A phone photo stored sideways with EXIF orientation 6 ("turn 90 degrees clockwise")."""
    from stream_guard.file_analysis import read_picture

    (tmp_path / "photo.jpg").write_bytes(_jpeg_with_exif(np.ascontiguousarray(np.rot90(_blocks(0), k=1)), 6))
    image = read_picture(tmp_path / "photo.jpg")
    assert image.shape == _blocks(0).shape
    assert np.abs(image.astype(int) - _blocks(0)).mean() < 6


@pytest.mark.parametrize(("aspect", "size"), [(Fraction(3, 2), (144, 64)), (Fraction(2, 3), (96, 96))])
def test_anamorphic_frames_are_stretched_to_square_pixels(tmp_path: Path, aspect: Fraction,
                                                          size: tuple[int, int]) -> None:
    """Wide pixels widen the picture, tall ones heighten it (never shrunk: no detail lost)."""
    clip = make_test_clip(tmp_path / "c.mp4", seconds=0.3, width=WIDTH, height=HEIGHT, fps=10, draw=_blocks,
                          sample_aspect=aspect)
    read_size, images, _ = _read_all(clip)
    expected = cv2.resize(_blocks(0), size, interpolation=cv2.INTER_LINEAR)
    assert read_size == size
    assert all(image.shape == expected.shape and np.abs(image.astype(int) - expected).mean() < 6 for image in images)


def test_stretch_comes_before_the_turn(tmp_path: Path) -> None:
    """Pixel shape is a property of the stored picture: stretch it, then turn it."""
    clip = make_test_clip(tmp_path / "c.mp4", seconds=0.3, width=WIDTH, height=HEIGHT, fps=10, draw=_blocks,
                          sample_aspect=Fraction(3, 2), display_rotation=-90)
    read_size, images, _ = _read_all(clip)
    expected = np.rot90(cv2.resize(_blocks(0), (144, 64), interpolation=cv2.INTER_LINEAR), k=-1)
    assert read_size == (64, 144)
    assert np.abs(images[0].astype(int) - expected).mean() < 6


@pytest.mark.parametrize("aspect", [None, Fraction(1, 1), Fraction(1, 10), Fraction(9, 1)])
def test_square_unknown_or_implausible_aspects_leave_the_size(aspect: Fraction | None) -> None:
    assert square_pixel_size(720, 576, aspect) == (720, 576)


def test_pal_widescreen_is_shown_at_sixteen_by_nine() -> None:
    assert square_pixel_size(720, 576, Fraction(64, 45)) == (1024, 576)
    assert square_pixel_size(1440, 1080, Fraction(4, 3)) == (1920, 1080)



def _jpeg_with_exif(rgb: np.ndarray, orientation: int) -> bytes:
    """A camera's JPEG: an EXIF block that names the camera and the picture's orientation."""
    import io

    from PIL import Image

    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "OldCam", orientation
    data = io.BytesIO()
    Image.fromarray(rgb).save(data, "JPEG", exif=exif, quality=95)
    return data.getvalue()


# EXIF orientation -> how the stored picture is turned (np.rot90's k) so that it is shown as _blocks
_EXIF_STORED_TURN = {1: 0, 3: 2, 6: 1, 8: -1}


@pytest.mark.parametrize("orientation", sorted(_EXIF_STORED_TURN))
def test_camera_motion_jpeg_with_exif_is_read_upright(tmp_path: Path, orientation: int) -> None:
    """Cameras record Motion JPEG whose every frame carries EXIF. PyAV 18.1 cannot list such a frame's
    side data (a ValueError traceback ended every run on them); the EXIF orientation is still obeyed."""
    stored = np.ascontiguousarray(np.rot90(_blocks(0), k=_EXIF_STORED_TURN[orientation]))
    clip = tmp_path / "MVI_0001.AVI"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = stored.shape[1], stored.shape[0], "yuvj420p"
        for i in range(5):
            packet = av.Packet(_jpeg_with_exif(stored, orientation))
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 10)
            container.mux(packet)
    size, images, _ = _read_all(clip)
    assert size == (WIDTH, HEIGHT) and len(images) == 5
    assert all(np.abs(image.astype(int) - _blocks(0)).mean() < 6 for image in images)


def test_a_picture_at_a_url_is_turned_as_its_exif_says(tmp_path: Path) -> None:
    from stream_guard.file_analysis import _picture_at

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(_jpeg_with_exif(np.ascontiguousarray(np.rot90(_blocks(0), k=1)), 6))
    assert np.abs(_picture_at(photo.as_uri()).astype(int) - _blocks(0)).mean() < 6
