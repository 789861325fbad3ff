"""Optimizer and learning-rate schedule from the ``optimizer`` config group."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

Scheduler = torch.optim.lr_scheduler.LRScheduler


def build_optimizer(
    cfg: DictConfig, model: nn.Module
) -> tuple[torch.optim.Optimizer, Scheduler | None]:
    """Optimizer and (optional) per-epoch learning-rate scheduler from ``cfg.optimizer``."""
    o = cfg.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if o.name == "adam":
        opt = torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    elif o.name == "adamw":
        opt = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    else:
        opt = torch.optim.SGD(
            params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
        )
    sched: Scheduler | None
    if o.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=cfg.trainer.epochs, eta_min=o.min_lr
        )
    elif o.scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=o.step_size, gamma=o.gamma)
    else:
        sched = None
    return opt, sched
