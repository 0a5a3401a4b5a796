"""Data-parallel runs on torch.distributed: shard the stimuli or the jobs, merge the statistics exactly.

Launch any neuroloc command under `torchrun --nproc_per_node N -m neuroloc ...` (or `accelerate
launch -m neuroloc ...`): the launcher sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.
Each rank records a strided shard of the stimuli (strided, so every rank gets a similar length mix)
into its own statistics object; `merge_across_ranks` gathers every rank's `state_dict()` on every rank and
merges them in rank order with the statistics' exact `merge` — on every rank, so every rank holds the
same fitted localizer for the next stage. Statistics that are not sums (per-stimulus rows) travel the same
way, so nothing needs to be summable. Independent jobs (lesion conditions) are shared out with
`shard_items` and their results gathered with `gather_across_ranks`. Rank 0 alone writes outputs.
Backends: NCCL when every rank has a CUDA device, gloo otherwise (CPU clusters, CI).

Use (what `Localizer.fit` / the pipelines call):

    ctx = DistContext.from_env()            # world_size 1 without a launcher: everything is a no-op
    lm = load_model(..., device=ctx.device(requested_device))
    store = collect(recorder, shard_stimuli(stimuli, ctx))
    store = merge_across_ranks(store, ctx)  # the same merged store on every rank
    localizer.fit_stats(store)
    if ctx.is_main: write outputs
    ctx.barrier(); ctx.close()
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

from ..errors import NeurolocError
from ..stimuli.base import StimulusSet

S = TypeVar("S")


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def launched(cls) -> "DistContext":
        """This process's place as the launcher's environment gives it, without joining the process
        group (no backend yet): for deciding what to do before any collective runs."""
        rank = int(os.environ.get("RANK", "0"))
        return cls(rank=rank, world_size=int(os.environ.get("WORLD_SIZE", "1")),
                   local_rank=int(os.environ.get("LOCAL_RANK", str(rank))))

    @classmethod
    def from_env(cls, backend: str | None = None, timeout_s: float | None = None) -> "DistContext":
        """Read RANK / WORLD_SIZE / LOCAL_RANK (set by torchrun and accelerate) and join the process
        group when there are several processes; a single process needs no launcher.

        Ranks meet only between stages, and one may wait there for another's longest lesion condition
        or for rank 0's alignment, so the collectives' timeout is long: `timeout_s`, else
        NEUROLOC_DIST_TIMEOUT_S, else 6 hours."""
        if timeout_s is None:
            timeout_s = float(os.environ.get("NEUROLOC_DIST_TIMEOUT_S", 6 * 3600))
        launched = cls.launched()
        rank, world, local = launched.rank, launched.world_size, launched.local_rank
        if world <= 1:
            return cls()
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() > local else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            for name in ("MASTER_ADDR", "MASTER_PORT"):
                if name not in os.environ:
                    raise NeurolocError(f"WORLD_SIZE={world} but {name} is not set: launch with torchrun or "
                                        "accelerate launch, which set it")
            dist.init_process_group(backend, rank=rank, world_size=world,
                                    timeout=datetime.timedelta(seconds=timeout_s))
        return cls(rank=rank, world_size=world, local_rank=local, backend=backend)

    def device(self, requested: str | None = None) -> str | None:
        """The device this rank should load its model on: its own GPU under NCCL when the run asked
        for CUDA (or for nothing), else what was requested."""
        if self.backend == "nccl" and (requested is None or requested.startswith("cuda")):
            return f"cuda:{self.local_rank}"
        return requested

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def record(self) -> dict[str, Any]:
        """For manifests."""
        return {"world_size": self.world_size, "backend": self.backend}


def shard_indices(n: int, ctx: DistContext) -> list[int]:
    """This rank's items of `n`: every world_size-th, starting at its rank."""
    return list(range(ctx.rank, n, ctx.world_size))


def shard_stimuli(stimuli: StimulusSet, ctx: DistContext) -> StimulusSet:
    """This rank's strided shard of `stimuli` (the whole set in a single process)."""
    if not ctx.enabled:
        return stimuli
    if len(stimuli) < ctx.world_size:
        raise NeurolocError(f"{len(stimuli)} stimuli cannot be shared by {ctx.world_size} processes; "
                            "use fewer processes")
    return stimuli.subset(shard_indices(len(stimuli), ctx), name=f"{stimuli.name}[rank {ctx.rank}]")


def shard_items(items: Sequence[S], ctx: DistContext) -> list[S]:
    """This rank's share of independent jobs (e.g. lesion conditions)."""
    return [items[i] for i in shard_indices(len(items), ctx)]


def _empty_like(stats: Any) -> Any:
    try:
        return type(stats)()
    except TypeError:
        raise NeurolocError(f"{type(stats).__name__} needs constructor arguments; merge_across_ranks needs "
                            "statistics that can be created empty and filled by load_state_dict") from None


def _all_gather(obj: Any, ctx: DistContext) -> list[Any]:
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def merge_across_ranks(stats: S, ctx: DistContext) -> S:
    """Every rank's statistics merged (exactly, in rank order), returned on every rank.

    Every rank gets the same merged statistics, so every rank can fit the same localizer and go on to
    the next stage (e.g. shard lesion conditions); only rank 0 writes. In a single process, `stats`."""
    if not ctx.enabled:
        return stats
    gathered = _all_gather({k: v.detach().cpu() for k, v in stats.state_dict().items()}, ctx)
    total = _empty_like(stats)
    for part_state in gathered:
        part = _empty_like(stats)
        part.load_state_dict(part_state)
        total.merge(part)
    return total


def gather_across_ranks(items: list[S], ctx: DistContext) -> list[S]:
    """Every rank's list (e.g. the results of its lesion conditions), concatenated in rank order, on
    every rank; in a single process, `items`."""
    if not ctx.enabled:
        return items
    return [x for part in _all_gather(items, ctx) for x in part]
