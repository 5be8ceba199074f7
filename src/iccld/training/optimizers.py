"""The optimisers and lr schedules of a run: AdamW over the method's parameter groups with a poly
schedule, and the critic's Adam (constant lr, or AdvSeg's poly decay)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..config import Config
from ..errors import TrainingError
from ..methods import Critic, Method
from .schedule import lr_factor

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _norm_parameter_ids(model: nn.Module) -> set[int]:
    """ids of the parameters of ``model``'s normalisation layers (BatchNorm, LayerNorm, GroupNorm)."""
    return {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}


def build_optimizer(method: Method, config: Config) -> torch.optim.Optimizer:
    """AdamW; the encoder at the base lr, every head at lr x head_lr_mult; no weight decay on
    1-D parameters (norms, biases), or with ``optim.no_decay=norms`` on normalisation layers only."""
    o = config.optim
    exempt = _norm_parameter_ids(method.model) if o.no_decay == "norms" else None
    groups = []
    for name, params in method.trainable_groups().items():
        lr = (o.lr if name == "encoder" else o.lr * o.head_lr_mult) * method.lr_scale(name)
        if exempt is None:
            decay = [p for p in params if p.ndim > 1]
            no_decay = [p for p in params if p.ndim <= 1]
        else:
            decay = [p for p in params if id(p) not in exempt]
            no_decay = [p for p in params if id(p) in exempt]
        for ps, wd in ((decay, o.weight_decay), (no_decay, 0.0)):
            if ps:
                groups.append({"params": ps, "lr": lr, "weight_decay": wd, "name": name})
    if not groups:
        raise TrainingError(f"method {config.method.name}: nothing to train (every parameter frozen)")
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: Config) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then poly decay to ``optim.min_lr`` at ``trainer.max_iters``."""
    o, tc = config.optim, config.trainer
    factor = functools.partial(lr_factor, max_iters=tc.max_iters, warmup_iters=o.warmup_iters,
                               warmup_ratio=o.warmup_ratio, power=o.poly_power, min_lr_ratio=o.min_lr / o.lr)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_critic_optimizer(critic: Critic, max_iters: int):
    """(Adam over the critic's parameters, its poly scheduler or None for a constant lr)."""
    optimizer = torch.optim.Adam(critic.module.parameters(), lr=critic.lr, betas=tuple(critic.betas))
    if critic.lr_power is None:
        return optimizer, None
    # AdvSeg's poly decay of the critic's lr, no warm-up
    poly = functools.partial(lr_factor, max_iters=max_iters, warmup_iters=0, warmup_ratio=1.0, power=critic.lr_power)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, poly)
