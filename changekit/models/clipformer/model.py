"""CLIPFormer: language-driven change detection with context-aware prompts (Wu et al., 2024).

Built from the design of ``wujiang0156/CLIPformer`` (a fork of ChangeCLIP) and its logged configs; see
``docs/models_clipformer.md`` for the departures from the released code. Data flow for a 256×256 pair:

1. **Image side** (shared by both dates): Swin-T → c1..c4 (96×64², 192×32², 384×16², 768×8²);
   ``GlobalLocalPool`` projects ``[mean(c4); c4 tokens]`` with one 768×512 matrix into a 512-d global vector
   and a 512×8×8 local map.
2. **Text side** (shared): two prompts per image, background ``"remote sensing image background objects"``
   and foreground ``"remote sensing image foreground objects, <class>, <class>, ..."`` (the image's CLIP
   zero-shot classes, see ``changekit clip-labels``; date B uses its own list). CLIP ViT-B/16's text tower
   (fine-tuned) with 13 learnable context tokens inserted after SOT → t (B, 2, 512).
3. **Interaction**: DenseCLIP's context decoder (3 layers, width 256) lets the text attend to
   ``[global; local]`` and adds ``γ ⊙ Δ`` (γ initialised to 1e-4); the cosine score map
   ``<local, t>`` (B, 2, 8, 8) is concatenated to c4 (770 channels).
4. **Fusion per scale**: FPN(256) on the concatenated dates, a 1×1 conv + ReLU on |A − B| and the
   ChangeFormer-style difference decoder (which also yields a half-resolution map D0), merged by a
   squeeze-excitation layer into 256 channels.
5. **Decoder**: the text-guided CSWin decoder (:mod:`changekit.models.clipformer.decoder`) on
   ``[x1, x2, x3, x4, D0]`` with the four text tokens → logits at 1/2, upsampled to the input size.

``forward(t1, t2, classes_a=None, classes_b=None)``: class names are optional; without them the foreground prompt
names no class (``"remote sensing image foreground objects"``), exactly what the released dataset gives when an
image folder has no class file (``jsonA = []``), so the generic engine can run the model on image pairs alone.
A fixed list (:data:`FALLBACK_CLASSES`) is only ever used when asked for (``changekit clip-labels --fallback``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from changekit.models.backbones.swin import SwinTransformer, convert_swin_state_dict, load_swin_pretrained
from changekit.models.base import ChangekitModel
from changekit.models.clipformer.decoder import FPN, ConvAct, CSwinTextHead, DifferenceDecoder, SELayerV2
from changekit.models.registry import register_model
from changekit.models.text.clip_text import CLIPTextContextEncoder, load_clip_text_weights, tokenize

__all__ = [
    "CLIPFormer",
    "RS_CLASSES_56",
    "FALLBACK_CLASSES",
    "BACKGROUND_PROMPT",
    "FOREGROUND_PROMPT",
    "build_prompts",
    "ContextDecoder",
    "GlobalLocalPool",
    "clipformer_swin_t_vit_b16",
]

#: The 56-class remote-sensing vocabulary of ChangeCLIP's ``clip_func.py`` (order kept).
RS_CLASSES_56: tuple[str, ...] = (
    "airport", "bare land", "basketball court", "beach", "bridge", "dense residential",
    "farmland", "forest", "freeway", "ground track field", "harbor", "island", "lake",
    "meadow", "mine", "mountain", "oil tank", "runway", "sea", "solar panel", "stadium",
    "tennis court", "terrace", "wetland", "commercial area", "cotton field", "industrial area",
    "railway", "interchange", "single-family residential", "highway", "intersection",
    "golf course", "desert", "river", "campus", "prairie", "building", "fertile land",
    "park", "parking lot", "square", "road", "tree", "cars", "shrubbery",
    "impermeable surface", "ship", "airplane", "pond", "church", "chaparral",
    "storage tanks", "snow land", "container", "cabin",
)  # fmt: skip

#: The list ``changekit clip-labels --fallback`` writes for every image when no CLIP weights are available (an
#: explicit choice, recorded in the JSON): nine common classes of the vocabulary (nine = the released labeller's top-k).
FALLBACK_CLASSES: tuple[str, ...] = (
    "building", "road", "tree", "bare land", "parking lot", "dense residential",
    "impermeable surface", "farmland", "cars",
)  # fmt: skip

BACKGROUND_PROMPT = "remote sensing image background objects"
FOREGROUND_PROMPT = "remote sensing image foreground objects"


def build_prompts(classes: Sequence[str] | None) -> tuple[str, str]:
    """``(background, foreground)`` prompts for one image; ``None`` names no class, as the released code does for an
    image without a class file (``', '.join(['remote sensing image foreground objects'] + [])``)."""
    names = [] if classes is None else list(classes)
    return BACKGROUND_PROMPT, ", ".join([FOREGROUND_PROMPT, *[str(c) for c in names]])


def _per_sample(classes: Any, batch: int, which: str) -> list[Sequence[str] | None]:
    """Normalise ``classes_a``/``classes_b`` to one class list (or None) per sample."""
    if classes is None:
        return [None] * batch
    if isinstance(classes, str):
        raise TypeError(f"{which}: give a list of class names (or one list per sample), not a string")
    classes = list(classes)
    if all(isinstance(c, str) for c in classes):  # one list for the whole batch
        return [classes] * batch
    if len(classes) != batch:
        raise ValueError(f"{which}: {len(classes)} class lists for a batch of {batch}")
    return [None if c is None else list(c) for c in classes]


# --------------------------------------------------------------------------------------------- small blocks
class GlobalLocalPool(nn.Module):
    """Project ``[mean; tokens]`` of a (B, C, H, W) map with one C×D matrix → global (B, D), local (B, D, H, W)."""

    def __init__(self, embed_dim: int = 768, output_dim: int = 512) -> None:
        super().__init__()
        self.proj = nn.Parameter(embed_dim**-0.5 * torch.randn(embed_dim, output_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) @ self.proj  # (B, 1+HW, D)
        return tokens[:, 0], tokens[:, 1:].transpose(1, 2).reshape(b, -1, h, w)


class PerScale(nn.ModuleList):
    """One module per scale, applied level by level (a ModuleList that can be called, so profilers see it)."""

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [m(x) for m, x in zip(self, xs)]


# --------------------------------------------------------------------------------------------- context decoder
class _Attention(nn.Module):
    """DenseCLIP's attention: separate q/k/v projections without bias, output projection + dropout."""

    def __init__(self, dim: int, num_heads: int, proj_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, c = q.shape
        m, h = k.shape[1], self.num_heads
        q = self.q_proj(q).reshape(b, n, h, c // h).transpose(1, 2)
        k = self.k_proj(k).reshape(b, m, h, c // h).transpose(1, 2)
        v = self.v_proj(v).reshape(b, m, h, c // h).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class TransformerDecoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = _Attention(d_model, nhead, dropout)
        self.cross_attn = _Attention(d_model, nhead, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_model * 4), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_model * 4, d_model)
        )

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y)
        x = x + self.cross_attn(self.norm2(x), mem, mem)
        return x + self.dropout(self.mlp(self.norm3(x)))


class ContextDecoder(nn.Module):
    """DenseCLIP's context decoder: text queries attend to visual tokens; returns the text update Δ."""

    def __init__(self, width: int = 256, heads: int = 4, layers: int = 3, visual_dim: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.memory_proj = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width), nn.LayerNorm(width))
        self.text_proj = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width))
        self.decoder = nn.ModuleList([TransformerDecoderLayer(width, heads, dropout) for _ in range(layers)])
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, visual_dim))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        mem = self.memory_proj(visual)
        x = self.text_proj(text)
        for layer in self.decoder:
            x = layer(x, mem)
        return self.out_proj(x)  # the released swinclip.py copy lacks this return


