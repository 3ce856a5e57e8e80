"""What every hierarchical backbone promises: four NCHW stages at strides 4, 8, 16, 32 (sizes rounded up, so any
input size works) with the width doubling from stage to stage."""

from __future__ import annotations

import torch


def assert_four_stages(model: torch.nn.Module, width: int, sizes: list[tuple[int, int]]) -> None:
    """``model`` (eval mode) maps a (1, 3, H, W) image to stages (1, width * 2**i, ceil(H / 2**(i+2)), ...)."""
    for h, w in sizes:
        with torch.no_grad():
            outs = model(torch.randn(1, 3, h, w))
        expect = [(1, width * 2**i, -(-h // 2 ** (i + 2)), -(-w // 2 ** (i + 2))) for i in range(4)]
        assert [tuple(o.shape) for o in outs] == expect, (h, w)
