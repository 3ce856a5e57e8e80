"""Model files through ``changekit scene --ckpt``: checkpoints (truncated, bit-flipped, wrong keys and shapes,
odd metadata, pickles that try to run code, safetensors with bad headers) and ONNX files (damaged, metadata of
wrong types, graphs from other tools with other input names, ranks, types and output shapes)."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from fuzzing import assert_clean_exit, cli, corpus, damage, examples, no_partial_files, run_case
from hypothesis import given
from hypothesis import strategies as st

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True), st.text(max_size=8))
meta_value = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=6), scalars,
                                                                                max_size=2))
damages = st.one_of(st.none(), st.fixed_dictionaries({"truncate": st.one_of(st.none(), st.floats(0, 1)),
                                                      "flips": st.integers(0, 30)}))
META_KEYS = ["arch", "arch_args", "num_classes", "mean", "std", "units", "threshold", "in_channels", "bands",
             "standardize", "task"]

ckpt_case = st.one_of(
    st.fixed_dictionaries({"kind": st.just("valid"), "damage": damages, "suffix": st.sampled_from([".ckpt", ".pth"])}),
    st.fixed_dictionaries({"kind": st.just("dict"), "seed": st.integers(0, 999),
                           "keys": st.sampled_from(["same", "renamed", "dropped", "reshaped", "extra", "none"]),
                           "changekit": st.dictionaries(st.sampled_from(META_KEYS), meta_value, max_size=4),
                           "top": st.sampled_from(["state_dict", "model", "bare", "list"])}),
    st.fixed_dictionaries({"kind": st.just("pickle"), "payload": st.sampled_from(["system", "foreign", "text"])}),
    st.fixed_dictionaries({"kind": st.just("bytes"), "data": st.binary(max_size=64),
                           "suffix": st.sampled_from([".ckpt", ".pth", ".safetensors", ".bin"])}),
    st.fixed_dictionaries({"kind": st.just("safetensors"), "damage": damages,
                           "meta": st.dictionaries(st.sampled_from(["changekit", "arch", "format"]),
                                                   st.text(max_size=20), max_size=2)}),
)


class _Touch:
    """A pickle that would create a file when unpickled: readers must never run it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _write_ckpt(case: dict, work: Path, valid: Path) -> Path:
    kind = case["kind"]
    if kind == "valid":
        path = work / f"m{case['suffix']}"
        path.write_bytes(valid.read_bytes())
        if case["damage"]:
            rng = np.random.default_rng(0)
            path.write_bytes(damage(path.read_bytes(), rng, case["damage"]["truncate"], case["damage"]["flips"]))
        return path
    if kind == "dict":
        src = torch.load(valid, weights_only=True)
        sd = {k[len("model."):]: v for k, v in src["state_dict"].items()}
        g = torch.Generator().manual_seed(case["seed"])
        keys = list(sd)
        pick = keys[int(torch.randint(len(keys), (1,), generator=g))]
        if case["keys"] == "renamed":
            sd[pick + "_x"] = sd.pop(pick)
        elif case["keys"] == "dropped":
            sd.pop(pick)
        elif case["keys"] == "reshaped":
            sd[pick] = torch.zeros(sd[pick].numel() + 1)
        elif case["keys"] == "extra":
            sd["junk.weight"] = torch.zeros(3)
        elif case["keys"] == "none":
            sd = {}
        meta = {**src["changekit"], **case["changekit"]}
        obj = {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "changekit": meta} if case["top"] == "state_dict" \
            else {"model": sd, "changekit": meta} if case["top"] == "model" else sd if case["top"] == "bare" else [sd]
        path = work / "m.ckpt"
        torch.save(obj, path)
        return path
    if kind == "pickle":
        path = work / "m.pth"
        payload = {"system": {"state_dict": _Touch(str(work / "pwned"))},
                   "foreign": {"meta": io.BytesIO(b"x"), "state_dict": {}},
                   "text": {"state_dict": "not tensors"}}[case["payload"]]
        path.write_bytes(pickle.dumps(payload, protocol=2))
        return path
    if kind == "bytes":
        path = work / f"m{case['suffix']}"
        path.write_bytes(case["data"])
        return path
    from safetensors.torch import save_file

    path = work / "m.safetensors"
    sd = {k[len("model."):]: v.contiguous() for k, v in torch.load(valid, weights_only=True)["state_dict"].items()}
    save_file(sd, str(path), metadata=case["meta"])
    if case["damage"]:
        path.write_bytes(damage(path.read_bytes(), np.random.default_rng(1), case["damage"]["truncate"],
                                case["damage"]["flips"]))
    return path


def _scene(model_file: Path, pair: Path, work: Path, extra: list[str] = ()) -> tuple[int, str]:
    out = work / "out"
    argv = ["scene", "--t1", str(pair / "t1.tif"), "--t2", str(pair / "t2.tif"), "--ckpt", str(model_file),
            "--out", str(out), "--window", "32", "--overlap", "8", "--quiet", *extra]
    rc, _, err = cli(argv)
    assert_clean_exit(rc, err, argv)
    if out.exists():
        no_partial_files(out)
        assert (rc == 0) == (out / "scene.json").exists(), err
    return rc, err


