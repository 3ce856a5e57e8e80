"""Dataset tools: ``changekit check-dataset``, ``changekit tile``, ``changekit stats``."""

from __future__ import annotations


def check_main(argv: list[str]) -> int:  # filled in below in a later commit
    raise NotImplementedError


def tile_main(argv: list[str]) -> int:
    raise NotImplementedError


def stats_main(argv: list[str]) -> int:
    raise NotImplementedError
