"""The package's layering (docs/architecture.md): no import circles, argv parsed only in ``changekit/cli``,
and the inference paths (``changekit.load_model``, ``changekit scene``) free of Lightning."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "changekit"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every changekit module ``path`` imports, at any depth of the file (lazy imports in functions count)."""
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    graph = {m: _imports(p, m, known) for m, p in mods.items()}
    # a package's __init__ re-exports its submodules: an import of the package is an import of what it
    # re-exports, so edges into a package go through its __init__'s own edges (no false circle pkg <-> child)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    graph = _graph()
    assert _cycles(graph) == []


def test_layers_import_only_downwards():
    """data/, metrics/ and models/ never reach up into engine/, geo/ or cli/; geo/ never imports engine/."""
    upper = {
        "changekit.data": ("changekit.models", "changekit.engine", "changekit.geo", "changekit.cli", "changekit.metrics"),
        "changekit.models": ("changekit.engine", "changekit.geo", "changekit.cli", "changekit.metrics"),
        "changekit.metrics": ("changekit.models", "changekit.engine", "changekit.geo", "changekit.cli"),
        "changekit.geo": ("changekit.engine", "changekit.cli"),
        "changekit.deploy": ("changekit.engine", "changekit.geo", "changekit.cli"),
        "changekit.engine": ("changekit.geo", "changekit.deploy", "changekit.cli"),
    }
    bad = []
    for mod, deps in _graph().items():
        for layer, forbidden in upper.items():
            if mod == layer or mod.startswith(layer + "."):
                bad += [f"{mod} -> {d}" for d in deps if d.startswith(forbidden)]
    assert bad == []


def test_argv_is_parsed_only_in_cli():
    offenders = []
    for name, path in _modules().items():
        if name.startswith("changekit.cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m == "argparse" or m.startswith("argparse.") for m in mods):
                    offenders.append(name)
    assert offenders == []


def test_models_and_scenes_need_no_lightning(tmp_path):
    """``changekit.load_model`` and a whole ``changekit scene`` run import no Lightning module."""
    code = f"""
import sys, torch
from changekit import build_model
from changekit.data.synthetic import write_geotiff_pair
from changekit.atomic import atomic_write
import changekit
model = build_model("fc_siam_diff")
ckpt = {{"state_dict": {{f"model.{{k}}": v for k, v in model.state_dict().items()}},
        "changekit": {{"arch": "fc_siam_diff", "arch_args": {{}}, "num_classes": 2, "mean": [0, 0, 0], "std": [255, 255, 255]}}}}
torch.save(ckpt, r"{tmp_path}/m.ckpt")
write_geotiff_pair(r"{tmp_path}/t1.tif", r"{tmp_path}/t2.tif", size=(96, 128), seed=1)
from changekit.cli import main
code = main(["scene", "--t1", r"{tmp_path}/t1.tif", "--t2", r"{tmp_path}/t2.tif", "--ckpt", r"{tmp_path}/m.ckpt",
             "--out", r"{tmp_path}/out", "--window", "64", "--overlap", "16", "--quiet"])
assert code == 0, code
print(sorted(m for m in sys.modules if m == "lightning" or m.startswith(("lightning.", "pytorch_lightning"))))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "change.tif").is_file()
