"""The fully convolutional change detectors of Daudt, Le Saux & Boulch (ICIP 2018), as open-cd builds them
(``fc_ef`` / ``fc_siam_conc`` / ``fc_siam_diff_256x256_40k_levircd``, ``opencd/models/backbones/fcsn.py``).

A four-level U-Net encoder and a mirrored decoder; the three differ in how the dates meet:

* **FC-EF** (early fusion): the two dates are stacked into one 2C-band image before the encoder;
* **FC-Siam-conc**: one encoder shared by the dates; every decoder level gets both dates' skip features
  concatenated;
* **FC-Siam-diff**: the same shared encoder; every decoder level gets the absolute difference of the skips.

open-cd wraps each in ``DIEncoderDecoder`` with an ``FCNHead(num_convs=0)`` whose only parameters are the final
1×1 ``conv_seg`` (after Dropout2d 0.1).

Our module keeps open-cd's state-dict layout (``backbone.conv11…``, ``decode_head.conv_seg``), so open-cd
checkpoints load as they are. Unlike open-cd, the decoder-side convolutions of the reference are
``ConvTranspose2d`` with stride 1: we keep them (the weight layout is ``(in, out, k, k)``) so that the
numbers match exactly.

Inputs of any size from 16×16 up work: after each 2×2 max-pool (floor) the up-sampled map is padded on the
right/bottom by edge replication to the skip map's size, as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from changekit.models.base import ChangekitModel
from changekit.models.registry import register_model

__all__ = ["FCSiamDiff", "FCSiamDiffBackbone", "FUSIONS", "fc_siam"]

#: How the dates meet: ``early`` (FC-EF), ``conc`` (FC-Siam-conc), ``diff`` (FC-Siam-diff).
FUSIONS = ("early", "conc", "diff")


def _pad_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Replicate-pad ``x`` on the right and bottom to ``ref``'s spatial size."""
    dh, dw = ref.shape[-2] - x.shape[-2], ref.shape[-1] - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (0, dw, 0, dh), mode="replicate")


class FCSiamDiffBackbone(nn.Module):
    """Encoder (conv11…conv43) and decoder (upconv4…conv11d) of the three FC networks (``fusion``).

    Attribute names follow open-cd's ``FC_EF`` / ``FC_Siam_conc`` / ``FC_Siam_diff`` so that its keys map one to
    one. The encoder levels have 2, 2, 3, 3 convolutions of ``c, 2c, 4c, 8c`` channels (``c = base_channel``).
    """

    # (level, number of convs) of the encoder; the decoder mirrors it
    _LEVELS = ((1, 2), (2, 2), (3, 3), (4, 3))

    def __init__(self, in_channels: int = 3, base_channel: int = 16, dropout: float = 0.2,
                 fusion: str = "diff") -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion={fusion!r}: use one of {FUSIONS}")
        c = [base_channel * 2**i for i in range(5)]
        self.in_channels = in_channels
        self.out_channels = c[0]
        self.fusion = fusion

        # encoder: conv{l}{j} + bn{l}{j} (+ Dropout2d), j = 1..n; early fusion sees both dates' bands at once
        prev = 2 * in_channels if fusion == "early" else in_channels
        for level, n in self._LEVELS:
            width = c[level - 1]
            for j in range(1, n + 1):
                setattr(self, f"conv{level}{j}", nn.Conv2d(prev, width, 3, padding=1))
                setattr(self, f"bn{level}{j}", nn.BatchNorm2d(width))
                setattr(self, f"do{level}{j}", nn.Dropout2d(dropout))
                prev = width

        # decoder: upconv{l} (stride-2 transposed conv), then conv{l}{j}d for j = n..1; the first takes
        # [upsampled, skip] (2x width; conc: [upsampled, skip1, skip2], 3x), the last one narrows to the next level
        skips = 2 if fusion == "conc" else 1
        for level, n in reversed(self._LEVELS):
            width = c[level - 1]
            self.add_module(
                f"upconv{level}", nn.ConvTranspose2d(width, width, 3, padding=1, stride=2, output_padding=1)
            )
            for j in range(n, 0, -1):
                cin = (1 + skips) * width if j == n else width
                cout = c[level - 2] if (j == 1 and level > 1) else width
                setattr(self, f"conv{level}{j}d", nn.ConvTranspose2d(cin, cout, 3, padding=1))
                if not (level == 1 and j == 1):  # conv11d is the plain output layer
                    setattr(self, f"bn{level}{j}d", nn.BatchNorm2d(cout))
                    setattr(self, f"do{level}{j}d", nn.Dropout2d(dropout))

    def fold_batch_norms(self) -> int:
        """Fold each eval-mode ``bn*`` into the convolution before it (an inference-only rewrite: the BNs become
        identities and their keys leave the state dict). Returns how many were folded."""
        folded = 0
        for name, bn in list(self.named_children()):
            if isinstance(bn, nn.BatchNorm2d):
                key = "conv" + name[2:]
                conv = getattr(self, key)
                setattr(self, key, fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d)))
                setattr(self, name, nn.Identity())
                folded += 1
        return folded

    def _block(self, name: str, x: torch.Tensor) -> torch.Tensor:
        conv, bn, do = getattr(self, f"conv{name}"), getattr(self, f"bn{name}"), getattr(self, f"do{name}")
        return do(F.relu(bn(conv(x))))

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the last feature map of each encoder level (before its max-pool)."""
        skips = []
        for level, n in self._LEVELS:
            if skips:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            for j in range(1, n + 1):
                x = self._block(f"{level}{j}", x)
            skips.append(x)
        return skips

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if min(x1.shape[-2:]) < 16:
            raise ValueError(
                f"FC networks need inputs of at least 16×16 pixels (four 2×2 poolings), got {tuple(x1.shape[-2:])}"
            )
        if self.fusion == "early":
            skips = self.encode(torch.cat([x1, x2], dim=1))
            deepest = skips[-1]
        else:
            s1, s2 = self.encode(x1), self.encode(x2)
            # as the reference, the decoder starts from the second date's pooled deepest map (both dates share
            # every weight, but that map enters the decoder from date 2 only)
            deepest = s2[-1]
            skips = [torch.abs(a - b) if self.fusion == "diff" else torch.cat([a, b], dim=1) for a, b in zip(s1, s2)]
        x = F.max_pool2d(deepest, kernel_size=2, stride=2)
        for (level, n), skip in zip(reversed(self._LEVELS), reversed(skips)):
            up = _pad_to(getattr(self, f"upconv{level}")(x), skip)
            x = torch.cat([up, skip], dim=1)
            for j in range(n, 0, -1):
                if level == 1 and j == 1:
                    x = self.conv11d(x)
                else:
                    x = self._block(f"{level}{j}d", x)
        return x


class _ClsHead(nn.Module):
    """mmseg ``FCNHead(num_convs=0, concat_input=False)``: Dropout2d then a 1×1 ``conv_seg``."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(in_channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)  # mmseg's decode-head init
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_seg(self.dropout(x))


