"""Training on several processes: torchrun starts them, PyTorch's DistributedDataParallel (DDP)
averages the gradients. Nothing here is a distributed engine of its own.

    torchrun --nproc_per_node=2 -m ganforge run recipes/infogan_mnist.toml
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --nproc_per_node=8 -m ganforge run RECIPE

What a run on N processes (ranks) does:

- ``train.batch_size`` is the global batch: each rank trains on ``batch_size / N`` images (with
  ``train.accumulate = k``, of each of the update's k micro-batches; the micro-batches before the
  last run under DDP's ``no_sync()``, so the gradients are averaged once per update). Every
  rank draws the whole batch's data order and latents from the run's streams and keeps its own
  rows, so the images and latents a step sees do not depend on N, and a checkpoint saved on N
  ranks resumes on M. The streams plugins draw from (augmentations, InfoGAN's moves) are per rank.
- DDP averages G's and D's gradients over the ranks after each backward pass. Batch norm
  normalises each rank's share of the batch by that share's statistics (DDP's default; the
  running statistics of rank 0 are the ones saved).
- Rank 0 alone writes files (metrics, samples, checkpoints, evaluations) and prints progress;
  the logged losses are means over the ranks.
- SIGINT or SIGTERM (torchrun passes it to every rank): the ranks agree after each step whether
  one was asked to stop, so all stop after the same step; rank 0 writes one checkpoint.
- The backend is gloo on CPUs and NCCL on GPUs, where rank ``r`` of a node uses ``cuda:r``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from .errors import GanforgeError

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """Which process this is among how many (torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def primary(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def share(self, rows: torch.Tensor, parts: int = 1) -> torch.Tensor:
        """This rank's rows of a global batch (rank ``r`` of N takes the ``r``-th of N equal parts).

        A batch of ``parts`` micro-batches (``train.accumulate``) is shared micro-batch by
        micro-batch: this rank's rows of each, in order, so that cutting the result into ``parts``
        equal pieces gives this rank's share of each micro-batch."""
        if not self.distributed:
            return rows
        pieces = rows.chunk(parts)
        size = pieces[0].shape[0] // self.world_size
        shares = [piece[self.rank * size:(self.rank + 1) * size] for piece in pieces]
        return shares[0] if parts == 1 else torch.cat(shares)


ALONE = Ranks()


def ranks_from_environment() -> Ranks:
    """The ranks torchrun set in the environment; one process when it did not."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return ALONE
    return Ranks(int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0")))


class ProcessGroup:
    """The default process group for the run's ranks, and a gloo group for the flags the ranks
    agree on each step (a CPU tensor, whatever the device). A context manager: it leaves the
    group when the run ends however it ends."""

    def __init__(self, ranks: Ranks, device: torch.device):
        self.ranks = ranks
        self.device = device

    def __enter__(self):
        global _control
        if self.ranks.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            _control = dist.new_group(backend="gloo") if self.device.type == "cuda" else None
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        global _control
        if self.ranks.distributed and dist.is_initialized():
            together = exc_type is None or issubclass(exc_type, GanforgeError)
            if together:
                # Every rank ends the same way here (done, or stopped after the same step): wait for
                # all before tearing connections down, or a rank still sending aborts its process.
                dist.barrier(group=_control)
            store = dist.distributed_c10d._get_default_store()
            dist.destroy_process_group()
            _control = None
            if together:
                leave_in_order(store, self.ranks)


#: How long rank 0 waits for the others to have left before it exits anyway.
LEAVE_TIMEOUT_S = 60.0


def leave_in_order(store, ranks: Ranks) -> None:
    """Rank 0, which serves the rendezvous store, exits only once every other rank has torn its
    process group down: a rank whose store vanished mid-teardown aborted its process (SIGABRT,
    "terminate called without an active exception"), seen now and then on two CPU ranks."""
    try:
        if not ranks.primary:
            store.add("ganforge/left", 1)
            return
        deadline = time.monotonic() + LEAVE_TIMEOUT_S
        while store.add("ganforge/left", 0) < ranks.world_size - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    except RuntimeError:  # DistStoreError among them: a rank already gone, nothing left to wait for
        pass


_control = None  # the gloo group for per-step flags when the default group is NCCL


def training_device(device: torch.device, ranks: Ranks) -> torch.device:
    """On GPUs each rank of a node uses its own: ``cuda:LOCAL_RANK``."""
    if ranks.distributed and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    return device


def wrap(module: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """``module`` under DDP when there are several ranks, else itself.

    ``find_unused_parameters``: a layer that a step does not use must not leave DDP waiting for
    its gradient (a head that the pass runs but no term uses is handled by the training step).
    Buffers are not synchronised in forward passes, so a pass on rank 0 alone (a sample grid, an
    evaluation) needs no other rank; they are copied from rank 0 once, at the start."""
    if not ranks.distributed:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False,
                                               find_unused_parameters=True)


class PrimaryRankError(GanforgeError):
    """What went wrong on rank 0 in :func:`from_primary`, raised on every other rank too."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def from_primary(compute: Callable[[], T], ranks: Ranks) -> T:
    """``compute()`` on rank 0 (checking the run's folder, reading its checkpoint), its result sent
    to every rank: the other ranks need no access to rank 0's files, and a mistake found there
    (no checkpoint to resume) stops every rank with the same message and exit code."""
    if not ranks.distributed:
        return compute()
    box: list = [None]
    if ranks.primary:
        try:
            box[0] = ("result", compute())
        except GanforgeError as error:
            box[0] = ("error", (str(error), error.exit_code))
            dist.broadcast_object_list(box, src=0, group=_control)
            raise
    dist.broadcast_object_list(box, src=0, group=_control)
    kind, value = box[0]
    if kind == "error":
        raise PrimaryRankError(*value)
    return value


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """Whether ``flag`` holds on any rank (every rank must call this at the same point)."""
    if not ranks.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX, group=_control)
    return bool(value.item())


def mean_over_ranks(values: dict[str, torch.Tensor], ranks: Ranks) -> dict[str, torch.Tensor]:
    """Each value's mean over the ranks, in one collective (every rank logs the same names at the
    same steps)."""
    if not ranks.distributed or not values:
        return values
    names = sorted(values)
    stacked = torch.stack([values[name].float() for name in names])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    return dict(zip(names, stacked / ranks.world_size))
