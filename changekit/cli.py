"""The ``changekit`` command: a thin dispatcher to the sub-command that does the work.

``fit``/``validate``/``test``/``predict`` are Lightning CLI runs driven by YAML configs; every other
command is a small argparse program living next to the code it drives. Errors that a user can fix
(:class:`changekit.errors.ChangekitError`) are printed without a traceback and exit with status 2.
"""

from __future__ import annotations

import importlib
import sys

# name -> ("module:function", one-line help). Each function takes argv (list[str]) and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("changekit.engine.cli:fit", "train a model from a YAML config"),
    "validate": ("changekit.engine.cli:validate", "evaluate a checkpoint on the validation split"),
    "test": ("changekit.engine.cli:test", "evaluate a checkpoint on the test split"),
    "predict": ("changekit.engine.cli:predict", "write change maps (and error overlays where labels exist)"),
    "demo": ("changekit.demo:main", "synthetic data -> trained FC-Siam-diff -> metrics, maps and figures"),
    "score": ("changekit.metrics:score_main", "metrics from saved prediction and label maps"),
    "models": ("changekit.cli:list_models_main", "list the registered model configurations"),
    "info": ("changekit.info:main", "parameters and FLOPs of a model config"),
    "scene": ("changekit.geo.scene:main", "run a model over two large georeferenced scenes"),
    "check-dataset": ("changekit.data.tools:check_main", "check a dataset folder against a preset"),
    "tile": ("changekit.data.tools:tile_main", "cut large image pairs into tiles"),
    "stats": ("changekit.data.tools:stats_main", "per-band mean/std of a dataset"),
    "clip-labels": ("changekit.data.clip_labels:main", "CLIP zero-shot class lists per image (CLIPFormer prompts)"),
}


def list_models_main(argv: list[str]) -> int:
    import argparse

    from changekit.models import list_models

    p = argparse.ArgumentParser(prog="changekit models", description="List registered model configurations.")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'ban_*'")
    args = p.parse_args(argv)
    for name in list_models(args.pattern):
        print(name)
    return 0


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: changekit <command> [options]\n\ncommands:\n" + "\n".join(lines) + "\n\n`changekit <command> -h` for help on one."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"changekit: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module, func = target.split(":")
    from changekit.errors import ChangekitError

    try:
        code = getattr(importlib.import_module(module), func)(rest)
    except ChangekitError as e:
        print(f"changekit {name}: error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"changekit {name}: error: {e}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