class FCSiamDiff(ChangekitModel):
    """An FC change detector (FC-Siam-diff by default; ``fusion`` picks FC-EF or FC-Siam-conc):
    ``forward(t1, t2)`` → logits (B, num_classes, H, W)."""

    fast_precisions = ("bf16",)  # tests/test_demo.py: bf16 agrees with fp32 on the demo model's test split
    inference_channels_last = True  # 1.4-1.6x in fp32, 2.6x in bf16 (benchmarks/channels_last.py)

    def __init__(self, num_classes: int = 2, in_channels: int = 3, base_channel: int = 16,
                 fusion: str = "diff") -> None:
        super().__init__(num_classes, in_channels)
        self.backbone = FCSiamDiffBackbone(in_channels, base_channel, fusion=fusion)
        self.decode_head = _ClsHead(self.backbone.out_channels, num_classes)

    def forward_decoder(self, t1: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(t1, t2))

    def fuse_for_inference(self) -> int:
        return self.backbone.fold_batch_norms()  # 1.1-1.16x on top of channels-last (docs/performance.md)


def fc_siam(fusion: str, num_classes: int = 2, in_channels: int = 3, base_channel: int = 16) -> FCSiamDiff:
    """An FC network of Caye Daudt et al. (ICIP 2018) with ``fusion`` ``diff``, ``early`` or ``conc``."""
    return FCSiamDiff(num_classes=num_classes, in_channels=in_channels, base_channel=base_channel, fusion=fusion)


register_model("fc_siam_diff", fc_siam, "diff",
               doc="FC-Siam-diff as open-cd's ``fc_siam_diff_256x256_40k_levircd`` (1.35 M parameters).",
               published=[("LEVIR-CD", 87.31, "open-cd configs/fcsn/README.md")])
register_model("fc_ef", fc_siam, "early",
               doc="FC-EF: early fusion, the dates stacked into one 2C-band input (open-cd ``fc_ef``; 1.35 M "
                   "parameters for RGB).")
register_model("fc_siam_conc", fc_siam, "conc",
               doc="FC-Siam-conc: a shared encoder, both dates' skips concatenated in the decoder (open-cd "
                   "``fc_siam_conc``; 1.55 M parameters).")
