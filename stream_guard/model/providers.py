"""Choosing ONNX Runtime execution providers from config, by what this machine has."""
from __future__ import annotations

import logging
from typing import Sequence

import onnxruntime as ort

from stream_guard.errors import ConfigError, ModelError, ProviderUnavailableError

log = logging.getLogger(__name__)

# Short names users type -> ONNX Runtime provider names, in our order of preference for "auto".
PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def resolve_providers(requested: str = "auto", available: Sequence[str] | None = None) -> list[str]:
    """``auto`` -> every available provider in preference order (CPU last);
    a comma list like ``cuda,cpu`` -> exactly those, each of which must be available."""
    available = list(ort.get_available_providers() if available is None else available)
    if requested.strip().lower() == "auto":
        return [p for p in PROVIDER_NAMES.values() if p in available]
    chosen = []
    for name in (n.strip().lower() for n in requested.split(",") if n.strip()):
        if name not in PROVIDER_NAMES:
            raise ConfigError(f"unknown provider '{name}' (choose from auto, {', '.join(PROVIDER_NAMES)})")
        full = PROVIDER_NAMES[name]
        if full not in available:
            raise ProviderUnavailableError(
                f"provider '{name}' ({full}) is not available in this onnxruntime build "
                f"(available: {', '.join(available)})"
            )
        chosen.append(full)
    if not chosen:
        raise ConfigError("no provider given")
    return chosen


def create_session(path: str, providers: Sequence[str], intra_op_threads: int = 1) -> ort.InferenceSession:
    """Open an ONNX graph; the provider really in use is logged (a GPU build may silently fall back to CPU)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=list(providers))
    except Exception as e:  # onnxruntime raises its own exception types from C++
        raise ModelError(f"cannot load ONNX graph {path}: {str(e).splitlines()[0]}") from e
    in_use = session.get_providers()
    if providers and in_use and in_use[0] != providers[0]:
        log.warning("%s: asked for %s, running on %s", path, providers[0], in_use[0])
    log.info("%s runs on %s", path, in_use[0] if in_use else "?")
    return session
