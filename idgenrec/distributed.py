"""Data-parallel training on several processes: torch.distributed, launched by ``torchrun``.

``runtime.processes: N`` (or ``torchrun --nproc-per-node N -m idgenrec train ...`` by hand) runs
the warm-up and the alternating training on N processes, gloo on a CPU and NCCL on GPUs.

How a step stays the one-process step. Every rank builds the same batches from the same seeds
and trains on its own contiguous share of each batch's rows; its loss is weighted by its share
of the batch's target tokens and the gradients are summed across ranks (one all-reduce of the
flattened gradients), so the summed gradient is the gradient of the whole batch's mean loss, up
to floating-point order. Clipping and the AdamW update then run on identical gradients on every
rank, so the weights stay identical without being broadcast. The gradients are reduced by hand
rather than by ``DistributedDataParallel``'s wrapper because the losses call the model's parts
(the LM head only at labelled positions; the recommender under the generator's soft IDs), and the
wrapper's bucketed reducer expects one forward call through it per step.

Validation during training and the regeneration of IDs after an ID phase are sharded too: each
rank decodes its share of the users (or items) and the results are gathered in order, so every
rank selects the same checkpoint and assigns the same IDs. Rank 0 alone writes files.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
LAUNCHED_BY_IDGENREC = "IDGENREC_LAUNCHED"  # set for the processes :func:`launch` starts


def launched_by_torchrun() -> bool:
    """This process is one of several that ``torchrun`` started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment() -> None:
    """Join the process group ``torchrun`` describes (no-op in a single process or when already joined).

    NCCL with one GPU per rank where CUDA is present, else gloo. Ranks other than 0 log warnings only,
    and their standard output (each command's summary line) is dropped: what is printed is rank 0's,
    once, or the launching command's when :func:`launch` started them. Errors still reach standard
    error from every rank.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    atexit.register(dist.destroy_process_group)
    if dist.get_rank() != 0:
        logging.getLogger("idgenrec").setLevel(logging.WARNING)
    if dist.get_rank() != 0 or os.environ.get(LAUNCHED_BY_IDGENREC):  # the launching command prints the summary
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (rank 0 of 1 without torch.distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """The rank that writes files and logs."""
        return self.rank == 0

    def share(self, count: int) -> slice:
        """This rank's contiguous share of ``count`` rows (shares differ by at most one; some may be empty)."""
        return slice(self.rank * count // self.world, (self.rank + 1) * count // self.world)

    def total(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the ranks (a copy; ``value`` itself is left as it was)."""
        if self.world == 1:
            return value
        summed = value.detach().clone()
        dist.all_reduce(summed)
        return summed

    def gather(self, part: Sequence[T]) -> list[T]:
        """Every rank's ``part``, concatenated in rank order: the whole list when parts are :meth:`share` slices."""
        if self.world == 1:
            return list(part)
        parts: list[list[T] | None] = [None] * self.world
        dist.all_gather_object(parts, list(part))
        return [item for chunk in parts for item in chunk]

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over the ranks in one all-reduce (a missing gradient counts as zero)."""
        if self.world == 1:
            return
        parameters = [p for p in parameters if p.requires_grad]
        for p in parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in parameters])
        dist.all_reduce(flat)
        offset = 0
        for p in parameters:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p.grad))
            offset += p.numel()

    def barrier(self) -> None:
        """Wait for every rank (rank 0 has finished writing what the others read next)."""
        if self.world > 1:
            dist.barrier()


def current() -> Ranks:
    """The ranks of the running process group, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def token_share(labels: torch.Tensor, rows: slice) -> float:
    """The share of ``labels``' target tokens (not -100) in ``rows``: a rank's weight in the batch's mean loss."""
    targeted = labels != -100
    whole = int(targeted.sum())
    return int(targeted[rows].sum()) / whole if whole else 0.0


def torchrun_command(processes: int, arguments: Sequence[str]) -> list[str]:
    """``torchrun`` on this machine with ``processes`` ranks, each running ``idgenrec <arguments>``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", "idgenrec", *arguments]


def launch(processes: int, arguments: Sequence[str]) -> None:
    """Run ``idgenrec <arguments>`` on ``processes`` ranks of this machine and wait for them.

    Each rank gets an equal share of the CPU's threads unless OMP_NUM_THREADS is set. A failed
    rank fails the launch with its exit status (its error is on stderr above).
    """
    env = {**os.environ, LAUNCHED_BY_IDGENREC: "1"}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    result = subprocess.run(torchrun_command(processes, arguments), env=env)
    if result.returncode != 0:
        raise RuntimeError(f"idgenrec {' '.join(arguments[:2])} on {processes} processes failed (exit {result.returncode})")
