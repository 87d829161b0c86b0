"""An SDR video re-coded as 10-bit HDR (HLG or PQ), the way BT.2408 maps SDR into HDR.

    python -m tools.hdr_copy SRC DST [--transfer hlg|pq] [--seconds N] [--crf 20]

Input for testing and benchmarking stream_guard's tone mapping on real footage (phones record HLG;
HDR10 and streaming are PQ): SDR white becomes HDR reference white (203 cd/m²), BT.709's primaries
are written in BT.2020's, HLG is graded for a 1000 cd/m² display (its OOTF undone, gamma 1.2), and
the result is 10-bit BT.2020 Y'CbCr 4:2:0 in H.264, flagged with its transfer. stream_guard maps it
back to SDR, so ``stream-guard bench --source DST`` measures what reading HDR costs against SRC.
The sound is not copied.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from stream_guard.sources.tone_map import HLG_GAMMA, HLG_PEAK_NITS, REF_WHITE_NITS, TRC_HLG, TRC_PQ
from tests.support.hdr_video import add_hdr_stream, hdr_frame, pq_signal

TRANSFERS = {"hlg": TRC_HLG, "pq": TRC_PQ}
_BT709_TO_BT2020 = np.array([[0.6274, 0.3293, 0.0433],
                             [0.0691, 0.9195, 0.0114],
                             [0.0164, 0.0880, 0.8956]])
_LUMA_2020 = np.array([0.2627, 0.6780, 0.0593])
_BT1886 = (np.arange(256) / 255) ** 2.4  # SDR signal to display light, 1 = SDR white


def _hlg_oetf(scene: np.ndarray) -> np.ndarray:
    """HLG's OETF: scene light 0..1 to signal 0..1."""
    a, b, c = 0.17883277, 0.28466892, 0.55991073
    return np.where(scene <= 1 / 12, np.sqrt(3 * np.maximum(scene, 0)),
                    a * np.log(np.maximum(12 * scene - b, 1e-12)) + c)


def hdr_signal(rgb: np.ndarray, transfer: int) -> np.ndarray:
    """SDR BT.709 RGB ``uint8`` ``(H, W, 3)`` as HDR BT.2020 R'G'B' signal 0..1 of ``transfer``."""
    light = _BT1886[rgb] @ _BT709_TO_BT2020.T
    if transfer == TRC_PQ:
        return np.clip(pq_signal(light * REF_WHITE_NITS), 0, 1)
    display = light * (REF_WHITE_NITS / HLG_PEAK_NITS)
    luma = np.maximum(display @ _LUMA_2020, 1e-12)
    scene = display * (luma ** (1 / HLG_GAMMA - 1))[..., None]  # the OOTF undone: its luma to the power 1/gamma
    return np.clip(_hlg_oetf(np.clip(scene, 0, 1)), 0, 1)


def copy_as_hdr(source: Path, target: Path, transfer: int, seconds: float | None = None, crf: int = 20,
                progress: bool = False) -> int:
    """Writes ``source``'s pictures to ``target`` as HDR of ``transfer``; returns the frames written.
    Raises ValueError for a source without video, ``av.FFmpegError`` or OSError for one it cannot read
    or a target it cannot write."""
    with av.open(str(source)) as src:
        if not src.streams.video:
            raise ValueError("it has no video stream")
        with av.open(str(target), "w") as dst:
            return _copy_pictures(src, dst, transfer, seconds, crf, progress)


def _copy_pictures(src: av.container.InputContainer, dst: av.container.OutputContainer, transfer: int,
                   seconds: float | None, crf: int, progress: bool) -> int:
    video = src.streams.video[0]
    width, height = video.codec_context.width // 2 * 2, video.codec_context.height // 2 * 2
    stream = add_hdr_stream(dst, width, height, video.average_rate or 25, transfer, {"crf": str(crf)})
    written = 0
    for frame in tqdm(src.decode(video), disable=not progress, unit="frame"):
        if seconds is not None and frame.time is not None and frame.time >= seconds:
            break
        rgb = frame.to_ndarray(format="rgb24")[: stream.height, : stream.width]
        dst.mux(stream.encode(hdr_frame(hdr_signal(rgb, transfer))))
        written += 1
    dst.mux(stream.encode(None))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.hdr_copy", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--transfer", choices=sorted(TRANSFERS), default="hlg")
    parser.add_argument("--seconds", type=float, default=None, help="copy only the first N seconds")
    parser.add_argument("--crf", type=int, default=20, help="x264 quality (0 = lossless; default 20)")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        print(f"hdr_copy: error: no such file: {args.source}", file=sys.stderr)
        return 2
    try:
        frames = copy_as_hdr(args.source, args.target, TRANSFERS[args.transfer], args.seconds, args.crf,
                             progress=sys.stderr.isatty())
    except (av.FFmpegError, OSError, ValueError) as e:
        print(f"hdr_copy: error: cannot copy {args.source} to {args.target}: {e}", file=sys.stderr)
        return 2
    print(f"{args.target}: {frames} frames, {args.transfer.upper()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
