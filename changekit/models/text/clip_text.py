"""CLIP's text transformer with CoOp-style learnable context tokens (DenseCLIP, ChangeCLIP, CLIPFormer).

The module keeps OpenAI CLIP's key layout for the text side, so the text tower of OpenAI's ``ViT-B-16.pt``
(TorchScript), of an open_clip state dict (plain or ``text.``-prefixed), or of any checkpoint that nests
those keys under a prefix loads key for key:

``token_embedding.weight``, ``positional_embedding``, ``transformer.resblocks.{i}.{ln_1, attn.in_proj_weight,
attn.in_proj_bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``, ``ln_final``, ``text_projection``.

Context insertion (as ChangeCLIP's ``CLIPTextContextEncoder``): a prompt tokenised to ``L`` tokens
``[SOT, w1 .. wn, EOT, 0 ..]`` becomes ``[SOT, ctx1 .. ctxM, w1 .. wn, EOT, 0 ..]`` in embedding space, with
``L + M`` equal to the positional-embedding length (64 + 13 = 77 for CLIPFormer); the output is the
final-LayerNorm feature at the EOT position (``argmax(tokens) + M``) times ``text_projection``.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from changekit.checkpoints import CheckpointError, extract_state_dict, read_state_dict
from changekit.models.hub import hub_state_dict, is_hub_name

__all__ = [
    "CLIPTextContextEncoder",
    "QuickGELU",
    "get_tokenizer",
    "tokenize",
    "sot_eot_ids",
    "clip_state_dict",
    "load_clip_text_weights",
]


# --------------------------------------------------------------------------------------------- tokenizer
@functools.lru_cache(maxsize=1)
def get_tokenizer():
    """open_clip's CLIP BPE tokenizer (its vocabulary ships with the package; nothing is downloaded)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def sot_eot_ids() -> tuple[int, int]:
    tok = get_tokenizer()
    return int(tok.sot_token_id), int(tok.eot_token_id)


@functools.lru_cache(maxsize=4096)
def _tokenize_one(text: str, context_length: int) -> tuple[int, ...]:
    return tuple(get_tokenizer()([text], context_length=context_length)[0].tolist())


def tokenize(texts: str | Sequence[str], context_length: int = 64) -> torch.Tensor:
    """Tokenise prompts to ``(N, context_length)`` int64 ids as CLIP does: ``[SOT, tokens.., EOT, 0..]``.

    Over-long prompts are truncated and their last position is forced to EOT (``truncate=True`` in
    OpenAI's ``clip.tokenize``), so every row keeps its end token.
    """
    if isinstance(texts, str):
        texts = [texts]
    return torch.tensor([_tokenize_one(str(t), int(context_length)) for t in texts], dtype=torch.long)


# --------------------------------------------------------------------------------------------- modules
class QuickGELU(nn.Module):
    """OpenAI CLIP's activation: ``x * sigmoid(1.702 x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block with CLIP's names (``ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj``)."""

    def __init__(self, width: int, heads: int, quick_gelu: bool = True) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, width * 4)),
                    ("gelu", QuickGELU() if quick_gelu else nn.GELU()),
                    ("c_proj", nn.Linear(width * 4, width)),
                ]
            )
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, quick_gelu: bool = True) -> None:
        super().__init__()
        self.width, self.layers = width, layers
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, quick_gelu) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        for blk in self.resblocks:
            x = blk(x, attn_mask)
        return x


class CLIPTextContextEncoder(nn.Module):
    """CLIP text tower taking token ids plus learnable context embeddings inserted after SOT.

    Args:
        context_length: positional-embedding length (77 for CLIP); prompt tokens + context tokens must fill it.
        vocab_size, width, heads, layers: text transformer (CLIP ViT-B/16: 49408, 512, 8, 12).
        embed_dim: output width of ``text_projection`` (512 for ViT-B/16).
        quick_gelu: OpenAI's models use QuickGELU; open_clip's non-OpenAI ones use GELU.
    """

    def __init__(
        self,
        context_length: int = 77,
        vocab_size: int = 49408,
        width: int = 512,
        heads: int = 8,
        layers: int = 12,
        embed_dim: int = 512,
        quick_gelu: bool = True,
    ) -> None:
        super().__init__()
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.width = width
        self.embed_dim = embed_dim
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = TextTransformer(width, layers, heads, quick_gelu)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        mask = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """CLIP's initialisation (``CLIP.initialize_parameters``)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        w, n = self.width, len(self.transformer.resblocks)
        proj_std = (w**-0.5) * ((2 * n) ** -0.5)
        attn_std = w**-0.5
        fc_std = (2 * w) ** -0.5
        for blk in self.transformer.resblocks:
            nn.init.normal_(blk.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(blk.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(blk.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(blk.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=w**-0.5)

    def forward(self, text: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``text`` (N, L) token ids; ``context`` (1 or N, M, width) or None → (N, embed_dim).

        With context, ``L + M`` must equal ``context_length``; without, ``L`` must.
        """
        n, length = text.shape
        x = self.token_embedding(text)
        n_ctx = 0
        if context is not None:
            n_ctx = context.shape[-2]
            ctx = context.reshape(-1, n_ctx, self.width).to(x.dtype).expand(n, -1, -1)
            x = torch.cat([x[:, :1], ctx, x[:, 1:]], dim=1)
        if length + n_ctx != self.context_length:
            raise ValueError(
                f"prompt tokens ({length}) + context tokens ({n_ctx}) must equal the text context length "
                f"({self.context_length})"
            )
        x = x + self.positional_embedding
        x = self.transformer(x, self.attn_mask.to(x.dtype))
        x = self.ln_final(x)
        eot = self.eot_index(text, n_ctx)
        return x[torch.arange(n, device=x.device), eot] @ self.text_projection

    @staticmethod
    def eot_index(text: torch.Tensor, n_ctx: int = 0) -> torch.Tensor:
        """Position of the EOT token after context insertion: the largest id in CLIP's vocabulary, shifted by M."""
        return text.argmax(dim=-1) + n_ctx


