"""Learning-rate schedule: linear warm-up, then polynomial decay (DAFormer/mmcv semantics)."""

from __future__ import annotations


def lr_factor(step: int, *, max_iters: int, warmup_iters: int, warmup_ratio: float, power: float,
              min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based).

    poly: ``(1 - min) * (1 - step / max_iters) ** power + min``; during warm-up that value is scaled
    by ``1 - (1 - warmup_ratio) * (1 - step / warmup_iters)``, rising linearly from ``warmup_ratio``.
    """
    progress = min(step, max_iters) / max_iters
    factor = (1.0 - min_lr_ratio) * (1.0 - progress) ** power + min_lr_ratio
    if step < warmup_iters:
        factor *= 1.0 - (1.0 - warmup_ratio) * (1.0 - step / warmup_iters)
    return factor
