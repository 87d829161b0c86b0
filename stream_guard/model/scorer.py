"""Fake scores per face: the CNN encoder once per sampled crop, the recurrent head over
each face's cached embeddings, so per-frame cost does not grow with the window."""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from stream_guard.errors import ModelError
from stream_guard.model.contract import ModelSpec
from stream_guard.model.providers import create_session
from stream_guard.model.smoothing import SmoothingOptions, VerdictSmoother

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TrackMemory:
    """What the scorer keeps per face track (owned by the track)."""

    embeddings: deque
    smoother: VerdictSmoother
    last_sample_pts: float | None = None
    raw_score: float | None = None
    n_scores: int = 0
    sum_scores: float = 0.0
    max_score: float = 0.0
    mesh: tuple[np.ndarray, np.ndarray] | None = None  # the face mesh's last landmarks and their box (region models)

    def record(self, probability: float) -> bool:
        """Keep running statistics and update the verdict; True if the verdict changed."""
        self.raw_score = probability
        self.n_scores += 1
        self.sum_scores += probability
        self.max_score = max(self.max_score, probability)
        return self.smoother.update(probability)


class FaceScorer:
    """Runs one model folder's encoder and temporal head in ONNX Runtime."""

    def __init__(
        self,
        spec: ModelSpec,
        providers: Sequence[str],
        intra_op_threads: int = 1,
        threshold: float | str | None = None,
        smoothing: SmoothingOptions = SmoothingOptions(),
    ) -> None:
        self.spec = spec
        self.threshold = spec.threshold_for(threshold)
        self.smoothing = smoothing
        self.encoder = create_session(str(spec.encoder_path), providers, intra_op_threads)
        self.temporal = create_session(str(spec.temporal_path), providers, intra_op_threads)
        self.provider = self.encoder.get_providers()[0]
        self._enc_in = self.encoder.get_inputs()[0].name
        self._regions_in = [i.name for i in self.encoder.get_inputs()[1:]]
        self._tmp_in = self.temporal.get_inputs()[0].name
        self._check_shapes()
        self._mean = np.asarray(spec.mean, np.float32) * 255.0
        self._inv_std = 1.0 / (np.asarray(spec.std, np.float32) * 255.0)
        self.sample_period_s = 1.0 / spec.sample_hz
        self.last_cnn_ms = 0.0  # split of the latest score() call, read by the analysis stage
        self.last_temporal_ms = 0.0

    def _check_shapes(self) -> None:
        inputs = self.encoder.get_inputs()
        sizes = self.spec.region_sizes
        if len(inputs) != 1 + len(sizes):
            raise ModelError(f"encoder takes {len(inputs)} inputs; model.json's region_sizes {list(sizes)} "
                             f"mean {1 + len(sizes)}")
        expected = [(3, self.spec.input_size)] + [(len(self.spec.regions), s) for s in sizes]
        for inp, (channels, size) in zip(inputs, expected):
            shape = inp.shape
            fixed = [d for d in shape[2:] if isinstance(d, int)]
            if len(shape) != 4 or shape[1] != channels or any(d != size for d in fixed):
                raise ModelError(f"encoder input '{inp.name}' shape {shape} does not match "
                                 f"[N,{channels},{size},{size}] in model.json")
        out = self.encoder.get_outputs()[0].shape
        if len(out) != 2 or (isinstance(out[1], int) and out[1] != self.spec.embedding_dim):
            raise ModelError(f"encoder output shape {out} does not match [N,{self.spec.embedding_dim}]")

    def new_memory(self) -> TrackMemory:
        return TrackMemory(
            embeddings=deque(maxlen=self.spec.window),
            smoother=VerdictSmoother(self.threshold, self.smoothing),
        )

    def due(self, memory: TrackMemory, pts_s: float) -> bool:
        """Whether this face should be sampled at ``pts_s`` (the model's sampling rate)."""
        return memory.last_sample_pts is None or pts_s - memory.last_sample_pts >= self.sample_period_s * 0.95

    def encode(self, crops: np.ndarray, regions: Sequence[np.ndarray] = ()) -> np.ndarray:
        """``crops``: uint8 ``[N, S, S, 3]`` RGB (or float32 on the same 0-255 scale) -> embeddings ``[N, D]``
        in one batch. ``regions``: for a model with ``spec.regions``, the crops' masks ``float32 [N, R, s, s]``
        at each of ``spec.region_sizes``."""
        if len(regions) != len(self._regions_in):
            raise ValueError(f"model {self.spec.name} takes region masks at {len(self._regions_in)} sizes, "
                             f"got {len(regions)}")
        x = (crops.astype(np.float32) - self._mean) * self._inv_std
        feed = {self._enc_in: np.ascontiguousarray(x.transpose(0, 3, 1, 2))}
        feed |= {name: np.ascontiguousarray(m, np.float32) for name, m in zip(self._regions_in, regions)}
        return self.encoder.run(None, feed)[0]

    def probabilities(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """Each sequence ``[T_i, D]`` -> calibrated probability. Equal lengths go as one batch."""
        out = np.zeros(len(sequences), np.float64)
        by_len: dict[int, list[int]] = {}
        for i, seq in enumerate(sequences):
            by_len.setdefault(len(seq), []).append(i)
        for length, idx in by_len.items():
            batch = np.stack([sequences[i] for i in idx]).astype(np.float32)
            logits = self.temporal.run(None, {self._tmp_in: batch})[0].reshape(-1)
            for i, logit in zip(idx, logits):
                out[i] = self.spec.probability(float(logit))
        return out

    def score(self, memories: Sequence[TrackMemory], crops: np.ndarray, pts_s: float,
              regions: Sequence[np.ndarray] = ()) -> list[bool]:
        """Encode one crop (and its region masks, see :meth:`encode`) per memory, push the embeddings,
        score every window, update each smoother. Returns per memory whether its verdict changed."""
        if not memories:
            self.last_cnn_ms = self.last_temporal_ms = 0.0
            return []
        t0 = time.perf_counter()
        embeddings = self.encode(crops, regions)
        t1 = time.perf_counter()
        for memory, emb in zip(memories, embeddings):
            memory.embeddings.append(emb)
            memory.last_sample_pts = pts_s
        probs = self.probabilities([np.stack(m.embeddings) for m in memories])
        self.last_cnn_ms, self.last_temporal_ms = (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3
        return [memory.record(float(p)) for memory, p in zip(memories, probs)]
