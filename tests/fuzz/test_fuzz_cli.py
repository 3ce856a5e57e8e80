"""The options of every command: random options (read from each command's own ``-h``) with values that are
missing files, empty files, folders, garbage, numbers out of range, NaN, empty strings and NUL bytes."""

from __future__ import annotations

import re
import signal
from functools import cache
from pathlib import Path

import pytest
from fuzzing import assert_clean_exit, chdir, cli, corpus, examples, run_case
from hypothesis import given
from hypothesis import strategies as st

from changekit.cli import COMMANDS

# `demo` trains for minutes on any options it accepts, and `view` serves until stopped: neither belongs in a
# loop of cases; their options are checked where they are parsed (tests/cli/test_cli.py, tests/viewer/test_viewer.py)
RUN = sorted(set(COMMANDS) - {"demo", "view"})
VALUES = ["@missing", "@empty", "@folder", "@garbage", "@raster", "@ckpt", "@out", "-1", "0", "1", "3",
          "1e309", "nan", "-inf", "abc", "", "1,2", "0,0,0", "../..", "a\x00b", "é✓", "--", "[1, 2]", "{}", "null"]


@cache
def options(command: str) -> list[str]:
    """The option strings a command's help lists (LightningCLI's nested ones included)."""
    _, out, err = cli([command, "-h"])
    found = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w.+-]*)", out + err))
    return sorted(o for o in found if o not in {"-h", "--help"} and not o.endswith((".", "-")))


case_strategy = st.fixed_dictionaries({
    "command": st.sampled_from(RUN),
    "positionals": st.lists(st.sampled_from(VALUES), max_size=3),
    "options": st.lists(st.tuples(st.integers(0, 10**6), st.lists(st.sampled_from(VALUES), max_size=2)),
                        max_size=4),
})


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("a case ran for over 60 s")


def check_cli(case: dict, work: Path, files: dict[str, str]) -> None:
    names = options(case["command"])
    value = lambda v: files.get(v[1:], v) if v.startswith("@") else v
    argv = [case["command"], *map(value, case["positionals"])]
    for pick, vals in case["options"]:
        argv += [names[pick % len(names)], *map(value, vals)]
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(60)
    try:
        with chdir(work):
            rc, _, err = cli(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert_clean_exit(rc, err, argv)


@pytest.fixture(scope="module")
def files(tmp_path_factory, fuzz_pair, fuzz_ckpt):
    d = tmp_path_factory.mktemp("fuzz-cli-files")
    (d / "empty.txt").write_bytes(b"")
    (d / "garbage.bin").write_bytes(bytes(range(256)) * 4)
    (d / "folder").mkdir()
    return {"missing": str(d / "missing.tif"), "empty": str(d / "empty.txt"), "folder": str(d / "folder"),
            "garbage": str(d / "garbage.bin"), "raster": str(fuzz_pair / "t1.tif"), "ckpt": str(fuzz_ckpt),
            "out": str(d / "out")}


@given(case=case_strategy)
@examples(100)
def test_random_command_lines(case, files):
    run_case("cli", lambda c, w: check_cli(c, w, files), case)


@pytest.mark.parametrize("case", corpus("cli"))
def test_command_lines_corpus(case, files):
    run_case("cli", lambda c, w: check_cli(c, w, files), case)
