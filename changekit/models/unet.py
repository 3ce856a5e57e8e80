"""U-Net change-detection baselines, as studied in "A Change Detection Reality Check" (Corley, Robinson & Ortiz,
ICLR 2024 ML4RS workshop), built with segmentation_models_pytorch on timm ResNet encoders.

* **Early fusion** (``unet_r18_early``, ``unet_r50_early``): both dates stacked as one 2C-band image through a
  plain U-Net (smp ``Unet``, ``in_channels=2C``); the paper's "U-Net".
* **Siamese difference** (``unet_r18_siam-diff``, ``unet_r50_siam-diff``): one encoder shared by both dates; at
  every scale the decoder receives the feature difference (date 2 minus date 1), the torchgeo ``FCSiamDiff``
  design the paper calls "U-Net SiamDiff".

Encoder weights (``encoder_weights``): ``None`` (random), ``"imagenet"`` (torchvision's ImageNet weights through
timm's hub, ``timm:resnet50.tv_in1k``, the weights the paper used; needs the network), a hub name, or a local
file of a timm / torchvision ResNet (``fc.*`` dropped; loaded strictly otherwise). For early fusion the first
convolution is widened to 2C bands by repeating the RGB filters and scaling them by 3 / 2C (smp's rule), so any
band count works. Inputs of any size: sides are padded to a multiple of 32 and the logits cropped back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from changekit.checkpoints import CheckpointError, check_state_dict, extract_state_dict, read_checkpoint
from changekit.models.base import ChangekitModel
from changekit.models.hub import hub_state_dict, is_hub_name
from changekit.models.registry import register_model

__all__ = ["UNetChange", "unet", "load_encoder_weights"]

#: torchvision's ImageNet weights, as the paper's smp ``resnet*`` encoders used, through timm's hub
IMAGENET = {"resnet18": "timm:resnet18.tv_in1k", "resnet50": "timm:resnet50.tv_in1k"}
DECODER_CHANNELS = (256, 128, 64, 32, 16)


class UNetChange(ChangekitModel):
    """A U-Net (smp, timm ``encoder``) over two dates: ``fusion="early"`` (stacked bands) or ``"siam-diff"``."""

    inference_channels_last = True  # 1.1-1.2x in fp32, 2.4x in bf16 (benchmarks/channels_last.py)

    def __init__(self, encoder: str = "resnet50", fusion: str = "early", num_classes: int = 2, in_channels: int = 3,
                 decoder_channels: Sequence[int] = DECODER_CHANNELS) -> None:
        super().__init__(num_classes, in_channels)
        import segmentation_models_pytorch as smp

        if fusion not in ("early", "siam-diff"):
            raise ValueError(f"fusion must be 'early' or 'siam-diff', not {fusion!r}")
        self.fusion, self.encoder_name = fusion, encoder
        bands = 2 * in_channels if fusion == "early" else in_channels
        self.net = smp.Unet(encoder_name=f"tu-{encoder}", encoder_weights=None, in_channels=bands,
                            classes=num_classes, decoder_channels=tuple(decoder_channels))

    def forward_decoder(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        """Logits at the input's resolution (padded to a multiple of 32 for the encoder, cropped back)."""
        h, w = t1.shape[-2:]
        pad = (0, (-w) % 32, 0, (-h) % 32)  # the encoder halves the size five times
        if any(pad):
            t1, t2 = F.pad(t1, pad, mode="replicate"), F.pad(t2, pad, mode="replicate")
        net = self.net
        if self.fusion == "early":
            feats = net.encoder(torch.cat([t1, t2], dim=1))
        else:
            feats = [b - a for a, b in zip(net.encoder(t1), net.encoder(t2))]
        return net.segmentation_head(net.decoder(feats))[..., :h, :w]


def _widen_first_conv(weight: torch.Tensor, bands: int) -> torch.Tensor:
    """RGB filters for ``bands`` input bands: repeated cyclically and scaled by 3 / bands (smp's rule)."""
    c = weight.shape[1]
    if bands == c:
        return weight
    return weight[:, [i % c for i in range(bands)]] * (c / bands)


def load_encoder_weights(model: UNetChange, weights: str | Path | Mapping[str, torch.Tensor]) -> None:
    """Load ResNet weights (``"imagenet"``, a hub name, a timm/torchvision file or a state dict) into the encoder,
    strictly: every encoder tensor must come from the file; only the classifier (``fc.*``) may be left over."""
    if isinstance(weights, Mapping):
        sd, source = extract_state_dict(weights, "state dict"), "state dict"
    else:
        spec = IMAGENET.get(model.encoder_name, "") if str(weights) == "imagenet" else str(weights)
        if not spec:
            raise CheckpointError(f"no ImageNet weights known for encoder {model.encoder_name!r}; give a file")
        source = spec
        sd = hub_state_dict(spec) if is_hub_name(spec) else extract_state_dict(read_checkpoint(spec), spec)
    for prefix in ("module.", "model.", "encoder.model.", "net.encoder.model.", "backbone."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    target = model.net.encoder.model
    if "conv1.weight" in sd:
        sd["conv1.weight"] = _widen_first_conv(sd["conv1.weight"], target.conv1.weight.shape[1])
    check_state_dict(target, sd, source)
    target.load_state_dict(sd, strict=True)


def unet(encoder: str, fusion: str, *, num_classes: int = 2, in_channels: int = 3,
         encoder_weights: str | Path | None = None, decoder_channels: Sequence[int] = DECODER_CHANNELS,
         **kwargs: Any) -> UNetChange:
    """Build a U-Net baseline; ``encoder_weights`` as in :func:`load_encoder_weights`."""
    if kwargs:
        raise TypeError(f"unexpected argument(s) {sorted(kwargs)}")
    model = UNetChange(encoder, fusion, num_classes, in_channels, decoder_channels)
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights)
    return model


_CORLEY = "Corley et al. 2024, authors' repository README (best of 10 seeds)"
_PUBLISHED = {(50, "early"): [("LEVIR-CD", 89.91, _CORLEY), ("WHU-CD (official split)", 82.00, _CORLEY)],
              (50, "siam-diff"): [("LEVIR-CD", 90.15, _CORLEY), ("WHU-CD (official split)", 82.48, _CORLEY)]}
for _depth in (18, 50):
    for _fusion, _what in (("early", "both dates stacked as 2C bands"), ("siam-diff", "a shared encoder, feature "
                                                                                      "differences decoded")):
        register_model(
            f"unet_r{_depth}_{_fusion}", unet, f"resnet{_depth}", _fusion,
            doc=f"U-Net with a ResNet-{_depth} encoder (timm), {_what} (Corley et al. 2024 baseline). "
                "``encoder_weights``: None, 'imagenet', a hub name or a ResNet file.",
            published=_PUBLISHED.get((_depth, _fusion), []),
        )
