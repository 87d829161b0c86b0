"""Which video stream of a file is analysed when it has several."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from stream_guard.sources import PyAVSource, parse_source


def test_cover_art_is_never_taken_for_the_video(tmp_path: Path) -> None:
    """An MP4 with embedded cover art (a download tool's thumbnail) has a second, larger "video"
    stream of one picture; the moving video is analysed, although it has fewer pixels."""
    path = tmp_path / "with_cover.mp4"
    with av.open(str(path), "w") as container:
        cover = container.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 1280, 720, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        picture = av.VideoFrame.from_ndarray(np.zeros((720, 1280, 3), np.uint8), format="rgb24")
        container.mux(list(cover.encode(picture)) + list(cover.encode(None)))
        for i in range(10):
            container.mux(video.encode(av.VideoFrame.from_ndarray(np.full((240, 320, 3), 20 * i, np.uint8),
                                                                  format="rgb24")))
        container.mux(video.encode(None))
    with av.open(str(path)) as check:  # the file really offers both, the cover the larger
        assert sorted(s.codec_context.width for s in check.streams.video) == [320, 1280]
    source = PyAVSource(parse_source(str(path)))
    info = source.open()
    try:
        frames = list(source.frames())
    finally:
        source.close()
    assert (info.width, info.height) == (320, 240)
    assert len(frames) == 10 and frames[-1].image.mean() > frames[0].image.mean()
