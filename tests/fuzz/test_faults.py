"""Faults under load: a scene killed at random points resumes to identical bytes, a disk that fills mid-write
ends in one line and a later run finishes, two runs on one --out are refused, and the viewer answers 200
concurrent tile requests without an error."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fuzzing import PROFILE, error_lines

OUTPUTS = ("change.tif", "probability.tif", "changes.geojson")


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory):
    """A pair of 48 strips of 64 px windows: a run spends most of its time predicting (much to interrupt)."""
    from helpers.toys import write_scene_pair

    d = tmp_path_factory.mktemp("faults-pair")
    write_scene_pair(d / "t1.tif", d / "t2.tif", size=(2304, 256), seed=5, changes_per_mpx=60)
    return d


def _argv(pair: Path, ckpt: Path, out: Path) -> list[str]:
    return ["scene", "--t1", str(pair / "t1.tif"), "--t2", str(pair / "t2.tif"), "--ckpt", str(ckpt), "--out", str(out),
            "--window", "64", "--overlap", "16", "--batch-size", "4", "--quiet"]


def _spawn(argv: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "changekit.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def _fork(argv: list[str]) -> int:
    """``changekit ARGV`` in a forked copy of this process (no interpreter start-up to wait for): its pid."""
    pid = os.fork()
    if pid == 0:  # the child: run, and leave without running the parent's clean-up
        code = 1
        try:
            from fuzzing import cli

            code = cli(argv)[0]
        finally:
            os._exit(code)
    return pid


@pytest.fixture(scope="module")
def reference(big_pair, fuzz_ckpt, tmp_path_factory):
    """An uninterrupted run: its outputs and how long its prediction took (from its resume record appearing)."""
    from fuzzing import cli

    out = tmp_path_factory.mktemp("faults-ref") / "o"
    rc, _, err = cli(_argv(big_pair, fuzz_ckpt, out))
    assert rc == 0, err
    shutil.rmtree(out.parent / "timing", ignore_errors=True)
    t = out.parent / "timing"
    pid = _fork(_argv(big_pair, fuzz_ckpt, t))
    while not (t / ".partial" / "plan.json").exists():
        time.sleep(0.005)
    t0 = time.perf_counter()
    assert os.waitpid(pid, 0)[1] == 0
    return out, time.perf_counter() - t0


def _same_outputs(a: Path, b: Path) -> None:
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


SEEDS = range(10) if PROFILE == "fast" else range(10, 60)


def test_a_scene_killed_at_random_points_resumes_to_identical_bytes(big_pair, fuzz_ckpt, reference, tmp_path):
    """SIGKILL (no clean-up at all) at a random moment after the run has started predicting, 10 seeds; the rerun
    finishes with the same bytes as the uninterrupted run."""
    from fuzzing import cli

    ref, seconds = reference
    resumed = 0
    for seed in SEEDS:
        out = tmp_path / f"o{seed}"
        at = np.random.default_rng(seed).uniform(0.0, 1.0) * seconds
        pid = _fork(_argv(big_pair, fuzz_ckpt, out))
        while not (out / ".partial" / "plan.json").exists():
            time.sleep(0.002)
        time.sleep(at)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        rc, stdout, err = cli(_argv(big_pair, fuzz_ckpt, out))
        assert rc == 0, f"seed {seed} (killed {at:.2f} s into prediction): {err}"
        _same_outputs(out, ref)
        assert not [q for q in out.rglob("*") if ".tmp" in q.name or q.name == ".partial"]
        resumed += "strips resumed)" in stdout and "(0 strips resumed)" not in stdout
    assert resumed >= 3, f"only {resumed} of the kills landed mid-prediction: the scene is too small to test this"


@contextlib.contextmanager
def small_disk(path: Path, size_kb: int, how: str):
    """A folder that holds ``size_kb`` until ``grow()``: a tmpfs of that size (``how="tmpfs"``, needs root), or a
    file-size limit (RLIMIT_FSIZE) on the processes run with ``preexec``: writes then fail with EFBIG where a full
    disk fails them with ENOSPC."""
    path.mkdir()
    if how == "tmpfs" and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                                         capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs is not allowed here (the file-size-limit case covers a full disk)")
    state = {"limit": size_kb * 1024 if how == "fsize" else None}

    def grow() -> None:
        if how == "tmpfs":
            subprocess.run(["mount", "-o", "remount,size=256m", str(path)], check=True)
        state["limit"] = None

    def preexec() -> None:
        import resource

        if state["limit"]:
            resource.setrlimit(resource.RLIMIT_FSIZE, (state["limit"], state["limit"]))

    try:
        yield grow, preexec
    finally:
        if how == "tmpfs":
            subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("how", ["tmpfs", "fsize"])
def test_a_disk_that_fills_mid_write_is_one_line_and_a_later_run_finishes(big_pair, fuzz_ckpt, reference, tmp_path,
                                                                          how):
    ref, _ = reference
    # a tmpfs fills after a few strips (32 KB each) and outputs; a file-size limit stops the first strip file
    with small_disk(tmp_path / "disk", 600 if how == "tmpfs" else 20, how) as (grow, preexec):
        out = tmp_path / "disk" / "o"
        p = _spawn(_argv(big_pair, fuzz_ckpt, out), preexec_fn=preexec)
        _, err = p.communicate(timeout=300)
        assert p.returncode == 2, err
        lines = error_lines(err)
        assert len(lines) == 1 and "Traceback" not in err, err
        assert ("No space left on device" in err or "File too large" in err) and "rerun the same command" in err, err
        assert not [q for q in out.rglob("*") if ".tmp" in q.name], "a temporary file was left on the full disk"
        assert not (out / "change.tif").exists() and not (out / ".changekit.lock").exists()
        grow()
        p = _spawn(_argv(big_pair, fuzz_ckpt, out), preexec_fn=preexec)
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        _same_outputs(out, ref)


def test_two_runs_on_one_out_are_refused(big_pair, fuzz_ckpt, reference, tmp_path):
    """Two processes at once: the second is refused in one line while the first holds --out; the first finishes."""
    ref, _ = reference
    out = tmp_path / "o"
    first = _spawn(_argv(big_pair, fuzz_ckpt, out))
    deadline = time.time() + 60
    while not (out / ".changekit.lock").exists():
        assert time.time() < deadline and first.poll() is None, "the first run never took the lock"
        time.sleep(0.02)
    second = _spawn(_argv(big_pair, fuzz_ckpt, out))
    _, err2 = second.communicate(timeout=300)
    _, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert second.returncode == 2 and len(error_lines(err2)) == 1 and "Traceback" not in err2, err2
    assert "lock" in err2 or "running" in err2, err2
    _same_outputs(out, ref)


def test_the_viewer_answers_200_concurrent_tile_requests(fuzz_scene):
    """uvicorn on 127.0.0.1 with the real app; 200 tile requests over every layer at once (at most 64 in flight)."""
    import logging
    import socket

    import httpx
    import morecantile
    import uvicorn

    from changekit.viewer import create_app

    app = create_app(fuzz_scene)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logged: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = logged.append
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addHandler(handler)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            assert time.time() < deadline and thread.is_alive(), "the viewer did not start"
            time.sleep(0.05)
        bounds = httpx.get(f"http://127.0.0.1:{port}/scene.json").json()["bounds"]
        tms = morecantile.tms.get("WebMercatorQuad")
        inside = [t for z in (12, 14, 16) for t in tms.tiles(*bounds, zooms=[z])]
        rng = np.random.default_rng(0)
        urls = []
        for i in range(200):
            layer = ("t1", "t2", "change", "probability")[i % 4]
            t = inside[int(rng.integers(len(inside)))] if i % 5 else morecantile.Tile(x=0, y=0, z=3)  # 1 in 5 outside
            urls.append(f"http://127.0.0.1:{port}/tiles/{layer}/{t.z}/{t.x}/{t.y}.png")

        async def fetch_all() -> list[int]:
            gate = asyncio.Semaphore(64)
            async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as client:
                async def one(url: str) -> int:
                    async with gate:
                        return (await client.get(url)).status_code
                return await asyncio.gather(*(one(u) for u in urls))

        codes = asyncio.run(fetch_all())
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).removeHandler(handler)
    assert len(codes) == 200 and set(codes) <= {200, 204}, sorted(set(codes))
    assert codes.count(200) >= 100
    assert not logged, [r.getMessage() for r in logged]
