"""YAML configs and their ``_base_`` chains: cycles, missing bases, wrong types, broken YAML, binary files, and
model sections with unknown or mistyped arguments -- through ``load_config``, ``changekit info`` and ``fit``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fuzzing import assert_clean_exit, cli, corpus, examples, run_case
from hypothesis import given
from hypothesis import strategies as st

from changekit.config import load_config
from changekit.errors import ChangekitError

NAMES = ["a.yaml", "b.yaml", "c.yaml"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids,
                                                                                            max_size=3), max_leaves=8)
bases = st.one_of(st.sampled_from(NAMES + ["missing.yaml", "../a.yaml", "", "."]),
                  st.lists(st.sampled_from(NAMES + ["missing.yaml"]), max_size=3), scalars,
                  st.dictionaries(st.text(max_size=4), scalars, max_size=2))
model = st.fixed_dictionaries({"arch": st.one_of(st.sampled_from(["fc_siam_diff", "fc_ef", "fc_siam_conc",
                                                                  "no_such_model"]), scalars),
                               "arch_args": st.one_of(st.dictionaries(
                                   st.sampled_from(["base_channel", "in_channels", "num_classes", "drop", "weights",
                                                    "fusion", "junk"]), scalars, max_size=3), scalars)})
document = st.fixed_dictionaries({}, optional={"_base_": bases, "model": st.one_of(model, values),
                                              "data": values, "trainer": values, "extra": values})
files = st.one_of(
    document.map(lambda d: {"yaml": d}),
    st.text(max_size=80).map(lambda t: {"text": t}),  # broken YAML, a bare scalar, a list ...
    st.binary(max_size=40).map(lambda b: {"bytes": b}),
)
case_strategy = st.fixed_dictionaries({"files": st.lists(files, min_size=1, max_size=3),
                                       "command": st.sampled_from(["load", "info", "fit"])})


def _write(work: Path, case: dict) -> Path:
    for name, f in zip(NAMES, case["files"]):
        if "yaml" in f:
            (work / name).write_text(yaml.safe_dump(f["yaml"], allow_unicode=True))
        elif "text" in f:
            (work / name).write_text(f["text"])
        else:
            (work / name).write_bytes(f["bytes"])
    return work / NAMES[0]


def check_config(case: dict, work: Path) -> None:
    path = _write(work, case)
    if case["command"] == "load":
        try:
            cfg = load_config(path)
        except ChangekitError as e:
            assert "\n" not in str(e) and any(n in str(e) for n in NAMES), str(e)
        else:
            assert isinstance(cfg, dict) and "_base_" not in cfg
        return
    argv = (["info", str(path), "--size", "32", "--json"] if case["command"] == "info" else
            ["fit", "-c", str(path), "--print_config"])
    rc, _, err = cli(argv)
    assert_clean_exit(rc, err, argv)


@given(case=case_strategy)
@examples(100)
def test_random_configs(case):
    run_case("configs", check_config, case)


@pytest.mark.parametrize("case", corpus("configs"))
def test_configs_corpus(case):
    run_case("configs", check_config, case)
