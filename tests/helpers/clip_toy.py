"""A reduced CLIPFormer configuration and a tiny open_clip CLIP, for the CLIPFormer and text-input tests."""

from __future__ import annotations

# a reduced configuration: same structure (Swin 4 stages, CLIP text tower with 64-token prompts + 13 context
# tokens, context decoder, three fusion streams, 4-stage CSWin decoder), small widths
TINY = dict(
    backbone=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), drop_path_rate=0.0),
    text=dict(width=64, heads=1, layers=1, embed_dim=32),
    visual_dim=32,
    channels=32,
    context_width=32,
    context_heads=2,
    context_layers=1,
    decoder=dict(num_heads=2),
)


def tiny_open_clip(text_layers: int = 2):
    """A randomly initialised open_clip CLIP with small widths (ViT image tower, CLIP text tower)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    return CLIP(
        32,
        vision_cfg=CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=32, head_width=64),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=text_layers),
        quick_gelu=True,
    ).eval()
