"""The policy's optimizer: AdamW over the trainable weights with a linear warm-up of the learning
rate. (What to do when its state does not fit: dcrl.train.memory.optimizer_fits.)"""

from __future__ import annotations

from typing import Any

import torch


def build_optimizer(model: torch.nn.Module, train: Any) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over `model`'s trainable weights (lr, weight_decay, betas of the run's `train`
    section) and a scheduler that raises the rate linearly over `train.warmup_steps` optimizer
    steps, then holds it."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=train.lr, weight_decay=train.weight_decay, betas=tuple(train.betas)
    )
    warmup = train.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0
    )
    return optimizer, scheduler
