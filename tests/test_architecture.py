"""The package's layering, read from the layer map of docs/architecture.md (so the doc shows what is enforced):
every module belongs to one entry of the map, every import points to an entry of a higher rank, no import circles,
argparse only in ``changekit/cli``, and the inference paths (``changekit.load_model``, ``changekit scene``) free
of Lightning."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "changekit"
DOC = ROOT / "docs" / "architecture.md"


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


def layer_map() -> list[tuple[int, tuple[str, ...]]]:
    """``(rank, module prefixes)`` per entry of the doc's layer map (``cli/`` -> ``changekit.cli``, ``demo.py`` ->
    ``changekit.demo``, ``__init__.py`` -> ``changekit``)."""
    entries = []
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if m:
            names = re.findall(r"`([^`]+)`", m.group(2))
            mods = tuple("changekit" if n == "__init__.py" else "changekit." + n.removesuffix("/").removesuffix(".py")
                         for n in names)
            entries.append((int(m.group(1)), mods))
    return entries


def _entry_of(module: str, entries) -> int | None:
    """The index of the entry ``module`` belongs to (the longest matching prefix), None if none."""
    best, length = None, -1
    for i, (_, mods) in enumerate(entries):
        for m in mods:
            if (module == m or module.startswith(m + ".")) and len(m) > length:
                best, length = i, len(m)
    return best


def test_every_module_is_on_the_layer_map():
    entries = layer_map()
    assert len(entries) >= 10, f"no layer map found in {DOC}"
    missing = sorted(m for m in _modules() if _entry_of(m, entries) is None)
    assert missing == [], f"add these modules to the layer map of {DOC.name}"
    listed = [m for _, mods in entries for m in mods]
    assert sorted(m for m in listed if m not in _modules()) == [], "the layer map names modules that do not exist"


def test_imports_point_down_the_layer_map():
    """An entry imports only entries of a higher rank number (equal ranks never import each other)."""
    entries = layer_map()
    bad = []
    for mod, deps in _graph().items():
        a = _entry_of(mod, entries)
        for d in deps:
            b = _entry_of(d, entries)
            if a != b and entries[a][0] >= entries[b][0]:
                bad.append(f"{mod} (rank {entries[a][0]}) -> {d} (rank {entries[b][0]})")
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