# --------------------------------------------------------------------------------------------- weights
_TEXT_ROOTS = ("token_embedding.weight", "positional_embedding", "text_projection", "ln_final.weight")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar")


def clip_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Full CLIP state dict (OpenAI layout) from a file, a mapping or an open_clip hub name (online only).

    Files: OpenAI TorchScript archives (``ViT-B-16.pt``), open_clip ``.pt``/``.bin``/``.safetensors`` state
    dicts, checkpoints nesting them (``state_dict``/``model``). Tensors are returned as float32.
    """
    if isinstance(source, Mapping):
        sd = extract_state_dict(source, "state dict")
    else:
        spec = str(source)
        if is_hub_name(spec):  # open_clip:ViT-B-16/openai, hf-hub:..., see changekit.models.hub
            sd = hub_state_dict(spec)
        else:
            sd = read_state_dict(spec)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def _find_text_prefix(sd: Mapping[str, torch.Tensor]) -> str:
    """The prefix under which a CLIP text tower lives (``''``, ``'text.'``, ``'text_encoder.'``, ...)."""
    candidates = sorted({k[: -len("token_embedding.weight")] for k in sd if k.endswith("token_embedding.weight")}, key=len)
    for prefix in candidates:
        if all(prefix + r in sd for r in _TEXT_ROOTS):
            return prefix
    raise CheckpointError(
        "no CLIP text tower found (expected keys token_embedding.weight, positional_embedding, transformer.resblocks.*, "
        "ln_final.*, text_projection, possibly under a prefix such as 'text.')"
    )


def text_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Infer the text tower's sizes from its weights (heads = width / 64, as CLIP's models use)."""
    p = _find_text_prefix(sd)
    width = sd[p + "ln_final.weight"].shape[0]
    layers = len({k[len(p) :].split(".")[2] for k in sd if k.startswith(p + "transformer.resblocks.")})
    return dict(
        context_length=sd[p + "positional_embedding"].shape[0],
        vocab_size=sd[p + "token_embedding.weight"].shape[0],
        width=width,
        heads=max(1, width // 64),
        layers=layers,
        embed_dim=sd[p + "text_projection"].shape[1],
    )


def load_clip_text_weights(
    encoder: CLIPTextContextEncoder, source: str | Path | Mapping[str, Any]
) -> dict[str, list[str]]:
    """Load the text tower of a CLIP checkpoint into ``encoder``; every encoder key must be filled.

    A longer positional embedding is truncated to the encoder's length (as DenseCLIP does for 77 → 13+L);
    other keys of the file (the image tower, ``logit_scale``) are ignored and reported.
    Returns ``{"loaded": [...], "ignored": [...]}``.
    """
    name = "state dict" if isinstance(source, Mapping) else str(source)
    sd = clip_state_dict(source)
    prefix = _find_text_prefix(sd)
    own = encoder.state_dict()
    picked: dict[str, torch.Tensor] = {}
    missing, shapes = [], []
    for k, v in own.items():
        src = sd.get(prefix + k)
        if src is None:
            missing.append(k)
            continue
        if k == "positional_embedding" and src.shape[0] > v.shape[0] and src.shape[1:] == v.shape[1:]:
            src = src[: v.shape[0]]
        if tuple(src.shape) != tuple(v.shape):
            shapes.append(f"{k}: file {tuple(src.shape)} vs model {tuple(v.shape)}")
            continue
        picked[k] = src.to(v.dtype)
    if missing or shapes:
        lines = [f"{name}: CLIP text tower does not fit the model's text encoder"]
        if missing:
            lines.append(f"  missing ({len(missing)}): " + ", ".join(missing[:10]))
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): " + "; ".join(shapes[:10]))
        lines.append("  CLIPFormer expects CLIP ViT-B/16's text tower (width 512, 12 layers, 77 positions, 512-d projection).")
        raise CheckpointError("\n".join(lines))
    encoder.load_state_dict(picked, strict=True)
    used = {prefix + k for k in picked}
    return {"loaded": sorted(picked), "ignored": sorted(k for k in sd if k not in used)}