# --------------------------------------------------------------------------------------------- difference decoder
class CLIPFormer(ChangekitModel):
    """CLIPFormer (see the module docstring). Sizes default to the published Swin-T / ViT-B/16 model.

    Args:
        num_classes, in_channels: output classes (2) and bands per date (3).
        backbone: keyword arguments of :class:`SwinTransformer` (Swin-T, drop_path 0.3 by default).
        text: keyword arguments of :class:`CLIPTextContextEncoder` (CLIP ViT-B/16's text tower).
        prompt_length: tokens per prompt (64); ``text['context_length'] - prompt_length`` context tokens (13).
        visual_dim: width of the global/local embedding and of the text embedding (512).
        channels: width of every fusion stream and of the decoder (256).
        context_width, context_heads, context_layers, context_dropout: context decoder (256, 4, 3, 0.1).
        gamma_init: initial text-update scale (1e-4).
        decoder: extra keyword arguments of :class:`CSwinTextHead`.

    ``forward(t1, t2, classes_a=None, classes_b=None)``: the class lists name each image's classes in its prompts.
    """

    text_inputs = ("classes_a", "classes_b")

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        backbone: Mapping[str, Any] | None = None,
        text: Mapping[str, Any] | None = None,
        prompt_length: int = 64,
        visual_dim: int = 512,
        channels: int = 256,
        context_width: int = 256,
        context_heads: int = 4,
        context_layers: int = 3,
        context_dropout: float = 0.1,
        gamma_init: float = 1e-4,
        decoder: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(num_classes, in_channels)
        bcfg = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.3)
        bcfg.update(backbone or {})
        bcfg["in_chans"] = in_channels
        self.backbone = SwinTransformer(**bcfg)
        feat = list(self.backbone.out_channels)
        if len(feat) != 4:
            raise ValueError("CLIPFormer needs the four backbone stages (out_indices=(0, 1, 2, 3))")
        self.glpool = GlobalLocalPool(feat[3], visual_dim)

        tcfg = dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12, embed_dim=visual_dim)
        tcfg.update(text or {})
        self.text_encoder = CLIPTextContextEncoder(**tcfg)
        if self.text_encoder.embed_dim != visual_dim:
            raise ValueError(f"text embed_dim ({self.text_encoder.embed_dim}) must equal visual_dim ({visual_dim})")
        self.prompt_length = prompt_length
        n_ctx = self.text_encoder.context_length - prompt_length
        if n_ctx < 0:
            raise ValueError(f"prompt_length {prompt_length} exceeds the text context length {self.text_encoder.context_length}")
        self.contexts = nn.Parameter(torch.empty(1, n_ctx, self.text_encoder.width))
        nn.init.trunc_normal_(self.contexts)  # std 1, as released (nn.init.trunc_normal_ defaults)
        self.gamma = nn.Parameter(torch.full((visual_dim,), float(gamma_init)))
        self.context_decoder = ContextDecoder(context_width, context_heads, context_layers, visual_dim, context_dropout)

        n_text = 2  # background + foreground prompt per image
        stage_ch = feat[:3] + [feat[3] + n_text]  # score map concatenated to stage 4
        self.neck = FPN([2 * c for c in stage_ch], channels)
        self.minus_conv = PerScale([ConvAct(c, channels, 1, nn.ReLU(inplace=True)) for c in stage_ch])
        self.diff = DifferenceDecoder(stage_ch, channels)
        self.channel_att = PerScale([SELayerV2(3 * channels, channels) for _ in stage_ch])
        dcfg = dict(channels=channels, num_classes=num_classes, text_dim=visual_dim)
        dcfg.update(decoder or {})
        self.decode_head = CSwinTextHead(**dcfg)

    # ------------------------------------------------------------------ text
    @property
    def num_context_tokens(self) -> int:
        return self.contexts.shape[1]

    def tokenize_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        return tokenize(list(prompts), self.prompt_length)

    def encode_prompts(self, prompts_a: Sequence[tuple[str, str]], prompts_b: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings (B, 2, D) for both dates; each distinct prompt runs through the tower once.

        The context tokens are shared by all prompts and the tower has no dropout, so computing a prompt
        once per batch gives exactly the per-sample result of the released code.
        """
        flat = [p for pair in (*prompts_a, *prompts_b) for p in pair]
        unique = list(dict.fromkeys(flat))
        tokens = self.tokenize_prompts(unique).to(self.contexts.device)
        emb = self.text_encoder(tokens, self.contexts)  # (U, D)
        index = torch.tensor([unique.index(p) for p in flat], device=emb.device)
        out = emb[index].reshape(2, len(prompts_a), 2, -1)
        return out[0], out[1]

    def _text_and_score(self, feats: list[torch.Tensor], text: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Context-decoder update of ``text`` and the score map concatenated to stage 4."""
        glob, local = self.glpool(feats[3])
        b, c, h, w = local.shape
        visual = torch.cat([glob[:, None], local.flatten(2).transpose(1, 2)], dim=1)  # (B, 1+HW, C)
        text = text + self.gamma * self.context_decoder(text, visual)
        score = torch.einsum("bchw,bkc->bkhw", F.normalize(local, dim=1), F.normalize(text, dim=2))
        return text, [*feats[:3], torch.cat([feats[3], score], dim=1)]

    # ------------------------------------------------------------------ forward
    def forward_decoder(
        self,
        t1: torch.Tensor,
        t2: torch.Tensor,
        classes_a: Sequence[str] | Sequence[Sequence[str] | None] | None = None,
        classes_b: Sequence[str] | Sequence[Sequence[str] | None] | None = None,
    ) -> torch.Tensor:
        """Decoder logits at 1/2 input resolution (B, num_classes, H/2, W/2)."""
        b = t1.shape[0]
        feats = self.backbone(torch.cat([t1, t2], dim=0))
        fa, fb = [f[:b] for f in feats], [f[b:] for f in feats]
        prompts_a = [build_prompts(c) for c in _per_sample(classes_a, b, "classes_a")]
        prompts_b = [build_prompts(c) for c in _per_sample(classes_b, b, "classes_b")]
        text_a, text_b = self.encode_prompts(prompts_a, prompts_b)
        text_a, xa = self._text_and_score(fa, text_a)
        text_b, xb = self._text_and_score(fb, text_b)

        fpn = self.neck([torch.cat([a, bb], dim=1) for a, bb in zip(xa, xb)])
        minus = self.minus_conv([torch.abs(a - bb) for a, bb in zip(xa, xb)])
        d0, *diffs = self.diff(xa, xb)  # D0 at 1/2, then D1..D4 at 1/4..1/32
        fused = self.channel_att([torch.cat([d, m, p], dim=1) for d, m, p in zip(diffs, minus, fpn)])
        return self.decode_head([*fused, d0], text_a, text_b)


    # ------------------------------------------------------------------ weights
    def load_pretrained(self, clip_weights: Any = None, backbone_weights: Any = None) -> dict[str, Any]:
        report: dict[str, Any] = {}
        if clip_weights:
            report["text"] = load_clip_text_weights(self.text_encoder, clip_weights)
        if backbone_weights:
            report["backbone"] = load_swin_pretrained(self.backbone, backbone_weights)
        return report

    def convert_opencd_state_dict(self, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a released CLIPFormer (mmseg) checkpoint's keys to ours."""
        if not any(k.startswith("backbone.stages.") or k == "contexts2" for k in sd):
            raise KeyError("not a released CLIPFormer checkpoint")
        diff_names = ("linear_c", "diff_c", "linear_fuse", "convd2x", "dense_2x", "convd1x", "dense_1x")
        out: dict[str, torch.Tensor] = {}
        backbone: dict[str, torch.Tensor] = {}
        for k, v in sd.items():
            if k.startswith("backbone.glpool."):
                out["glpool." + k[len("backbone.glpool.") :]] = v
            elif k.startswith("backbone."):
                backbone[k[len("backbone.") :]] = v
            elif k == "contexts2":
                out["contexts"] = v.reshape(self.contexts.shape)
            elif k.startswith(diff_names):
                out["diff." + k] = v
            elif k.startswith("channel_att."):  # mmcv ConvModule keys are already conv.*
                out[k] = v
            else:
                out[k] = v
        for k, v in convert_swin_state_dict(backbone).items():
            out["backbone." + k] = v
        return out


def _check_path(arg: str, value: Any) -> Any:
    if isinstance(value, (str, Path)):
        from changekit.models.hub import is_hub_name

        text = str(value)
        if not Path(text).exists() and not (arg == "clip_weights" and is_hub_name(text)):
            from changekit.checkpoints import CheckpointError

            raise CheckpointError(
                f"{arg}: {text}: no such file. "
                + (
                    "Give OpenAI's ViT-B-16.pt (TorchScript) or an open_clip ViT-B-16 state dict, an open_clip hub "
                    "name such as 'open_clip:ViT-B-16/openai' when online, or null to start the text tower from scratch."
                    if arg == "clip_weights"
                    else "Give Swin-T ImageNet weights (swin_tiny_patch4_window7_224.pth or mmseg's converted file), "
                    "or null to start the backbone from scratch."
                )
            )
    return value


def clipformer_swin_t_vit_b16(
    num_classes: int = 2,
    in_channels: int = 3,
    clip_weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    **kwargs: Any,
) -> CLIPFormer:
    """CLIPFormer with Swin-T and CLIP ViT-B/16's text tower (≈115 M parameters, all trainable).

    ``clip_weights``: OpenAI ``ViT-B-16.pt`` / open_clip file / hub name; ``backbone_weights``: Swin-T ImageNet
    weights (nothing is downloaded implicitly).
    """
    clip_weights = _check_path("clip_weights", clip_weights) if clip_weights else None
    backbone_weights = _check_path("backbone_weights", backbone_weights) if backbone_weights else None
    model = CLIPFormer(num_classes=num_classes, in_channels=in_channels, **kwargs)
    model.load_pretrained(clip_weights, backbone_weights)
    return model


_SOURCE = "CLIPFormer repository README (wujiang0156/CLIPformer)"
register_model("clipformer_swin-t_vit-b16", clipformer_swin_t_vit_b16,
               published=[("LEVIR-CD", 92.24, _SOURCE), ("WHU-CD", 94.49, _SOURCE), ("SYSU-CD", 83.57, _SOURCE)])
