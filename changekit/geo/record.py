"""What a scene run leaves beside its outputs: the lock while it writes, the resume record of an unfinished run
(``.partial/plan.json`` and the strip files) and the run record ``scene.json`` that ``changekit view`` reads."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from changekit.atomic import write_json
from changekit.errors import ConfigError
from changekit.geo.inputs import SceneInputs
from changekit.geo.windows import Grid

__all__ = ["OutputLock", "prepare_out", "model_fingerprint", "resume_plan", "open_partial", "scene_record",
           "display_bands", "PLAN_VERSION"]

PLAN_VERSION = 2


def prepare_out(out: Path) -> None:
    """``--out`` must be a folder we can write (created if missing)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder for the outputs")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot create the folder ({e.strerror}); choose another location") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: not writable by this user; choose another folder or fix its permissions")


class OutputLock:
    """``DIR/.changekit.lock`` (pid, host, start time) while a run writes into ``DIR``: a second run refuses.

    A lock left by a process that no longer exists on this host is taken over; one from another host is
    not (the other machine may still be writing): delete the file once that run is gone. ``held=False`` makes it a
    lock that takes nothing (the other ranks of a distributed run, whose rank 0 holds the real one)."""

    NAME = ".changekit.lock"

    def __init__(self, out: Path, held: bool = True) -> None:
        self.path = out / self.NAME
        self.wanted = held
        self.held = False

    def __enter__(self) -> OutputLock:
        if not self.wanted:
            return self
        import socket

        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder.get("host") == me["host"] and not _alive(holder.get("pid")):
                    self.path.unlink(missing_ok=True)  # its process is gone: a stale lock
                    continue
                raise ConfigError(
                    f"--out {self.path.parent} is in use by another changekit run (pid {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')}, since {holder.get('started', '?')}); wait for it or choose another "
                    f"--out (if that run is gone, delete {self.path})"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise ConfigError(f"could not take the lock {self.path}; delete it if no run uses --out {self.path.parent}")

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _state_bytes(v: Any) -> bytes:
    """The bytes of a state-dict value: a tensor's (an int8 layer's dequantised), or of what a packed one holds."""
    if isinstance(v, torch.Tensor):
        if v.is_quantized:
            v = v.dequantize()
        return v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    if isinstance(v, (tuple, list)):
        return b"".join(_state_bytes(x) for x in v)
    return repr(v).encode()


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the weights (an exported graph: of its file), so a resumed run never mixes two models."""
    if hasattr(model, "fingerprint"):
        return model.fingerprint()
    h = hashlib.sha1()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(_state_bytes(v))
    return h.hexdigest()


def resume_plan(inputs: SceneInputs, grid: Grid, scaling, mean, std, fingerprint: str, **extra: Any) -> dict:
    """``plan.json``: everything a strip file depends on. A run resumes only strips made under an equal plan."""

    def stamp(p: str) -> Any:
        try:
            st = os.stat(p)
            return [os.path.abspath(p), st.st_size, st.st_mtime_ns]
        except OSError:
            return [p]

    return {
        "version": PLAN_VERSION, "inputs": [stamp(p) for p in inputs.paths],
        "aligned": inputs.aligned, "bands": inputs.bands, "height": grid.height, "width": grid.width,
        "window": grid.window, "overlap": grid.overlap, "scaling": [scaling.mode, list(scaling.gain),
        list(scaling.offset), list(scaling.clip) if scaling.clip else None], "mean": list(mean),
        "std": list(std), "model": fingerprint, "n_strips": grid.n_strips, **extra,
    }


def _read_plan(path: Path) -> Any:
    """The resume record of an unfinished run; a damaged one cannot vouch for its strips: start over."""
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{path} (the record of an unfinished run) is damaged; pass --restart to start over") from None


def open_partial(partial: Path, plan: dict, restart: bool, dist) -> None:
    """Make ``partial`` hold this run's plan: a new run writes it, a resumed one must match it (every rank checks)."""
    plan_file = partial / "plan.json"
    if dist.rank == 0:
        if restart and partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        if not plan_file.exists():
            write_json(plan_file, plan)
    dist.barrier()
    same = plan_file.exists() and _read_plan(plan_file) == json.loads(json.dumps(plan))
    if not dist.all_ok(same):
        raise ConfigError(
            f"{partial} holds an unfinished run with other inputs or settings; "
            "run again with the same arguments to resume it, or pass --restart to start over"
        )


def display_bands(inputs: SceneInputs, info: dict) -> dict | None:
    """For a Sentinel-2 model (its band names recorded): true colour (B04, B03, B02, 1-based in the order read)
    stretched over date 1's 2..98th percentiles, what ``changekit view`` shows the dates as; None otherwise (the
    viewer then shows the first three bands over the training range)."""
    names = (info.get("units") or {}).get("band_names")
    if not names or not all(b in names for b in ("B04", "B03", "B02")):
        return None
    from changekit.geo.inputs import _sample

    bands = [inputs.bands[names.index(b)] for b in ("B04", "B03", "B02")]
    sample = _sample(inputs.images[0], bands, 512)
    if sample.shape[1] == 0:
        return None
    return {"bands": bands, "ranges": [[float(v) for v in np.percentile(c, [2, 98])] for c in sample]}


def scene_record(kind, inputs: SceneInputs, scaling, target, mean, std, date_stats, *, window: int, overlap: int,
                 precision: str, precision_reason: str | None, threshold: float, model_name: str, crs: str | None, stac_record: dict,
                 display: dict | None, text_note: str | None, outputs: dict[str, str]) -> dict:
    """``scene.json``: what ``changekit view`` shows and how (the images, units, the model, the outputs)."""
    images = ({"image": os.path.abspath(inputs.paths[0])} if kind.single_date else
              {"t1": os.path.abspath(inputs.paths[0]), "t2": os.path.abspath(inputs.paths[1])})
    return {"format": "changekit-scene/1", "task": kind.task, **images, "bands": inputs.bands,
            "scaling": {"mode": scaling.mode, "gain": list(scaling.gain), "offset": list(scaling.offset),
                        "clip": scaling.clip},
            "train_range": list(target), "mean": list(mean), "std": list(std),
            **({"date_stats": date_stats} if date_stats else {}),
            "window": window, "overlap": overlap, "precision": precision,
            **({"precision_reason": precision_reason} if precision_reason else {}),
            **kind.legend_record(threshold),
            "model": model_name, "crs": crs,
            **({"stac": stac_record} if stac_record else {}),
            **({"display": display} if display else {}),
            **({"text_classes": text_note} if text_note else {}),
            "outputs": {k: os.path.basename(v) for k, v in outputs.items()}}
