"""``changekit scene``: a change model over two large georeferenced scenes, or a segmentation model over one
(:func:`changekit.geo.run_scene`)."""

from __future__ import annotations

import argparse
import sys

from changekit.cli._parser import Parser
from changekit.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="changekit scene",
        description="Run a change model over two georeferenced scenes of any size (--t1/--t2), or a single-date "
                    "segmentation model over one (--image): streamed, blended, resumable.",
        epilog="Under torchrun (or any launcher that sets RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT) strips are "
               "shared out across processes; --out must then be on a shared file system. See docs/scenes.md.",
    )
    p.add_argument("--t1", help="date-1 raster (GeoTIFF, COG, VRT, anything rasterio opens), or for a Sentinel-2 "
                                "model a folder of band files (SAFE IMG_DATA, OSCD imgs_1/) or a STAC Item (.json)")
    p.add_argument("--t2", help="date-2 raster (or band folder, or STAC Item)")
    p.add_argument("--image", help="the one raster of a single-date segmentation model (e.g. MCAT-UNet): outputs "
                                   "classes.tif, confidence.tif and classes.geojson/.gpkg instead of the change outputs")
    add_model_options(p)
    p.add_argument("--out", required=True, help="output folder")
    add_run_options(p)
    p.add_argument("--cog", action="store_true", help="write the rasters as Cloud-Optimised GeoTIFFs with overviews")
    return p


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The model: --model NAME, or --ckpt (and --config)."""
    p.add_argument("--ckpt", help="changekit checkpoint (records its model config, mean and std), an exported .onnx "
                                  "file (run with ONNX Runtime), or weights for --config")
    p.add_argument("--config", help="model YAML config (only needed when --ckpt does not record one)")
    p.add_argument("--model", help="a model changekit ships, by name (`changekit models --names`: s2-... for "
                                   "Sentinel-2 L1C, aerial-... for aerial RGB); instead of --ckpt")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """How a scene is read, run and written (shared by ``scene`` and ``timeline``)."""
    stac = p.add_argument_group("Sentinel-2 dates as STAC Items (ITEM.json; docs/sentinel2.md)")
    stac.add_argument("--bbox", help="crop every date to W,S,E,N (degrees, EPSG:4326)")
    stac.add_argument("--aoi", help="crop every date to the bounds of this GeoJSON (EPSG:4326)")
    stac.add_argument("--mask", help="no data where the Item's mask says: scl (clouds, shadows, cirrus, snow, "
                                     "saturated, no data), scl:CLASSES, or band:ASSET:VALUES")
    stac.add_argument("--max-masked", type=float, default=0.5,
                      help="refuse a date with more than this fraction of the area masked (default 0.5)")
    stac.add_argument("--force", action="store_true", help="run even on dates masked beyond --max-masked")
    p.add_argument("--bands", help="1-based bands to read from each image, in model order, e.g. 4,3,2 (default: 1..C)")
    p.add_argument("--scale", default="auto",
                   help="stored values -> training units: auto (default), none, dtype, percentile[:LO,HI], linear:MIN,MAX")
    p.add_argument("--input-range", help="MIN,MAX of the training units (default: 0,1 if every mean <= 1 else 0,255)")
    p.add_argument("--mean", help="per-band mean in training units (overrides the checkpoint), or imagenet/clip")
    p.add_argument("--std", help="per-band std in training units (overrides the checkpoint), or imagenet/clip")
    p.add_argument("--align", action="store_true", help="warp the later date onto the earlier one's grid when they differ")
    p.add_argument("--resampling", default="bilinear", help="resampling for --align (nearest, bilinear, cubic, ...)")
    p.add_argument("--window", type=int, default=512, help="window size in pixels (default 512)")
    p.add_argument("--overlap", type=int, default=128, help="overlap between windows in pixels (default 128)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU; the default), cpu, cuda or cuda:N")
    p.add_argument("--threshold", type=float, help="change models: change if probability >= this (default: the "
                                                   "model's own, else 0.5)")
    p.add_argument("--min-area", type=float, default=0.0, help="drop polygons smaller than this (CRS units^2)")
    p.add_argument("--simplify", type=float, default=None, help="simplify polygons with this tolerance (CRS units)")
    p.add_argument("--no-vectors", action="store_true", help="skip the polygons (changes/classes .geojson, .gpkg)")
    p.add_argument("--pixel-coords", action="store_true",
                   help="accept dates without georeferencing: outputs in pixel coordinates, no CRS")
    p.add_argument("--restart", action="store_true", help="discard an unfinished run in --out instead of resuming it")
    p.add_argument("--keep-partial", action="store_true", help="keep --out/.partial (strip files) after finishing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"], default="auto",
                   help="auto (default): bf16 where the hardware runs it natively, else int8 where validated for the "
                        "model's family, else fp32; bf16 (CPUs with native bf16, CUDA), fp16 (CUDA), int8 (CPUs: "
                        "int8 linear layers); fp32 with a warning where unsupported. fp32 is exact")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow first windows)")
    p.add_argument("--clip-per-window", metavar="CLIP",
                   help="language models (CLIPFormer): name the classes CLIP zero-shot finds in every window in its "
                        "prompts (the released mm_slide); CLIP = OpenAI's ViT-B-16.pt, an open_clip file or hub name")
    p.add_argument("--clip-top-k", type=int, default=9, help="classes kept per window for --clip-per-window (default 9)")


def run_kwargs(args: argparse.Namespace) -> dict:
    """``run_scene`` keyword arguments from the model and run options (checked here: --model vs --ckpt, ranges)."""
    rng = None
    if args.input_range:
        try:
            rng = [float(v) for v in args.input_range.split(",")]
            assert len(rng) == 2
        except (ValueError, AssertionError):
            raise ConfigError(f"--input-range {args.input_range!r}: write MIN,MAX, e.g. 0,255") from None
    if args.model is not None:
        if args.ckpt is not None or args.config is not None:
            raise ConfigError("give --model NAME (a shipped model) or --ckpt/--config (your own), not both")
        from changekit.models.pretrained import pretrained_path

        args.ckpt = str(pretrained_path(args.model))
    if args.ckpt is None and args.config is None:
        raise ConfigError("give --model NAME (a shipped model, `changekit models --names`) or --ckpt (and --config if "
                          "the checkpoint does not record its model config)")
    from changekit.data.stac import StacOptions

    stac = StacOptions(bbox=args.bbox.split(",") if args.bbox else None, aoi=args.aoi, mask=args.mask,
                       max_masked=args.max_masked, force=args.force)
    return dict(ckpt=args.ckpt, config=args.config, mean=args.mean, std=args.std, bands=args.bands, scale=args.scale,
                input_range=rng, align=args.align, resampling=args.resampling, window=args.window,
                overlap=args.overlap, batch_size=args.batch_size, device=args.device, threshold=args.threshold,
                min_area=args.min_area, simplify=args.simplify, pixel_coords=args.pixel_coords, restart=args.restart,
                keep_partial=args.keep_partial, progress=not args.quiet and sys.stderr.isatty(),
                clip_per_window=args.clip_per_window, clip_top_k=args.clip_top_k, precision=args.precision,
                compile=args.compile, stac=stac)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.image is not None and (args.t1 or args.t2):
        raise ConfigError("give either --image (a segmentation model's one image) or --t1 and --t2 (a change model's "
                          "two dates), not both")
    if args.image is None and not (args.t1 and args.t2):
        raise ConfigError("give --t1 and --t2 (the two dates of a change model), "
                          "or --image (the one image of a segmentation model)")
    from changekit.geo.scene import SceneOptions, run_scene

    options = SceneOptions(**run_kwargs(args), vectors=not args.no_vectors, cog=args.cog)
    s = run_scene(args.image or args.t1, None if args.image else args.t2, args.out, options)
    if s["rank"] == 0:
        print(f"scene {s['grid']} px, bands {s['bands']}, scaling {s['scaling']}"
              + (", date 2 warped onto date 1's grid" if s["aligned"] else ""))
        why = f" (auto: {s['precision_reason']})" if s.get("precision_reason") else ""
        print(f"precision {s['precision']}{why}; {s['windows']} windows in {s['strips']} strips ({s['strips_resumed']} strips resumed), "
              f"{s['seconds']:.1f} s, {s['megapixels_per_s']:.3g} MP/s")
        if "class_pixels" in s:
            total = max(1, s["valid_pixels"])
            print(f"classes over {s['valid_pixels']} valid pixels ({s['nodata_pixels']} no data): "
                  + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in s["class_pixels"].items()))
        else:
            print(f"changed pixels: {s['changed_pixels']} of {s['valid_pixels']} valid ({s['nodata_pixels']} no data)")
        if "polygons" in s:
            print(f"polygons: {s['polygons']} (dropped below --min-area: {s['polygons_dropped']})")
        for date, rec in (s.get("stac") or {}).get("dates", {}).items():
            masked = f", {100 * rec['masked_fraction']:.1f} % masked" if "masked_fraction" in rec else ""
            print(f"{date}: STAC Item {rec['item']} ({rec['level'] or 'level unknown'}, {rec['datetime']}){masked}")
        if s.get("text_classes"):
            print(f"prompts: {s['text_classes']}")
        if s.get("crs") is None:
            print("note: the inputs have no CRS: outputs are in pixel coordinates (polygons' 'crs' is null)")
        for k, v in s["outputs"].items():
            print(f"  {k:<12} {v}")
    return 0
