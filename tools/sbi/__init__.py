"""Self-blended-image (SBI) training of the stream_guard deepfake model.

Modules: ``facemesh`` (468-point landmarks), ``prepare_faces`` (face crop cache),
``blend`` (pseudo-fakes), ``augment`` (shared real/fake augmentation), ``data``
(samplers), ``model`` (encoder + temporal head), ``train``, ``export``, ``evaluate``.
Method after Shiohara & Yamasaki, CVPR 2022, written from the paper's description.
"""
