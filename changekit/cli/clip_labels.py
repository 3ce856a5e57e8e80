"""``changekit clip-labels``: CLIP zero-shot class lists per image (:mod:`changekit.models.text.zero_shot`)."""

from __future__ import annotations

import sys
from pathlib import Path

from changekit.cli._parser import Parser
from changekit.errors import ChangekitError
from changekit.models.text.zero_shot import ClipZeroShot, build_clip, find_image_folders, label_folder


def main(argv: list[str]) -> int:
    from changekit.models.clipformer import FALLBACK_CLASSES, RS_CLASSES_56

    p = Parser(
        prog="changekit clip-labels",
        description="CLIP zero-shot class lists per image (56-class remote-sensing vocabulary) for CLIPFormer prompts.",
        epilog=f"Without CLIP weights use --fallback: every image gets the fixed list {', '.join(FALLBACK_CLASSES)}.",
    )
    p.add_argument("folders", nargs="+", help="image folders, or dataset roots searched for image folders")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--clip-weights", help="OpenAI CLIP TorchScript file (ViT-B-16.pt) or open_clip state dict")
    src.add_argument("--clip-model", help="hub name, e.g. open_clip:ViT-B-16/openai (downloads; needs the network)")
    src.add_argument("--fallback", action="store_true", help="no CLIP: write the fixed fallback class list for every image")
    p.add_argument("--out", help="output JSON (only with a single image folder); default <folder>_clipcls.json")
    p.add_argument("--top-k", type=int, default=None, help="keep the k most probable classes (default: all, ranked)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--bands", type=int, nargs=3, default=None, help="0-based R G B band indices for multi-band images")
    p.add_argument("--template", default="{}", help="text prompt per class (default: the bare name, as ChangeCLIP)")
    p.add_argument("--no-quick-gelu", action="store_true", help="GELU text/image MLPs (non-OpenAI open_clip weights)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="recompute even when an up-to-date JSON exists")
    args = p.parse_args(argv)
    if "{}" not in args.template:
        raise ChangekitError(f"--template {args.template!r} must contain '{{}}' where the class name goes")
    if args.top_k is not None and args.top_k < 1:
        raise ChangekitError("--top-k must be at least 1")

    folders = [f for root in args.folders for f in find_image_folders(root)]
    if args.out and len(folders) != 1:
        raise ChangekitError(f"--out needs exactly one image folder, found {len(folders)}: {', '.join(map(str, folders[:4]))}")

    if args.fallback:
        classifier, name = None, "fallback"
    else:
        source = args.clip_weights or args.clip_model
        if args.clip_weights and not Path(args.clip_weights).is_file():
            raise ChangekitError(
                f"--clip-weights {args.clip_weights}: no such file. Give OpenAI's ViT-B-16.pt or an open_clip state dict; "
                "without CLIP weights use --fallback (a fixed class list for every image)."
            )
        if args.clip_model:
            from changekit.models.hub import is_hub_name

            if not is_hub_name(args.clip_model):
                raise ChangekitError(f"--clip-model {args.clip_model!r}: give a hub name like open_clip:ViT-B-16/openai (see changekit.models.hub)")
        model = build_clip(source, quick_gelu=not args.no_quick_gelu)
        classifier = ClipZeroShot(model, RS_CLASSES_56, args.template, args.device)
        name = str(Path(source).name if args.clip_weights else source)
    for folder in folders:
        label_folder(
            folder, classifier, name, out=args.out, top_k=args.top_k, batch_size=args.batch_size,
            bands=args.bands, template=args.template, overwrite=args.overwrite,
            log=lambda m: print(m, file=sys.stderr),
        )
    return 0
