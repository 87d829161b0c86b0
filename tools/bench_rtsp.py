"""Live RTSP benchmark: serve a synthetic 720p30 one-face clip from the project's test RTSP
server on 127.0.0.1, run the real pipeline on it, and print what the pipeline itself measured.

    python -m tools.bench_rtsp [--seconds 10] [--width 1280 --height 720 --fps 30] [--model DIR]

The last line is one JSON object: frames sent by the server in the window, frames read,
processed and dropped by the pipeline, the processed share, and added latency (frame
received -> annotated frame out) p50/p95 in ms.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from stream_guard.config import ModelOptions, RunConfig, SourceOptions
from stream_guard.pipeline import Pipeline
from tests.support.faces import one_face_moving
from tests.support.rtsp_fixture import RtspServerProcess
from tests.support.synth_video import make_test_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--detect-every", type=int, default=1)
    args = parser.parse_args()

    from stream_guard.config import AnalysisOptions

    n_frames = int(round(args.seconds * args.fps))
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_test_clip(Path(tmp) / "bench.mp4", seconds=args.seconds + 1, width=args.width,
                              height=args.height, fps=args.fps,
                              draw=one_face_moving(args.width, args.height, face_px=args.height * 3 // 8))
        with RtspServerProcess(clip, live=True) as server:
            config = RunConfig(source=SourceOptions(server.url, max_frames=n_frames),
                               model=ModelOptions(model_dir=args.model),
                               analysis=AnalysisOptions(detect_every=args.detect_every))
            faces = 0

            def count(result) -> None:
                nonlocal faces
                faces += len(result.faces) > 0

            summary = Pipeline(config, on_result=count).run()
    report = {
        "stream": f"rtsp {args.width}x{args.height}@{args.fps}",
        "frames_expected": n_frames,
        "frames_read": summary.frames_read,
        "frames_processed": summary.frames_processed,
        "frames_dropped": summary.frames_dropped,
        "processed_share": round(summary.frames_processed / max(1, summary.frames_read), 4),
        "frames_with_face": faces,
        "fps": summary.fps,
        "latency_p50_ms": round(summary.latency_p50_ms or 0.0, 2),
        "latency_p95_ms": round(summary.latency_p95_ms or 0.0, 2),
        "model": summary.provenance.model,
        "provider": summary.provider,
    }
    print(f"{report['frames_processed']}/{report['frames_read']} frames processed "
          f"({100 * report['processed_share']:.1f} %), {report['frames_dropped']} dropped; "
          f"latency p50 {report['latency_p50_ms']} ms, p95 {report['latency_p95_ms']} ms")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
