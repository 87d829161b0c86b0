"""Self-blended-image (SBI) training of the stream_guard deepfake model.

Modules: ``prepare_faces`` (face crop cache, landmarks from ``stream_guard.faces.landmarks``),
``blend`` (pseudo-fakes), ``augment`` (shared real/fake augmentation), ``data``
(samplers), ``model`` (encoder + temporal head), ``train``, ``export``, ``evaluate``.
Method after Shiohara & Yamasaki, CVPR 2022, written from the paper's description.
"""
