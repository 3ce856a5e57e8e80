"""The ``changekit`` command: a thin dispatcher to one module per sub-command.

Each module of this package is one command: ``main(argv: list[str]) -> int``. This package is the only place
that parses command lines; the library modules it calls take Python arguments. ``fit``/``validate``/``test``/
``predict`` hand their argv to LightningCLI (:mod:`changekit.engine.lightning_cli`). Errors that a user can
fix (:class:`changekit.errors.ChangekitError`) are printed as one line without a traceback, exit status 2.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

# name -> (module of changekit.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("fit", "train a model from a YAML config"),
    "validate": ("validate", "evaluate a checkpoint on the validation split"),
    "test": ("test", "evaluate a checkpoint on the test split"),
    "predict": ("predict", "write change maps (and error overlays where labels exist)"),
    "demo": ("demo", "synthetic data -> trained FC-Siam-diff (or MCAT-UNet: --task segmentation) -> metrics, maps, figures"),
    "score": ("score", "metrics from saved prediction and label maps"),
    "models": ("models", "list the registered model configurations"),
    "info": ("info", "parameters and FLOPs of a model config"),
    "scene": ("scene", "run a model over two large georeferenced scenes"),
    "timeline": ("timeline", "run a change model over N dates: when each place changed, how often"),
    "search": ("search", "find Sentinel-2 dates in a STAC API over an area, least cloudy first"),
    "view": ("view", "review a scene's changes on a map in the browser"),
    "export": ("export", "export a model to ONNX (with the metadata inference needs)"),
    "check-dataset": ("check_dataset", "check a dataset folder against a preset"),
    "tile": ("tile", "cut large image pairs into tiles"),
    "stats": ("stats", "per-band mean/std of a dataset"),
    "clip-labels": ("clip_labels", "CLIP zero-shot class lists per image (CLIPFormer prompts)"),
}


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
    module, _ = COMMANDS[name]
    from changekit.errors import ChangekitError

    try:
        code = importlib.import_module(f"changekit.cli.{module}").main(rest)
    except ChangekitError as e:  # one line, whatever the message's author wrote
        print(f"changekit {name}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # the command may say how to carry on (fit: --ckpt_path last)
        how = str(e) or "rerun the same command to resume"
        print(f"\nchangekit {name}: interrupted; {how}", file=sys.stderr)
        return 130
    except OSError as e:  # a full disk, a permission, a vanished file: the system's words and the path
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"changekit {name}: error: {e.strerror or e}{where}; fix that and rerun the same command "
              "(finished work is kept)", file=sys.stderr)
        return 2
    except Exception as e:  # a defect of changekit's: one line that says so, the traceback on request
        if os.environ.get("CHANGEKIT_TRACEBACK"):
            raise
        print(f"changekit {name}: internal error: {_where(e)}; this is a bug in changekit: please report it with the "
              "output of the same command run with CHANGEKIT_TRACEBACK=1", file=sys.stderr)
        return 1
    return int(code or 0)


def _where(e: BaseException) -> str:
    """``Type: message at file:line`` of the innermost frame in changekit (else the innermost)."""
    import traceback

    package = Path(__file__).resolve().parents[1]
    frames = traceback.extract_tb(e.__traceback__)[1:]  # (the first is this dispatcher)
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(package)] or frames
    at = f" at {'/'.join(Path(ours[-1].filename).parts[-2:])}:{ours[-1].lineno}" if ours else ""
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}{at}"


if __name__ == "__main__":
    sys.exit(main())
