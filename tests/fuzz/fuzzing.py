"""The fuzz suite's harness: profiles, the corpus of saved cases, and the property every boundary must keep.

The property (issue #30): a command given any input ends either in success with outputs that keep their
invariants, or in exit status 2 with one line on stderr -- never a traceback, a hang, a half-written output,
or exit 0 with an output that cannot be right.

Profiles: ``fast`` (the default, run by ``make test``: a fixed seed and a few cases per boundary, about a
minute in all) and ``long`` (``make fuzz``: random seeds, many cases). In the long profile a case that breaks
the property is saved as JSON under ``tests/fuzz/corpus/<boundary>/``; every saved case is replayed by every
profile from then on (the ``*_corpus`` tests), so a defect found once stays fixed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings

CORPUS = Path(__file__).parent / "corpus"
PROFILE = os.environ.get("CHANGEKIT_FUZZ", "fast")

settings.register_profile("fast", derandomize=True, deadline=None, database=None, print_blob=True,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("long", deadline=None, database=None, print_blob=True,
                          suppress_health_check=list(HealthCheck))
settings.load_profile(PROFILE)


def examples(fast: int, long: int = 0) -> settings:
    """Cases per boundary: ``fast`` in make test, ``long`` (default 20x) under make fuzz."""
    return settings(max_examples=fast if PROFILE == "fast" else (long or 20 * fast))


# ------------------------------------------------------------------------------------------------ the corpus
def _encode(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return {"__bytes__": base64.b64encode(obj).decode()}
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_encode(v) for v in obj]
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__bytes__"}:
            return base64.b64decode(obj["__bytes__"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def corpus(boundary: str) -> list[Any]:
    """The saved cases of one boundary (pytest params, named by file)."""
    import pytest

    files = sorted((CORPUS / boundary).glob("*.json"))
    return [pytest.param(_decode(json.loads(f.read_text())), id=f.stem) for f in files]


def run_case(boundary: str, check: Callable[[Any, Path], None], case: Any) -> None:
    """Run ``check(case, workdir)`` in a fresh folder; under the long profile save a case that fails."""
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{boundary}-") as d:
        try:
            check(case, Path(d))
        except BaseException:
            if PROFILE != "fast" and _final_run():
                text = json.dumps(_encode(case), sort_keys=True, indent=1)
                path = CORPUS / boundary / (hashlib.sha1(text.encode()).hexdigest()[:12] + ".json")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text + "\n")
            raise


def _final_run() -> bool:
    """True on Hypothesis' last replay of the smallest failing case (the one worth keeping), or outside Hypothesis."""
    try:
        from hypothesis.control import current_build_context

        return current_build_context().is_final
    except Exception:  # not under @given (a corpus replay): nothing new to save
        return False


# ------------------------------------------------------------------------------------------- the property
def cli(argv: list[str]) -> tuple[int, str, str]:
    """``changekit ARGV`` in this process: (exit status, stdout, stderr). argparse's exits count as statuses."""
    from changekit.cli import main

    out, err = io.StringIO(), io.StringIO()
    os.environ["CHANGEKIT_TRACEBACK"] = "1"  # a defect shows its traceback here (the property fails on it either way)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        finally:
            del os.environ["CHANGEKIT_TRACEBACK"]
    return rc, out.getvalue(), err.getvalue()


def error_lines(err: str) -> list[str]:
    """What a failed run printed for the user: warnings (one line each) and Lightning's INFO lines set aside."""
    return [line for line in err.splitlines()
            if line.strip() and not line.startswith(("INFO:", "warning:", "Warning:")) and "Warning: " not in line]


def assert_clean_exit(rc: int, err: str, argv: list[str] | None = None) -> None:
    """Exit 0, or exit 2 with exactly one line saying what is wrong; never a traceback."""
    where = f"changekit {' '.join(map(str, argv or []))}\n"
    _tally(rc, err)
    assert "Traceback" not in err, where + err
    assert rc in (0, 2), f"{where}exit {rc}\n{err}"
    if rc == 2:
        lines = error_lines(err)
        assert len(lines) == 1, where + err
        assert lines[0].startswith("changekit"), where + err


def _tally(rc: int, err: str) -> None:
    """Hypothesis' statistics (--hypothesis-show-statistics) count the outcomes: which errors the cases reach."""
    try:
        from hypothesis import event

        lines = error_lines(err)
        words = [Path(w).name if "/" in w else w for w in lines[-1].split()[2:7]] if rc and lines else []
        event(f"exit {rc}" + (f": {' '.join(words)}" if words else ""))
    except Exception:  # outside Hypothesis (a corpus replay)
        pass


def no_partial_files(folder: Path) -> None:
    """Nothing half-written: no temporary file is left behind."""
    left = [p for p in folder.rglob("*") if ".tmp" in p.name]
    assert not left, left


# --------------------------------------------------------------------------------------------- generators
DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64", "int8")


def random_array(rng: np.random.Generator, dtype: str, shape: tuple[int, ...], special: float = 0.0) -> np.ndarray:
    """Values spread over the dtype's range (or 0..1e4 for floats), with a fraction ``special`` of NaN/inf."""
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        a = rng.integers(info.min, int(info.max) + 1, shape, dtype=np.int64).astype(dtype)
    else:
        a = (rng.standard_normal(shape) * 1e3).astype(dtype)
        if special:
            m = rng.random(shape) < special
            a[m] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype=dtype), int(m.sum()))
    return a


def damage(data: bytes, rng: np.random.Generator, truncate: float | None, flips: int) -> bytes:
    """``data`` cut to a fraction of its length and/or with ``flips`` random bytes changed."""
    b = bytearray(data)
    if truncate is not None:
        b = b[: int(len(b) * truncate)]
    for _ in range(flips if b else 0):
        b[int(rng.integers(len(b)))] = int(rng.integers(256))
    return bytes(b)


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)
