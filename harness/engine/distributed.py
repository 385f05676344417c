"""Multi-process training with ``torchrun``: the process group, ranks and gathering.

``torchrun --nproc_per_node N -m harness run ...`` (or ``harness run --nproc N``)
starts N copies of the run; each finds its rank in the environment torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), joins one process group (NCCL on GPUs,
gloo on CPUs), trains on its share of every global batch and evaluates its share of
each split; predictions and embeddings are gathered so that every rank holds the
whole split's, and only rank 0 writes the run folder and the store row.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from harness.util.errors import UsageError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def env_ranks() -> Ranks:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 without one)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def current() -> Ranks:
    """The ranks of the initialised process group, else rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Ranks()


def is_main_process() -> bool:
    return current().is_main


def init(ranks: Ranks, device: torch.device) -> None:
    """Join the process group: NCCL for CUDA devices, gloo otherwise."""
    if not ranks.active or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=ranks.rank, world_size=ranks.world)


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if current().active:
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a cache); the others wait, then run it."""
    ranks = current()
    if ranks.active and not ranks.is_main:
        dist.barrier()
    yield
    if ranks.active and ranks.is_main:
        dist.barrier()


def sum_over_ranks(value: Tensor) -> Tensor:
    if current().active:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def mean_over_ranks(value: Tensor) -> Tensor:
    ranks = current()
    if ranks.active:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value = value / ranks.world
    return value


def gather_rows(local: Tensor, index: Tensor, total: int, device: torch.device) -> Tensor:
    """Rows computed on each rank (``local[k]`` is row ``index[k]``) as one ``[total, ...]``
    CPU tensor on every rank."""
    ranks = current()
    if not ranks.active:
        out = local.new_zeros((total, *local.shape[1:]))
        out[index.cpu()] = local
        return out
    count = torch.tensor([len(index)], device=device)
    counts = [torch.zeros_like(count) for _ in range(ranks.world)]
    dist.all_gather(counts, count)
    most = int(max(c.item() for c in counts))
    pad = most - len(index)
    rows = torch.cat([local, local.new_zeros((pad, *local.shape[1:]))]).to(device)
    idx = torch.cat([index.cpu(), torch.full((pad,), -1, dtype=torch.long)]).to(device)
    all_rows = [torch.zeros_like(rows) for _ in range(ranks.world)]
    all_idx = [torch.zeros_like(idx) for _ in range(ranks.world)]
    dist.all_gather(all_rows, rows)
    dist.all_gather(all_idx, idx)
    rows_cat, idx_cat = torch.cat(all_rows).cpu(), torch.cat(all_idx).cpu()
    keep = idx_cat >= 0
    out = local.new_zeros((total, *local.shape[1:])).cpu()
    out[idx_cat[keep]] = rows_cat[keep]
    return out


def check_nproc(nproc: int, device_setting: str) -> None:
    """Refuse ``--nproc`` beyond the GPUs present (CPU processes need ``--device cpu``)."""
    if nproc < 1:
        raise UsageError(f"bad value for --nproc: {nproc} (must be at least 1)")
    if device_setting == "cpu":
        return
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if nproc > gpus:
        raise UsageError(
            f"--nproc {nproc} needs {nproc} GPUs but {gpus} are present "
            "(use --device cpu for CPU processes with gloo)"
        )
