"""Synthetic data: self-blended pseudo-fakes for training and the embedded demo."""
from stream_guard.synth.self_blend import (
    ClipBlend,
    blend_face,
    blend_frame,
    sample_clip_blend,
)

__all__ = ["ClipBlend", "blend_face", "blend_frame", "sample_clip_blend"]
