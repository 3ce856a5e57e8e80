"""Weights by hub name, for users who are online (tests never download). One syntax everywhere a weights
argument takes a name instead of a file (``fm_weights``, ``clip_weights``, ``--clip-model``):

* ``open_clip:<arch>/<tag>``, e.g. ``open_clip:ViT-B-16/openai`` (open_clip's ``create_model``);
* ``hf-hub:<org>/<repo>[/<file>]``, e.g. ``hf-hub:chendelong/RemoteCLIP/RemoteCLIP-ViT-B-32.pt``
  (a file of a Hugging Face repository; default file ``open_clip_pytorch_model.bin``);
* ``timm:<name>``, e.g. ``timm:vit_base_patch16_224.augreg_in21k`` (timm's pretrained weights).

Backbone ImageNet weights have their own short names (``imagenet``, ``open-mmlab://resnet18_v1c``), read by
the backbone loaders.
"""

from __future__ import annotations

import torch

from changekit.checkpoints import CheckpointError, extract_state_dict, read_checkpoint

__all__ = ["HUB_PREFIXES", "is_hub_name", "hub_state_dict"]

HUB_PREFIXES = ("open_clip:", "hf-hub:", "timm:")


def is_hub_name(spec: object) -> bool:
    return isinstance(spec, str) and spec.startswith(HUB_PREFIXES)


def hub_state_dict(spec: str) -> dict[str, torch.Tensor]:
    """Download the weights ``spec`` names (see the module docstring) and return their state dict."""
    try:
        if spec.startswith("open_clip:"):
            import open_clip

            arch, _, tag = spec[len("open_clip:"):].partition("/")
            return dict(open_clip.create_model(arch, pretrained=tag or None).state_dict())
        if spec.startswith("hf-hub:"):
            from huggingface_hub import hf_hub_download

            parts = spec[len("hf-hub:"):].split("/")
            repo = "/".join(parts[:2])
            filename = "/".join(parts[2:]) or "open_clip_pytorch_model.bin"
            return extract_state_dict(read_checkpoint(hf_hub_download(repo, filename)), spec)
        if spec.startswith("timm:"):
            import timm

            return dict(timm.create_model(spec[len("timm:"):], pretrained=True, num_classes=0).state_dict())
    except CheckpointError:
        raise
    except Exception as e:  # network errors, unknown names
        raise CheckpointError(f"could not fetch {spec!r} ({type(e).__name__}: {e}); offline, give a local weight file") from e
    raise CheckpointError(f"unknown hub name {spec!r}; use open_clip:<arch>/<tag>, hf-hub:<org>/<repo>[/<file>] or timm:<name>")