def check_checkpoint(case: dict, work: Path, valid: Path, pair: Path) -> None:
    path = _write_ckpt(case, work, valid)
    rc, err = _scene(path, pair, work)
    assert not (work / "pwned").exists(), "a pickle in a checkpoint ran code"
    if case["kind"] in ("pickle", "bytes"):
        assert rc == 2, err


@given(case=ckpt_case)
@examples(50)
def test_random_checkpoints(case, fuzz_ckpt, fuzz_pair):
    run_case("checkpoints", lambda c, w: check_checkpoint(c, w, fuzz_ckpt, fuzz_pair), case)


@pytest.mark.parametrize("case", corpus("checkpoints"))
def test_checkpoints_corpus(case, fuzz_ckpt, fuzz_pair):
    run_case("checkpoints", lambda c, w: check_checkpoint(c, w, fuzz_ckpt, fuzz_pair), case)


# ------------------------------------------------------------------------------------------------ ONNX files
onnx_case = st.one_of(
    st.fixed_dictionaries({"kind": st.just("exported"), "damage": damages,
                           "meta": st.dictionaries(st.sampled_from(["mean", "std", "in_channels", "num_classes",
                                                                    "fixed_size", "fixed_batch", "task", "threshold",
                                                                    "units", "standardize", "bands"]),
                                                   st.one_of(st.just("<drop>"), meta_value), max_size=3)}),
    st.fixed_dictionaries({"kind": st.just("foreign"),
                           "inputs": st.lists(st.sampled_from(["t1", "t2", "image", "x"]), min_size=1, max_size=3),
                           "rank": st.integers(2, 5), "dtype": st.sampled_from(["float", "int64", "float16"]),
                           "out_channels": st.integers(1, 3), "out_scale": st.sampled_from([1, 2]),
                           "stats": st.booleans()}),
)


def _foreign_graph(case: dict, path: Path) -> list[str]:
    """A graph another tool might have written: out = conv-free arithmetic of the inputs, shaped by the case."""
    import onnx
    from onnx import TensorProto, helper

    elem = {"float": TensorProto.FLOAT, "int64": TensorProto.INT64, "float16": TensorProto.FLOAT16}[case["dtype"]]
    dims = ["N", 3, "H", "W", "D"][: case["rank"]] if case["rank"] >= 2 else ["N"]
    inputs = [helper.make_tensor_value_info(n, elem, dims) for n in dict.fromkeys(case["inputs"])]
    names = [i.name for i in inputs]
    nodes = [helper.make_node("Sum", names, ["s"]) if len(names) > 1 else helper.make_node("Identity", names, ["s"])]
    # slice (or repeat) the channels to out_channels, upsample by out_scale in the last axes
    nodes.append(helper.make_node("Concat", ["s"] * case["out_channels"], ["c"], axis=1))
    last = "c"
    if case["out_scale"] != 1 and case["rank"] == 4:
        scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, case["out_scale"], case["out_scale"]])
        nodes.append(helper.make_node("Resize", ["c", "", "scales"], ["r"], mode="nearest"))
        init = [scales]
        last = "r"
    else:
        init = []
    nodes.append(helper.make_node("Identity", [last], ["logits"]))
    graph = helper.make_graph(nodes, "foreign", inputs, [helper.make_tensor_value_info("logits", elem, None)],
                              initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return ["--mean", "0", "--std", "255"] if case["stats"] else []


def check_onnx(case: dict, work: Path, exported: Path, pair: Path) -> None:
    import onnx

    path = work / "m.onnx"
    extra: list[str] = []
    if case["kind"] == "exported":
        model = onnx.load(str(exported))
        props = {p.key: p.value for p in model.metadata_props}
        for k, v in case["meta"].items():
            if v == "<drop>":
                props.pop(k, None)
            else:
                props[k] = json.dumps(v)
        del model.metadata_props[:]
        for k, v in props.items():
            model.metadata_props.add(key=k, value=v)
        onnx.save(model, str(path))
        if case["damage"]:
            path.write_bytes(damage(path.read_bytes(), np.random.default_rng(2), case["damage"]["truncate"],
                                    case["damage"]["flips"]))
    else:
        extra = _foreign_graph(case, path)
    _scene(path, pair, work, extra)


@given(case=onnx_case)
@examples(40)
def test_random_onnx_files(case, fuzz_onnx, fuzz_pair):
    run_case("onnx", lambda c, w: check_onnx(c, w, fuzz_onnx, fuzz_pair), case)


@pytest.mark.parametrize("case", corpus("onnx"))
def test_onnx_files_corpus(case, fuzz_onnx, fuzz_pair):
    run_case("onnx", lambda c, w: check_onnx(c, w, fuzz_onnx, fuzz_pair), case)
