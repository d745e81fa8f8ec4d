"""Optimisation pieces outside the loop: the decoder's EMA and the learning-rate schedules."""

from __future__ import annotations

import math
from typing import Optional

import torch

from .config import TrainConfig


class EMA:
    """Exponential moving average of the decoder's floating-point state (parameters and BatchNorm statistics)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, skip: Optional[torch.Tensor] = None) -> None:
        """shadow += (1 - decay) (value - shadow) for floating-point state, a copy of the rest, in a few multi-tensor
        kernels; ``skip`` (a device flag): a step that did not happen leaves the floating-point shadow as it was,
        decided on the device (the integer state, BatchNorm's batch counts, is the module's own, put back by then)."""
        floats, others = [], []
        for key, value in module.state_dict().items():
            (floats if value.is_floating_point() else others).append((self.shadow[key], value.detach()))
        shadows, values = [s for s, _ in floats], [v for _, v in floats]
        weight = 1.0 - self.decay
        if skip is not None:
            weight = (~skip).to(shadows[0].dtype if shadows else torch.float32) * weight
        if shadows:
            torch._foreach_add_(shadows, torch._foreach_mul(torch._foreach_sub(values, shadows), weight))
        if others:
            torch._foreach_copy_([s for s, _ in others], [v for _, v in others])


def make_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    """``step``: x step_gamma every step_epochs epochs (stepped per optimizer step, in epoch units);
    ``cosine_warmup``: linear warm-up over warmup_ratio of all steps, then cosine to min_lr; per step."""
    total = max(1, steps_per_epoch * config.epochs)
    if config.scheduler == "step":
        every = max(1, config.step_epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=config.step_gamma)
    warmup = max(1, min(int(total * config.warmup_ratio), total - 1))
    floor = min(1.0, config.min_lr / max(config.lr, 1e-12))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(max((step - warmup) / max(1, total - warmup), 0.0), 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

