"""``changekit models``: the registered model configurations."""

from __future__ import annotations

import argparse


def main(argv: list[str]) -> int:
    from changekit.models import list_models

    p = argparse.ArgumentParser(prog="changekit models", description="List registered model configurations.")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'ban_*'")
    args = p.parse_args(argv)
    for name in list_models(args.pattern):
        print(name)
    return 0
