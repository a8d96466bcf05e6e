"""Optimisers and learning-rate schedules named in trial configs.

Paper: Combating spatial redundancy with spectral norm attention in convolutional learners
(Neurocomputing, 2022), §4.1: "trained from scratch by using Adam optimizer with a learning rate
of 0.1 ... the learning rate is decay scheduled by setting a gamma of 1 and a step size of 10 ...
weight decay of 5e-4, momentum of 0.9" — expressible as ``optimizer="adam", lr=0.1,
schedule={"name": "step", "step_size": 10, "gamma": 1.0}`` (a schedule that never decays; Adam's
"momentum" is β₁). The authors' code uses SGD, lr 0.1, momentum 0.9, multistep [60, 120, 160],
gamma 0.2.

Schedules are stepped once per epoch, after the epoch's training.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR, StepLR

from sna_core.tasks.config import OPTIMIZERS, SCHEDULES


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    name: str,
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    beta2: float = 0.999,
) -> Optimizer:
    """``"sgd"`` (momentum, nesterov), ``"adam"`` or ``"adamw"`` (β = (momentum, beta2))."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(momentum, beta2), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(momentum, beta2), weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; optimizers: {', '.join(OPTIMIZERS)}")


def build_scheduler(optimizer: Optimizer, schedule: dict[str, Any], *, epochs: int) -> LRScheduler | None:
    """The epoch-based schedule described by ``schedule`` (a validated ``train.schedule``)."""
    name = schedule.get("name", "none")
    if name == "none":
        return None
    if name == "step":
        return StepLR(optimizer, step_size=schedule["step_size"], gamma=schedule.get("gamma", 0.1))
    if name == "multistep":
        return MultiStepLR(optimizer, milestones=list(schedule["milestones"]), gamma=schedule.get("gamma", 0.1))
    if name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=schedule.get("t_max") or epochs, eta_min=schedule.get("eta_min", 0.0))
    raise ValueError(f"unknown schedule {name!r}; schedules: {', '.join(SCHEDULES)}")
