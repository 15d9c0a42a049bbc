"""The one optimiser every trained model here uses (recommender, ID generator, SASRec)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

# Devices with a fused AdamW kernel in torch 2.13.
FUSED_DEVICES = ("cpu", "cuda")


def adamw(parameters: Iterable[torch.Tensor], learning_rate: float, weight_decay: float, eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW, fused into one kernel where the parameters' device has it.

    torch's default steps parameter by parameter: on the CPU that took 53 ms of an ~800 ms
    recommender step (98 tensors, one thread) against 15 ms fused. Same update rule; the
    fused kernel rounds differently in the last bits.
    """
    parameters = list(parameters)
    fused = bool(parameters) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in parameters)
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, eps=eps, fused=fused)
