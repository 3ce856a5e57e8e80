"""Function lengths and file sizes of the package, the figures the task-core redesign (#26) reports.

    python benchmarks/code_shape.py [--root changekit] [--top 15] [--over 80]

Prints the number of modules and functions, the longest functions (lines from ``def`` to the last line of the
body, decorators excluded), how many are over ``--over`` lines (per sub-package too), and the largest files.
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path


def functions(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="changekit")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--over", type=int, default=80)
    args = ap.parse_args()
    files = sorted(p for p in Path(args.root).rglob("*.py"))
    rows, sizes = [], []
    for p in files:
        sizes.append((len(p.read_text(encoding="utf-8").splitlines()), str(p)))
        rows += [(n, f"{p}:{line} {name}") for name, line, n in functions(p)]
    rows.sort(reverse=True)
    sizes.sort(reverse=True)
    lengths = [n for n, _ in rows]
    print(f"{len(files)} modules, {sum(s for s, _ in sizes)} lines; {len(rows)} functions, "
          f"median {sorted(lengths)[len(lengths) // 2]} lines, longest {lengths[0]}")
    over = [w for n, w in rows if n > args.over]
    by_pkg = Counter(w.split("/")[1] if w.count("/") > 1 else "(top)" for w in over)
    print(f"functions over {args.over} lines: {len(over)} ({', '.join(f'{k} {v}' for k, v in sorted(by_pkg.items()))})")
    print(f"\nlongest {args.top} functions:")
    for n, w in rows[: args.top]:
        print(f"  {n:4d}  {w}")
    print(f"\nlargest {args.top} files:")
    for n, f in sizes[: args.top]:
        print(f"  {n:5d}  {f}")


if __name__ == "__main__":
    main()
