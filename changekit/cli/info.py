"""``changekit info``: parameters and FLOPs of a model (:mod:`changekit.models.summary`)."""

from __future__ import annotations

import json
from typing import Any

from changekit.cli._parser import Parser
from changekit.models.summary import model_info


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def print_table(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    h, w = info["input_size"]
    table = Table(title=f"{info['model']}  ({info['in_channels']}-band pairs, {h}x{w})", title_justify="left")
    table.add_column("module")
    table.add_column("params", justify="right")
    table.add_column("trainable", justify="right")
    table.add_column("frozen", justify="right")
    table.add_column("FLOPs", justify="right")
    for name, e in info["modules"].items():
        table.add_row(name, f"{e['params']:,}", f"{e['trainable']:,}", f"{e['frozen']:,}", _human(e["flops"]))
    table.add_section()
    table.add_row(
        "total",
        f"{info['params_total']:,}",
        f"{info['params_trainable']:,}",
        f"{info['params_frozen']:,}",
        _human(info["flops"]),
        style="bold",
    )
    console = Console()
    console.print(table)
    console.print(
        f"params {info['params_total'] / 1e6:.2f} M (trainable {info['params_trainable'] / 1e6:.2f} M), "
        f"FLOPs {info['flops'] / 1e9:.2f} G at {h}x{w}\nFLOPs counting: {info['flops_convention']}."
    )
    if info.get("weights_not_loaded"):
        console.print(f"(architecture only: {', '.join(info['weights_not_loaded'])} not read; counts do not depend on them)")


def main(argv: list[str]) -> int:
    p = Parser(
        prog="changekit info",
        description="Parameters (total, trainable, frozen, per top-level module) and FLOPs of a model. "
        "FLOPs count one multiply-add as one FLOP (as open-cd's mmengine counter) for one image pair, both dates.",
    )
    p.add_argument("config", help="a registered model name (see `changekit models`) or a YAML config path")
    p.add_argument(
        "--size", type=int, nargs="+", default=[512], metavar="N", help="input size: N or H W (default 512)"
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    args = p.parse_args(argv)
    if len(args.size) > 2 or min(args.size) <= 0:
        p.error("--size takes one or two positive integers")
    size = (args.size[0], args.size[-1])
    from changekit.errors import ChangekitError, ConfigError

    try:
        info = model_info(args.config, size)
    except ChangekitError:
        raise
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{args.config}: {e.args[0] if e.args else e}") from None
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print_table(info)
    return 0
