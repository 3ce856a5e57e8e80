"""``changekit export``: a checkpoint or config to an ONNX graph (:func:`changekit.deploy.export_onnx`), or to a
``.safetensors`` file that records its config (:func:`changekit.models.pretrained.write_model_file`: what
changekit ships its own models as). Several checkpoints of one recipe export as one ensemble
(:class:`changekit.models.ensemble.ChangeEnsemble`: their mean probability)."""

from __future__ import annotations

import json

from changekit.cli._parser import Parser


def _load(models: list[str], weights: str | None):
    """One model, or the ensemble of several checkpoints (their records must agree)."""
    from changekit.errors import ConfigError
    from changekit.models.loading import load_model

    if len(models) == 1:
        is_config = models[0].endswith((".yaml", ".yml"))
        return load_model(weights, config=models[0]) if is_config else load_model(models[0])
    if weights or any(m.endswith((".yaml", ".yml")) for m in models):
        raise ConfigError("an ensemble is exported from changekit checkpoints (they record their config); give "
                          "the checkpoints without a YAML config or --weights")
    from changekit.models.ensemble import ChangeEnsemble, common_record

    members = [load_model(m) for m in models]
    record = common_record([m.changekit_info for m in members], models)
    ensemble = ChangeEnsemble(members).eval()
    ensemble.changekit_info = record
    return ensemble


def main(argv: list[str]) -> int:
    p = Parser(
        prog="changekit export",
        description="Export a model to ONNX: inputs t1, t2 (B, C, H, W, normalised; a segmentation model: image), "
                    "output logits (B, K, H, W); "
                    "dynamic batch, dynamic H/W where the model allows it (checked), metadata for inference.")
    p.add_argument("model", nargs="+",
                   help="a changekit checkpoint (records its config), or a YAML config (with --weights); several "
                        "checkpoints of one recipe (e.g. other seeds) export as one ensemble: their mean probability")
    p.add_argument("--weights", help="weights for a config (a changekit, open-cd or plain weights file)")
    p.add_argument("--out", required=True, help="the .onnx file to write, or a .safetensors file (weights plus the "
                                                "config and normalisation, loadable with changekit.load_model)")
    p.add_argument("--threshold", type=float, help=".safetensors: the change threshold to record as the model's "
                                                   "default (chosen on validation data; scene --threshold overrides)")
    p.add_argument("--size", type=int, nargs="+", default=[512], metavar="N",
                   help="input size H W (or N) to trace at and to record as the recommended window (default 512)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="fp16 stores the weights in half precision (inputs and outputs stay float32)")
    p.add_argument("--quantize", choices=["int8"],
                   help="int8: ONNX Runtime's dynamic quantiser on the large MatMul/Gemm weights (per-channel int8; "
                        "for CPUs; name the file e.g. model.int8.onnx)")
    p.add_argument("--classes", help="language models (CLIPFormer): comma-separated class list to bake into the "
                                     "prompts (default: none, the prompt without class names)")
    args = p.parse_args(argv)
    from changekit.errors import ConfigError

    if len(args.size) > 2 or min(args.size) <= 0:
        raise ConfigError("--size takes one or two positive integers")
    if args.quantize and args.precision != "fp32":
        raise ConfigError("give --precision fp16 or --quantize int8, not both")
    if args.quantize and args.out.endswith(".safetensors"):
        raise ConfigError("--quantize int8 applies to ONNX exports (--out model.int8.onnx); a .safetensors file keeps "
                          "the fp32 weights (changekit scene --precision int8 quantises them at run time)")
    from changekit.deploy import export_onnx

    model = _load(args.model, args.weights)
    if args.out.endswith(".safetensors"):
        from changekit.models.pretrained import write_model_file

        info = dict(model.changekit_info)
        if args.threshold is not None:
            if not 0.0 < args.threshold < 1.0:
                raise ConfigError(f"--threshold {args.threshold}: give a probability between 0 and 1")
            info["threshold"] = args.threshold
        path = write_model_file(model, args.out, info)
        kind = f"ensemble of {info['ensemble']} {info['arch']}" if info.get("ensemble") else info["arch"]
        print(f"wrote {path}: {kind}, {sum(p.numel() for p in model.parameters()):,} parameters, "
              f"bands {info.get('units', {}) and info['units'].get('band_names') or info.get('bands')}")
        return 0
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    meta = export_onnx(model, args.out, size=(args.size[0], args.size[-1]), opset=args.opset,
                       precision=args.quantize or args.precision, text_classes=classes)
    shape = "dynamic H x W" if meta["dynamic_size"] else f"fixed {meta['fixed_size'][0]}x{meta['fixed_size'][1]}"
    print(f"wrote {meta['path']}: {meta['arch']}, {shape}, {meta['precision']}, max relative difference to "
          f"PyTorch {meta['error']:.2g}")
    if "quantized_layers" in meta:
        print(f"int8: {meta['quantized_layers']} MatMul/Gemm layer(s) quantised (those with at least 65,536 weights; "
              "the rest stay fp32)" + ("; this model has none that large, so it runs as fp32" if not
                                       meta["quantized_layers"] else ""))
    print(json.dumps({k: meta[k] for k in ("mean", "std", "bands", "units", "window")}))
    return 0
