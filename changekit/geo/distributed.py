"""Rank, world size and barriers for sharded scene inference (torchrun, Lightning or SLURM-style env vars).

When a process group is already initialised (inside Lightning) it is used as it is. Otherwise, when
``WORLD_SIZE > 1`` is set (torchrun sets ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), a gloo
group is started for the barriers (gloo needs no GPU; the model itself runs on any device).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def all_ok(self, ok: bool) -> bool:
        """True on every rank only when ``ok`` is true on every rank (so all ranks stop together)."""
        if self.world_size == 1:
            return ok
        import torch
        import torch.distributed as dist

        device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([0 if ok else 1], dtype=torch.int64, device=device)
        dist.all_reduce(t)
        return int(t.item()) == 0

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False


def dist_context() -> DistContext:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")))
    if world <= 1:
        return DistContext(0, 1, False)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    return DistContext(rank, world, True)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))
