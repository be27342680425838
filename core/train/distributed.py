"""Several training processes under the existing engines (torchrun, accelerate launch, srun).

A run started by one of them has the usual environment (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). The Trainer then trains data-parallel through
accelerate; this module adds what a Graftlab run needs on top of that:

- one writer: only global rank 0 creates the run folder, writes metrics.jsonl, live.json,
  checkpoint markers and the adapter; the others train and stay quiet;
- one tokenization: rank 0 prepares the data first (datasets caches it), the others then read it
  from the cache (:func:`main_first`);
- ranks in step: rank 0 alone reads the run's control requests (the window, ``graftlab pause``),
  and its decisions reach every rank at each step end in one small broadcast (:func:`agree`), so
  all ranks pause, save and stop at the same step;
- a clean exit: every rank leaves through ``destroy_process_group()`` (:func:`finish`).

In one plain process every function here is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

# Rank 0 tokenizes and evaluates alone while the others wait in a collective: allow for long data.
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Ranks:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int = 1
    """Processes on this machine."""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.world_size > 1


def ranks() -> Ranks:
    """This process's place in the job, from the launcher's environment (1 process without one)."""
    def env(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default

    world = env("WORLD_SIZE", 1)
    return Ranks(env("RANK", 0), env("LOCAL_RANK", 0), world, env("LOCAL_WORLD_SIZE", world))


def under_launcher() -> bool:
    """True when torchrun / accelerate / srun started this process as one rank of a job."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main() -> bool:
    return ranks().main


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def init(device: str) -> None:
    """Join the job's process group (gloo on CPU, nccl on CUDA) before anything collective.

    The Trainer would create it when its arguments are built; creating it first lets the session
    use barriers while it prepares data, and accelerate then uses this group.
    """
    r = ranks()
    if not r.many or _dist() is not None:
        return
    import torch
    import torch.distributed as dist

    backend = "gloo"
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.set_device(r.local_rank)
        backend = "nccl"
    dist.init_process_group(backend=backend, timeout=TIMEOUT)


def barrier() -> None:
    dist = _dist()
    if dist is not None:
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. tokenizes into the datasets cache); the others run it
    after, when rank 0 is done."""
    main = is_main()
    if not main:
        barrier()
    yield
    if main:
        barrier()


def agree(values: list[int]) -> list[int]:
    """Rank 0's `values` on every rank: one small broadcast (`values` as is in one process)."""
    dist = _dist()
    if dist is None:
        return values
    import torch

    device = "cpu"
    if dist.get_backend() == "nccl":
        device = f"cuda:{torch.cuda.current_device()}"
    t = torch.tensor(values, dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return [int(v) for v in t.tolist()]


def finish(ok: bool = True) -> None:
    """Leave the job through ``destroy_process_group()`` (every rank). `ok`: wait for the
    others first; a rank that failed leaves at once (the others are stuck in a collective, and
    the launcher ends them when this rank exits)."""
    dist = _dist()
    if dist is None:
        return
    if ok:
        with contextlib.suppress(Exception):
            dist.barrier()
    with contextlib.suppress(Exception):
        dist.destroy_process_group()


def full_params(trainer: Any) -> contextlib.AbstractContextManager[Any]:
    """Within: rank 0's model holds its whole parameters when the Trainer shards it (FSDP);
    every rank must enter. A no-op context otherwise."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(
        trainer.model_wrapped, writeback=False, rank0_only=True, offload_to_cpu=True)
