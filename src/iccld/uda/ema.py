"""Exponential moving average of a model (what DACS/DAFormer call the mean teacher).

Naming: ``model`` receives gradients, ``ema_model`` is its exponential moving average and makes
the pseudo-labels. The ICCLD paper calls them the *teacher* and the *student* respectively, the
reverse of the mean-teacher literature, so the code says neither.

Semantics follow DAFormer's ``_update_ema``: at iteration ``step`` (0-based) the decay is

    alpha_t = min(1 - 1 / (step + 1), alpha)

so step 0 copies ``model`` (alpha_t = 0) and the average warms up before reaching ``alpha``. Then
for every parameter ``ema = alpha_t * ema + (1 - alpha_t) * param``.

Buffers [ours, DAFormer leaves them alone]: floating-point buffers (BatchNorm running mean and
variance) are averaged with the same ``alpha_t``; other buffers (``num_batches_tracked``) are copied.
Averaging keeps the EMA model's normalisation statistics consistent with its averaged weights.

The EMA model predicts in eval mode, normalising with those running statistics. DAFormer's teacher
instead runs in train mode with only dropout off, so its BatchNorm layers normalise the target batch
by the batch's own statistics; :func:`batch_statistics_like` gives that (``method.teacher_norm``).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
from torch import nn


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every parameter's requires_grad False.

    The train/eval mode is copied as it is; callers that want deterministic predictions call
    ``.eval()`` on the copy.
    """
    ema_model = copy.deepcopy(model)
    for p in ema_model.parameters():
        p.requires_grad_(False)
    return ema_model


def ema_decay(alpha: float, step: int) -> float:
    """DAFormer's warm-up decay ``min(1 - 1/(step + 1), alpha)``; ``step`` counts from 0."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return min(1.0 - 1.0 / (step + 1), alpha)


@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, alpha: float, step: int) -> float:
    """Move ``ema_model`` towards ``model`` in place; returns the decay ``alpha_t`` used.

    Parameters and buffers are matched by name; a mismatch (different
    architectures) raises ValueError. ``model`` is read, never written.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    alpha_t = ema_decay(alpha, step)

    ema_params = dict(ema_model.named_parameters())
    params = dict(model.named_parameters())
    if ema_params.keys() != params.keys():
        missing = sorted(set(params) ^ set(ema_params))[:5]
        raise ValueError(f"ema_model and model have different parameters, e.g. {missing}")
    names = list(params)
    targets = [ema_params[n] for n in names]
    sources = [params[n].detach().to(dtype=ema_params[n].dtype, device=ema_params[n].device)
               for n in names]
    if targets:
        torch._foreach_mul_(targets, alpha_t)
        torch._foreach_add_(targets, sources, alpha=1.0 - alpha_t)

    ema_buffers = dict(ema_model.named_buffers())
    buffers = dict(model.named_buffers())
    if ema_buffers.keys() != buffers.keys():
        missing = sorted(set(buffers) ^ set(ema_buffers))[:5]
        raise ValueError(f"ema_model and model have different buffers, e.g. {missing}")
    for name, buf in buffers.items():
        target = ema_buffers[name]
        source = buf.detach().to(device=target.device)
        if target.is_floating_point():
            target.mul_(alpha_t).add_(source.to(target.dtype), alpha=1.0 - alpha_t)
        else:
            target.copy_(source)
    return alpha_t


@contextlib.contextmanager
def batch_statistics_like(ema_model: nn.Module, model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, each BatchNorm layer of ``ema_model`` whose twin in ``model`` is in train
    mode normalises by the statistics of the batch it sees, as DAFormer's teacher (a train-mode copy
    with dropout off) does; layers ``model`` keeps in eval mode (``norm_eval``, frozen parts) keep
    their running statistics. Nothing is written: the running statistics are the same afterwards
    (momentum 0 while inside) and every layer's mode and momentum is restored."""
    twins = dict(model.named_modules())
    changed = []
    for name, layer in ema_model.named_modules():
        twin = twins.get(name)
        if isinstance(layer, nn.modules.batchnorm._BatchNorm) and twin is not None and twin.training:
            changed.append((layer, layer.training, layer.momentum))
            layer.train()
            layer.momentum = 0.0
    try:
        yield ema_model
    finally:
        for layer, training, momentum in changed:
            layer.train(training)
            layer.momentum = momentum

