"""Per-image class lists for language-driven models (CLIPFormer's prompts), as ``changekit clip-labels`` writes
them (:mod:`changekit.models.text.zero_shot`): one JSON per image folder, ``<folder>_clipcls.json`` beside it."""

from __future__ import annotations

import json
from pathlib import Path

from changekit.errors import DataError

__all__ = ["FORMAT", "output_path", "read_clip_classes"]

FORMAT = "changekit-clip-labels/1"


def output_path(folder: str | Path) -> Path:
    """Where the class lists of ``folder`` are cached: ``<folder>_clipcls.json`` beside it."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}_clipcls.json"


def read_clip_classes(path: str | Path, top_k: int | None = None) -> dict[str, list[str]]:
    """``{stem: [class, ...]}`` from a clip-labels JSON (or the image folder it belongs to), most probable first."""
    path = Path(path)
    if path.is_dir():
        path = output_path(path)
    if not path.is_file():
        raise DataError(f"{path}: no CLIP class lists; run `changekit clip-labels {path.parent}` first")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e}); re-run `changekit clip-labels --overwrite`") from e
    if data.get("format") != FORMAT or not isinstance(data.get("images"), dict):
        raise DataError(f"{path}: not a changekit clip-labels file (format {data.get('format')!r})")
    if data.get("model") == "fallback":  # an explicit choice at clip-labels time; say so wherever it is used
        import logging

        logging.getLogger("changekit").warning(
            "%s holds the fixed fallback class list (clip-labels --fallback), not per-image CLIP labels", path)
    return {stem: [c for c, _ in ranking][:top_k] for stem, ranking in data["images"].items()}
