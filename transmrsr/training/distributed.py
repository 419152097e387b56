"""Single-process and ``torchrun`` training on one footing.

``torchrun --nproc-per-node N -m transmrsr.cli.main train ...`` sets ``RANK``/``WORLD_SIZE``;
:func:`setup` then joins the process group (NCCL on GPUs, gloo on CPUs). Every process builds the
same model from the same seed, reads a disjoint shard of each global batch
(:class:`ShardedBatchSampler`), and DistributedDataParallel averages the gradients, so N
processes with global batch B take the same steps as one process with batch B. Only rank 0
writes files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from transmrsr.devices import check_precision, resolve_device, uses_bf16
from transmrsr.errors import TransMRSRError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: rank, world size and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "auto"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def use_bf16(self) -> bool:
        """bf16 autocast for the forward passes (weights, optimiser and losses stay fp32).

        ``precision="auto"`` uses it on GPUs and keeps CPUs exact fp32; ``"bf16"`` also uses it
        on a CPU, worth it where the CPU has bf16 matrix units (AMX or AVX512-BF16; on AMX about
        1.4x faster compact training steps measured), far slower elsewhere; ``"fp32"`` never.
        """
        return uses_bf16(self.precision, self.device)


def setup(device: str = "auto", precision: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun; otherwise a single-process context."""
    check_precision(precision)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        dist.init_process_group(backend=backend)
        log.info("rank %d of %d joined the %s process group", rank, world, backend)
    return DistContext(
        rank=rank, world_size=world, local_rank=local_rank, device=chosen, precision=precision
    )


def teardown(ctx: DistContext, *, wait: bool) -> None:
    """Leave the process group.

    After a run that ended normally (``wait=True``) every rank first meets at a barrier, so no
    process closes its connections while rank 0 still writes the last checkpoint and export:
    gloo aborts a process whose peer vanishes mid-operation. After an error there is no
    barrier, since the other ranks may never reach it.
    """
    if ctx.distributed and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def process_group(ctx: DistContext) -> Iterator[None]:
    """Run a training job in ``ctx``'s process group and leave it after, waiting only on success."""
    try:
        yield
    except BaseException:
        teardown(ctx, wait=False)
        raise
    teardown(ctx, wait=True)


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def mean_over_ranks(ctx: DistContext, value: float) -> float:
    """The mean of a float across processes (for logging the global loss)."""
    if not ctx.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def broadcast_flag(ctx: DistContext, flag: bool) -> bool:
    """Rank 0's decision (e.g. early stop), seen by every process."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int64)
    dist.broadcast(t, src=0)
    return bool(t.item())


class ShardedBatchSampler:
    """Batches of one epoch, resumable mid-epoch, sharded over processes.

    Epoch ``e`` shuffles all items with a generator seeded by ``(seed, e)`` and keeps the first
    ``samples_per_epoch``; global batch ``b`` is items ``[b*B, (b+1)*B)`` of that order and
    rank ``r`` takes the ``r``-th of its ``world_size`` equal shards. Incomplete last batches
    are dropped. ``start_batch`` skips batches already trained on (resume).
    """

    def __init__(
        self,
        n_items: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        samples_per_epoch: int | None = None,
    ) -> None:
        if batch_size % world_size:
            raise TransMRSRError(
                f"the global batch size {batch_size} must be divisible by the number of "
                f"processes ({world_size})"
            )
        self.n_items = n_items
        self.batch_size = batch_size
        self.shard = batch_size // world_size
        self.seed = seed
        self.rank = rank
        per_epoch = n_items if samples_per_epoch is None else min(samples_per_epoch, n_items)
        self.batches_per_epoch = per_epoch // batch_size
        if self.batches_per_epoch < 1:
            raise TransMRSRError(f"{n_items} training items cannot fill one batch of {batch_size}")
        self.epoch = 0
        self.start_batch = 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng((self.seed, self.epoch)).permutation(self.n_items)
        for b in range(self.start_batch, self.batches_per_epoch):
            lo = b * self.batch_size + self.rank * self.shard
            yield [int(i) for i in order[lo : lo + self.shard]]
