"""The one AdamW every trained model here uses (recommender, ID generator, warm-up, SASRec), and the update step."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from idgenrec import distributed
from idgenrec.memory import TRIM_EVERY_STEPS, release_free_heap

# Devices with torch's fused AdamW kernel.
FUSED_DEVICES = ("cpu", "cuda")


def adamw(parameters: Iterable[torch.nn.Parameter], learning_rate: float, weight_decay: float, eps: float = 1e-8) -> torch.optim.AdamW:
    """torch's AdamW, fused into one kernel per step where the parameters' device has it.

    Unfused, a CPU step runs about ten small ops per weight tensor: on a 2-core CPU the 1+1
    recommender's update (56 tensors, 5.8 M weights) took 14-16 ms that way against 3.3-3.8 ms
    fused, of a ~250 ms training step. The update is the same up to rounding (tests/test_optim.py).
    """
    parameters = list(parameters)
    fused = bool(parameters) and all(p.device.type in FUSED_DEVICES for p in parameters)
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, eps=eps, fused=fused or None)


def apply_gradients(loss: torch.Tensor, parameters, optimizer, schedule, grad_clip: float) -> torch.Tensor:
    """Backward, clip, update, advance the schedule: the step of the warm-up and of every training phase.

    Returns the detached loss. On several processes the gradients (and the returned loss) are
    summed over them before the clip, so every process makes the same update. The loss stays on
    its device (reading it waits for the GPU; see ``training.LOSS_READ_EVERY_STEPS``). Every
    ``TRIM_EVERY_STEPS`` steps it also returns the C heap's free pages to the OS (memory.py).
    """
    ranks = distributed.current()
    parameters = list(parameters)
    optimizer.zero_grad(set_to_none=True)
    if loss.requires_grad:
        loss.backward()
    ranks.sum_gradients(parameters)
    torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
    schedule.step()
    if schedule.last_epoch % TRIM_EVERY_STEPS == 0:  # steps' changing tensor sizes fragment the C heap (memory.py)
        release_free_heap()
    return ranks.total(loss.detach())
