"""Synthetic data: self-blended pseudo-fakes for training and the embedded demo."""
from stream_guard.synth.self_blend import (
    BlendParams,
    face_mask_from_landmarks,
    jitter_blend_params,
    sample_blend_params,
    self_blend,
)

__all__ = [
    "BlendParams",
    "face_mask_from_landmarks",
    "jitter_blend_params",
    "sample_blend_params",
    "self_blend",
]
