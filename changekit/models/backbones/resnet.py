"""ResNet V1c (deep stem) in mmseg's key layout, and open-mmlab's ImageNet weights for it.

``ResNetV1c`` is mmseg's ``ResNetV1c``: the 7×7 stem conv is replaced by three 3×3 convs
(``in→32`` stride 2, ``32→32``, ``32→64``, each followed by BN and ReLU; ``stem.0/1/2``, ``stem.3/4/5``,
``stem.6/7/8``), then a 3×3/2 max-pool and ``layer1..layerN`` of BasicBlocks (``conv1, bn1, conv2, bn2``,
``downsample.0`` 1×1 conv + ``downsample.1`` BN). Stages, strides, dilations and returned stages are
configurable, as in mmseg (``strides=(1, 2, 1), num_stages=3, out_indices=(2,)`` is BiT's output-stride-8
ResNet-18). ``contract_dilation`` halves the dilation of the first block of a dilated stage.

Because the keys are mmseg's, open-mmlab's ``resnet18_v1c`` checkpoint and the ``backbone.*`` part of open-cd
checkpoints load as they are. :func:`load_resnet_pretrained` reads that file format (keys possibly under
``state_dict``; ImageNet ``fc.*`` and the stages this backbone does not build are dropped, everything else must
fit exactly). ``"open-mmlab://resnet18_v1c"`` names the official file, downloaded through ``torch.hub`` only
when a user asks for it by that name.

The norm layer is a constructor argument (``nn.BatchNorm2d`` by default); converting to SyncBN under DDP is
the training engine's job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from changekit.errors import ChangekitError

__all__ = [
    "RESNET_PRETRAINED_URLS",
    "BasicBlock",
    "ResNetV1c",
    "load_resnet_pretrained",
    "resnet_state_dict_from",
    "resnet18_v1c",
]

NormLayer = Callable[[int], nn.Module]

#: ``open-mmlab://`` names of ImageNet V1c checkpoints (mmcv's model zoo) that fit the BasicBlock depths built here.
#: The file name carries the first 8 hex digits of its SHA-256, which torch.hub checks after downloading.
RESNET_PRETRAINED_URLS = {
    "open-mmlab://resnet18_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet18_v1c-b5776b93.pth",
}
_DEFAULT_PRETRAINED = {18: "open-mmlab://resnet18_v1c"}


class BasicBlock(nn.Module):
    """mmseg's BasicBlock: 3×3 (stride, dilation) → BN → ReLU → 3×3 → BN, plus the shortcut, then ReLU."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)  # mmseg does not dilate conv2
        self.bn2 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNetV1c(nn.Module):
    """ResNet with the V1c deep stem, mmseg key layout.

    Args:
        depth: 18 or 34 (BasicBlock ResNets).
        in_channels: input bands.
        num_stages: how many residual stages to build (1–4); later stages are not built at all.
        strides / dilations: per stage (length ``num_stages``).
        out_indices: stages whose outputs ``forward`` returns (a list, in order).
        stem_channels / base_channels: 64 / 64 as in mmseg.
        contract_dilation: the first block of a stage with dilation > 1 uses half of it (mmseg's option).
        norm_layer: a callable ``channels -> nn.Module`` (default ``nn.BatchNorm2d``).
        norm_eval: keep the norm layers in eval mode (frozen statistics) while training.
    """

    arch_settings = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}

    def __init__(
        self,
        depth: int = 18,
        in_channels: int = 3,
        num_stages: int = 4,
        strides: Sequence[int] = (1, 2, 2, 2),
        dilations: Sequence[int] = (1, 1, 1, 1),
        out_indices: Sequence[int] = (0, 1, 2, 3),
        stem_channels: int = 64,
        base_channels: int = 64,
        contract_dilation: bool = False,
        norm_layer: NormLayer = nn.BatchNorm2d,
        norm_eval: bool = False,
    ) -> None:
        super().__init__()
        if depth not in self.arch_settings:
            raise ValueError(f"ResNetV1c depth must be one of {sorted(self.arch_settings)}, got {depth}")
        if not 1 <= num_stages <= 4:
            raise ValueError(f"num_stages must be 1..4, got {num_stages}")
        strides, dilations = tuple(strides)[:num_stages], tuple(dilations)[:num_stages]
        if len(strides) != num_stages or len(dilations) != num_stages:
            raise ValueError(f"strides {strides} and dilations {dilations} need {num_stages} entries")
        if not out_indices or max(out_indices) >= num_stages or min(out_indices) < 0:
            raise ValueError(f"out_indices {tuple(out_indices)} must name stages in 0..{num_stages - 1}")
        self.depth = depth
        self.in_channels = in_channels
        self.num_stages = num_stages
        self.out_indices = tuple(out_indices)
        self.norm_eval = norm_eval

        half = stem_channels // 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, half, 3, stride=2, padding=1, bias=False),
            norm_layer(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride=1, padding=1, bias=False),
            norm_layer(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, stem_channels, 3, stride=1, padding=1, bias=False),
            norm_layer(stem_channels),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.res_layers: list[str] = []
        self.stage_channels: list[int] = []
        inplanes = stem_channels
        for i, n_blocks in enumerate(self.arch_settings[depth][:num_stages]):
            planes = base_channels * 2**i
            stride, dilation = strides[i], dilations[i]
            downsample = None
            if stride != 1 or inplanes != planes * BasicBlock.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * BasicBlock.expansion, 1, stride=stride, bias=False),
                    norm_layer(planes * BasicBlock.expansion),
                )
            first_dilation = dilation // 2 if (contract_dilation and dilation > 1) else dilation
            blocks = [BasicBlock(inplanes, planes, stride, first_dilation, downsample, norm_layer)]
            inplanes = planes * BasicBlock.expansion
            blocks += [
                BasicBlock(inplanes, planes, 1, dilation, None, norm_layer) for _ in range(1, n_blocks)
            ]
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.res_layers.append(name)
            self.stage_channels.append(inplanes)
        self.out_channels = [self.stage_channels[i] for i in self.out_indices]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """Deep stem and max-pool (1/4 resolution)."""
        return self.maxpool(self.stem(x))

    def forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Run residual stage ``i`` (``layer{i+1}``); for ``i == 0`` ``x`` is the image (the stem runs first)."""
        if i == 0:
            x = self.forward_stem(x)
        return getattr(self, self.res_layers[i])(x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(self.num_stages):
            x = self.forward_stage(i, x)
            if i in self.out_indices:
                outs.append(x)
        return outs

    def train(self, mode: bool = True) -> ResNetV1c:
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


# --------------------------------------------------------------------------------------------- weights
_STAGE_KEY = re.compile(r"^layer(\d+)\.")


def resnet_state_dict_from(
    sd: Mapping[str, torch.Tensor], num_stages: int = 4
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Return ``(state dict for ResNetV1c, dropped keys)`` from open-mmlab / mmseg / open-cd weights.

    A ``backbone.``-prefixed checkpoint (a whole segmentor) is reduced to its backbone; ``fc.*`` (the ImageNet
    classifier) and the keys of stages beyond ``num_stages`` are dropped and reported.
    """
    sd = dict(sd)
    if any(k.startswith("backbone.") for k in sd):
        sd = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    elif sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    out, dropped = {}, []
    for k, v in sd.items():
        m = _STAGE_KEY.match(k)
        if k.startswith("fc.") or (m and int(m.group(1)) > num_stages):
            dropped.append(k)
        else:
            out[k] = v
    return out, dropped


