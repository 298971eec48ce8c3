"""The paper's learning-rate schedule: linear warm-up, then linear decay to 0."""

from __future__ import annotations

import torch


def warmup_linear_decay(optimizer: torch.optim.Optimizer, total_steps: int,
                        warmup_fraction: float = 0.2) -> torch.optim.lr_scheduler.LambdaLR:
    """LR factor rises linearly over the first `warmup_fraction` of steps, then falls linearly to 0."""
    total = max(1, int(total_steps))
    warmup = max(1, int(round(warmup_fraction * total)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
