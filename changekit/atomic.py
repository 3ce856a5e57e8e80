"""Atomic file writes: every output changekit writes appears complete or not at all.

``with atomic_write(path) as tmp:`` yields a temporary path next to ``path`` (same directory, so the final
``os.replace`` is atomic on every local and network file system) and renames it onto ``path`` only when the
block succeeds; on error the temporary file is removed. The file gets the permissions a plain ``open()``
would give (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``: outputs land on shared disks.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "write_json", "write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name that does not exist yet (GeoPackage and some GDAL drivers refuse to write over an empty
    # file); the suffix stays last because PIL, GDAL and fiona pick the format from it
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2) + "\n")