def load_resnet_pretrained(
    model: ResNetV1c, weights: str | Path | Mapping[str, torch.Tensor]
) -> tuple[ResNetV1c, list[str]]:
    """Load ImageNet ResNet V1c weights into ``model``; return it and the list of dropped keys.

    ``weights``: a local file in open-mmlab's format (``resnet18_v1c-b5776b93.pth``: keys ``stem.0.weight``,
    ``layer1.0.conv1.weight``..., possibly under ``state_dict``), a state dict, an ``http(s)://`` URL, or an
    ``open-mmlab://resnet18_v1c``-style name (downloaded into the torch.hub cache; the only path that touches
    the network, and only when asked). Everything but ``fc.*`` and unbuilt stages must land: a missing key
    or a shape mismatch raises :class:`~changekit.checkpoints.CheckpointError`. BN ``num_batches_tracked``
    counters absent from older files are set to zero.
    """
    from changekit.checkpoints import check_state_dict, extract_state_dict, read_state_dict

    if isinstance(weights, Mapping):
        source, sd = "state dict", extract_state_dict(weights)
    else:
        text = str(weights)
        if text.startswith("open-mmlab://"):
            if text not in RESNET_PRETRAINED_URLS:
                raise ChangekitError(
                    f"unknown pretrained name {text!r}; known: {', '.join(RESNET_PRETRAINED_URLS)} "
                    "(or give the path of a local file)"
                )
            text = RESNET_PRETRAINED_URLS[text]
        if text.startswith(("http://", "https://")):
            source = text
            try:
                obj = torch.hub.load_state_dict_from_url(
                    text, map_location="cpu", weights_only=True, check_hash=True
                )
            except (OSError, RuntimeError) as e:  # URLError is an OSError; a hash mismatch is a RuntimeError
                raise ChangekitError(
                    f"could not download {text} ({type(e).__name__}: {e}); download it by hand and pass the local "
                    "file as the weights"
                ) from e
            sd = extract_state_dict(obj, text)
        else:
            source, sd = text, read_state_dict(text)
    sd, dropped = resnet_state_dict_from(sd, model.num_stages)
    own = model.state_dict()
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros_like(v)
    check_state_dict(model, sd, source)
    model.load_state_dict(sd, strict=True)
    return model, dropped


def resnet18_v1c(weights: str | Path | None = None, **kwargs) -> ResNetV1c:
    """ResNet-18 V1c; ``weights``: None, ``"imagenet"`` (= ``open-mmlab://resnet18_v1c``), a name, URL or file."""
    model = ResNetV1c(depth=18, **kwargs)
    if weights:
        load_resnet_pretrained(
            model, _DEFAULT_PRETRAINED[18] if str(weights) == "imagenet" else weights
        )
    return model
