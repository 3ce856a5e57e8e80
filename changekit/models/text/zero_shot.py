"""CLIP zero-shot class lists per image (``changekit clip-labels``) for CLIPFormer's foreground prompts.

CLIPFormer (like ChangeCLIP) writes the classes CLIP sees in each image into that image's foreground prompt.
This command runs CLIP zero-shot classification over the 56-class remote-sensing vocabulary of ChangeCLIP's
``clip_func.py`` (prompts are the bare class names, as there) for every image of one or more folders and caches
the ranking as JSON next to each folder::

    changekit clip-labels data/LEVIR-CD256 --clip-weights pretrain/ViT-B-16.pt
    # -> data/LEVIR-CD256/train/A_clipcls.json, train/B_clipcls.json, val/..., test/...

A folder holding images is labelled itself; a folder without images is searched for sub-folders that hold
some. The JSON maps each image's file stem to its classes, most probable first, with their probabilities::

    {"format": "changekit-clip-labels/1", "model": "...", "vocabulary": [...], "template": "{}",
     "images": {"train_1": [["building", 0.41], ["dense residential", 0.22], ...], ...}}

:func:`changekit.data.text_classes.read_clip_classes` reads it back as ``{stem: [class, ...]}`` (optionally the top k) for
``CLIPFormer.forward(t1, t2, classes_a, classes_b)``. Existing files are reused when they cover every image
with the same model and vocabulary (``--overwrite`` recomputes).

CLIP weights: ``--clip-weights`` takes OpenAI's TorchScript checkpoints (``ViT-B-16.pt``, ``RN50.pt``) or an
open_clip state dict (``.pt``/``.bin``/``.safetensors``); ``--clip-model`` an open_clip hub name
(``open_clip:ViT-B-16/openai``, see :mod:`changekit.models.hub`), which needs the network. **Fallback**: with ``--fallback`` (no weights available) every
image gets the fixed list :data:`changekit.models.clipformer.FALLBACK_CLASSES`, recorded as ``"model": "fallback"``
(a warning is logged wherever the file is read); results then rest on the learnable context alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from changekit.atomic import write_json
from changekit.data.text_classes import FORMAT, output_path
from changekit.errors import DataError

__all__ = ["build_clip", "ClipZeroShot", "WindowLabeller", "load_window_labeller", "label_folder", "find_image_folders"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


# --------------------------------------------------------------------------------------------- CLIP model
def build_clip(source: str | Path | Mapping[str, torch.Tensor], quick_gelu: bool = True):
    """An open_clip ``CLIP`` (float32, eval) built from a CLIP state dict or hub name, its shape read from the weights.

    Heads are ``width / 64`` as in all OpenAI / open_clip ViT and ResNet CLIPs.
    """
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    from changekit.checkpoints import CheckpointError
    from changekit.models.text.clip_text import clip_state_dict

    sd = clip_state_dict(source)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    if "text.token_embedding.weight" in sd:  # CustomTextCLIP layout -> plain layout
        sd = {(k[len("text."):] if k.startswith("text.") else k): v for k, v in sd.items()}
    name = "state dict" if isinstance(source, Mapping) else str(source)
    need = ("token_embedding.weight", "positional_embedding", "text_projection", "ln_final.weight", "logit_scale")
    missing = [k for k in need if k not in sd]
    if missing or not any(k.startswith("visual.") for k in sd):
        raise CheckpointError(
            f"{name}: not a full CLIP checkpoint (image and text towers); missing {missing or ['visual.*']}. "
            "clip-labels needs both towers: OpenAI's ViT-B-16.pt or an open_clip ViT-B-16 state dict."
        )
    if "visual.proj" in sd:  # ViT image tower
        width = sd["visual.conv1.weight"].shape[0]
        layers = len([k for k in sd if k.startswith("visual.transformer.resblocks.") and k.endswith(".attn.in_proj_weight")])
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = CLIPVisionCfg(layers=layers, width=width, patch_size=patch, image_size=patch * grid, head_width=64)
    elif "visual.attnpool.positional_embedding" in sd:  # ModifiedResNet image tower (RN50...)
        counts = tuple(len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}.")}) for b in (1, 2, 3, 4))
        width = sd["visual.layer1.0.conv1.weight"].shape[0]
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        vision = CLIPVisionCfg(layers=counts, width=width, image_size=grid * 32, head_width=64)
    else:
        raise CheckpointError(f"{name}: unknown CLIP image tower (neither ViT 'visual.proj' nor ResNet 'visual.attnpool')")
    tw = sd["ln_final.weight"].shape[0]
    text = CLIPTextCfg(
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        width=tw,
        heads=max(1, tw // 64),
        layers=len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
    )
    model = CLIP(sd["text_projection"].shape[1], vision_cfg=vision, text_cfg=text, quick_gelu=quick_gelu)
    for k in ("input_resolution", "context_length", "vocab_size"):
        sd.pop(k, None)
    own = model.state_dict()
    unexpected = sorted(set(sd) - set(own))
    missing = sorted(set(own) - set(sd))
    shapes = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if unexpected or missing or shapes:
        raise CheckpointError(
            f"{name}: CLIP weights do not fit the inferred architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, shape mismatches {shapes[:5]}"
        )
    model.load_state_dict(sd, strict=True)
    return model.float().eval()


class ClipZeroShot:
    """Zero-shot classification of RGB images over a class vocabulary (CLIP's ``logits_per_image`` softmax)."""

    def __init__(self, model, vocabulary: Sequence[str], template: str = "{}", device: str | torch.device = "cpu") -> None:
        from changekit.models.text.clip_text import tokenize

        self.model = model.to(device)
        self.device = torch.device(device)
        self.vocabulary = list(vocabulary)
        vis = model.visual
        size = getattr(vis, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        ctx = int(model.positional_embedding.shape[0]) if hasattr(model, "positional_embedding") else 77
        tokens = tokenize([template.format(c) for c in self.vocabulary], ctx).to(self.device)
        with torch.no_grad():
            self.text = F.normalize(model.encode_text(tokens).float(), dim=-1)
            self.scale = float(model.logit_scale.exp())

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """(H, W, 3) array in 0..255 → CLIP input (3, S, S): resize shorter side (bicubic), centre crop, normalise."""
        x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0
        h, w = x.shape[-2:]
        s = self.image_size
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
        top, left = (nh - s) // 2, (nw - s) // 2
        x = x[..., top : top + s, left : left + s]
        mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
        return ((x - mean) / std)[0]

    @torch.no_grad()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        img = F.normalize(self.model.encode_image(batch.to(self.device)).float(), dim=-1)
        return (self.scale * img @ self.text.T).softmax(dim=-1).cpu()

    def rank(self, images: Sequence[np.ndarray], top_k: int | None = None) -> list[list[tuple[str, float]]]:
        probs = self.probabilities(torch.stack([self.preprocess(im) for im in images]))
        out = []
        for p in probs:
            order = torch.argsort(p, descending=True)[: top_k or len(self.vocabulary)]
            out.append([(self.vocabulary[i], round(float(p[i]), 6)) for i in order.tolist()])
        return out


class WindowLabeller:
    """Class lists for every inference window from CLIP zero-shot on that window — CLIPFormer's released ``mm_slide``
    test mode, for ``test`` / ``predict`` (``model.eval.mode: mm_slide``) and ``changekit scene --clip-per-window``.

    ``__call__(t1, t2, where)`` takes the model's normalised (B, C, h, w) windows, undoes the normalisation
    (``x · std + mean``, then ``value_range`` → 0..255 on the first three bands, read as RGB), ranks the vocabulary
    for each date and returns the top ``top_k`` names per sample as ``(classes_a, classes_b)``. Every (image, window)
    is kept in ``records`` (``image`` when ``context`` names the batch, ``where``, both lists) so the lists used can
    be written out and checked. ``where`` is one window for the whole batch or a list with one per sample.

    The released ``clip_infer`` zips the 56 names with a (1, 56) probability array, which yields one pair, so every
    crop was labelled ``["airport"]``; this ranks all 56 and keeps the top 9, as the code evidently intends.
    """

    def __init__(self, classifier: ClipZeroShot, mean: Sequence[float], std: Sequence[float],
                 value_range: Sequence[float] = (0.0, 255.0), top_k: int = 9, source: str = "") -> None:
        self.classifier, self.top_k, self.source = classifier, int(top_k), source
        self.mean = torch.tensor([float(v) for v in mean]).view(1, -1, 1, 1)
        self.std = torch.tensor([float(v) for v in std]).view(1, -1, 1, 1)
        self.lo, self.hi = float(value_range[0]), float(value_range[1])
        self.records: list[dict[str, Any]] = []
        self.context: Any = None  # set by the caller: the images the current batch holds

    def _rgb(self, x: torch.Tensor) -> list[np.ndarray]:
        x = x.detach().float().cpu()
        x = (x * self.std[:, : x.shape[1]] + self.mean[:, : x.shape[1]] - self.lo) / (self.hi - self.lo) * 255.0
        return [im[:3].clamp(0, 255).permute(1, 2, 0).numpy() for im in x]

    def __call__(self, t1: torch.Tensor, t2: torch.Tensor, where: Any = None) -> tuple[list[list[str]], list[list[str]]]:
        ca = [[c for c, _ in r] for r in self.classifier.rank(self._rgb(t1), self.top_k)]
        cb = [[c for c, _ in r] for r in self.classifier.rank(self._rgb(t2), self.top_k)]
        for i in range(len(ca)):  # one record per (image, window)
            rec = {"where": where[i] if isinstance(where, list) else where, "classes_a": ca[i], "classes_b": cb[i]}
            if self.context is not None:
                rec = {"image": self.context[i], **rec}
            self.records.append(rec)
        return ca, cb

    def describe(self) -> str:
        return (f"per-window CLIP zero-shot class lists ({self.source or 'CLIP'}, top {self.top_k} of "
                f"{len(self.classifier.vocabulary)} classes)")

    def summary(self) -> dict[str, Any]:
        return {"format": "changekit-window-classes/1", "clip": self.source, "top_k": self.top_k,
                "vocabulary": list(self.classifier.vocabulary), "windows": self.records}


def load_window_labeller(clip: str | Path, mean: Sequence[float], std: Sequence[float],
                         value_range: Sequence[float] = (0.0, 255.0), top_k: int = 9,
                         device: str | torch.device = "cpu") -> WindowLabeller:
    """A :class:`WindowLabeller` over ChangeCLIP's 56 classes from CLIP weights (file or open_clip hub name)."""
    from changekit.errors import ConfigError
    from changekit.models.clipformer import RS_CLASSES_56

    if len(mean) < 3:
        raise ConfigError(f"per-window CLIP labels need RGB imagery; the model reads {len(mean)} band(s)")
    if not (1 <= int(top_k) <= len(RS_CLASSES_56)):
        raise ConfigError(f"top_k {top_k}: give 1..{len(RS_CLASSES_56)}")
    is_hub = isinstance(clip, str) and ":" in clip and not Path(clip).exists()
    if not is_hub and not Path(clip).is_file():
        raise ConfigError(f"CLIP weights {clip}: no such file; give OpenAI's ViT-B-16.pt, an open_clip state dict "
                          "or an open_clip hub name (open_clip:ViT-B-16/openai)")
    classifier = ClipZeroShot(build_clip(str(clip)), RS_CLASSES_56, device=device)
    return WindowLabeller(classifier, mean, std, value_range, top_k, source=str(clip))


# --------------------------------------------------------------------------------------------- folders and files
def _image_exts() -> tuple[str, ...]:
    from changekit.data.io import IMAGE_EXTS

    return tuple(IMAGE_EXTS)


def _images_in(folder: Path) -> list[Path]:
    exts = _image_exts()
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)


def find_image_folders(root: str | Path) -> list[Path]:
    """``root`` itself if it holds images, else every folder below it that does (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; give an image folder (e.g. data/LEVIR-CD256/train/A) or a dataset root")
    if _images_in(root):
        return [root]
    found = sorted(d for d in root.rglob("*") if d.is_dir() and _images_in(d))
    if not found:
        raise DataError(f"{root}: no images ({', '.join(_image_exts())}) in it or below it")
    return found


def _to_rgb8(arr: np.ndarray, path: Path, bands: Sequence[int] | None) -> np.ndarray:
    if bands is not None:
        arr = arr[:, :, list(bands)]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] < 3:
        raise DataError(f"{path}: {arr.shape[2]} bands; CLIP needs RGB (pass --bands R G B)")
    arr = arr[:, :, :3]
    if float(arr.max(initial=0)) > 255.0:  # >8-bit imagery: 2-98 % stretch to 0..255
        lo, hi = np.percentile(arr, 2), np.percentile(arr, 98)
        arr = (arr - lo) / max(hi - lo, 1e-6) * 255.0
    return np.clip(arr, 0, 255)


def label_folder(
    folder: str | Path,
    classifier: ClipZeroShot | None,
    model_name: str,
    out: str | Path | None = None,
    top_k: int | None = None,
    batch_size: int = 16,
    bands: Sequence[int] | None = None,
    template: str = "{}",
    overwrite: bool = False,
    log=print,
) -> Path:
    """Label every image of ``folder`` (``classifier=None``: the fixed fallback list) and write the JSON."""
    from changekit.data.io import read_image
    from changekit.models.clipformer import FALLBACK_CLASSES, RS_CLASSES_56

    folder = Path(folder)
    out = Path(out) if out else output_path(folder)
    images = _images_in(folder)
    if not images:
        raise DataError(f"{folder}: no images to label")
    vocabulary = list(classifier.vocabulary) if classifier is not None else list(RS_CLASSES_56)
    if out.is_file() and not overwrite:
        try:
            old = json.loads(out.read_text())
            if (
                old.get("format") == FORMAT
                and old.get("model") == model_name
                and old.get("vocabulary") == vocabulary
                and old.get("template") == template
                and set(old.get("images", {})) >= {p.stem for p in images}
            ):
                log(f"{out}: up to date ({len(images)} images)")
                return out
        except (OSError, ValueError):
            pass  # unreadable cache: recompute
    result: dict[str, list[list[Any]]] = {}
    if classifier is None:
        for p in images:
            result[p.stem] = [[c, None] for c in FALLBACK_CLASSES]
    else:
        for i in range(0, len(images), batch_size):
            chunk = images[i : i + batch_size]
            arrays = [_to_rgb8(read_image(p), p, bands) for p in chunk]
            for p, ranking in zip(chunk, classifier.rank(arrays, top_k)):
                result[p.stem] = [[c, s] for c, s in ranking]
            log(f"{folder}: {min(i + batch_size, len(images))}/{len(images)}")
    data = {
        "format": FORMAT,
        "model": model_name,
        "vocabulary": vocabulary,
        "template": template,
        "top_k": top_k,
        "images": result,
    }
    write_json(out, data)
    log(f"wrote {out} ({len(result)} images)")
    return out
