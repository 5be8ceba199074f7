"""Whole-image and sliding-window inference around any ``predict_fn(x) -> logits``.

``predict_fn`` maps a normalised (B, 3, h, w) batch to (B, C, h', w') logits; when (h', w') is not
(h, w) the logits are resized bilinearly (align_corners=False), as mmsegmentation does.

Sliding windows follow mmsegmentation's ``slide_inference``: windows start every ``stride``
pixels, the last row/column of windows is shifted back to end at the image border, and overlapping
logits are averaged with a count map. Where the image is smaller than the window [ours], the crop
is zero-padded on the bottom/right to the full window (0 is the mean colour of a normalised image),
so ``predict_fn`` always sees the window size, and the logits of the padding are dropped.

:func:`model_predict` is how the commands (``evaluate``, ``predict``, the demo report) call
``model.predict``: on a CPU it runs a small input on one thread (:func:`cpu_threads_for`). That choice
is the command's, not the network's: ``ICCLD.predict`` never changes torch's thread count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

PredictFn = Callable[[torch.Tensor], torch.Tensor]

# B * H * W at or below which a CPU forward runs on one thread: every convolution and norm opens an
# OpenMP parallel region, and on inputs this small waking the other threads (idle ones sleep under the
# CLI's OMP_WAIT_POLICY=PASSIVE) costs more than they save. Measured by benchmarks/speed.py ("Time
# against image size", CPU preset, 2 cores): 256x128 and 512x256 are faster on one thread, 1024x512
# on two.
SMALL_INPUT_PIXELS = 512 * 256


@contextlib.contextmanager
def cpu_threads_for(x: torch.Tensor) -> Iterator[None]:
    """Run the block on one thread when ``x`` (B, 3, H, W) is a CPU tensor of at most
    :data:`SMALL_INPUT_PIXELS` pixels in all; torch's thread count is restored afterwards. GPU
    tensors, larger inputs and a process already on one thread are left alone."""
    threads = torch.get_num_threads()
    small = x.device.type == "cpu" and x.shape[0] * x.shape[-2] * x.shape[-1] <= SMALL_INPUT_PIXELS
    if not small or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def model_predict(model, x: torch.Tensor, **kwargs):
    """``model.predict(x, **kwargs)`` under :func:`cpu_threads_for` (what the commands run)."""
    with cpu_threads_for(x):
        return model.predict(x, **kwargs)


def model_device(model) -> torch.device:
    """Where a model's inputs go: a network's parameters' device, or the ``device`` a predictor
    without parameters names (an ONNX predictor: the CPU)."""
    if isinstance(model, torch.nn.Module):
        return next(model.parameters()).device
    return torch.device(model.device)


def _resize_to(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def whole_inference(predict_fn: PredictFn, image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, C, H, W) logits from one call of ``predict_fn``."""
    if image.ndim != 4:
        raise ValueError(f"image must be (B, 3, H, W), got shape {tuple(image.shape)}")
    return _resize_to(predict_fn(image), tuple(image.shape[-2:]))


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis (mmsegmentation's grid, last one flush)."""
    count = max(size - window + stride - 1, 0) // stride + 1
    starts = []
    for i in range(count):
        end = min(i * stride + window, size)
        starts.append(max(end - window, 0))
    return starts


@torch.no_grad()
def slide_inference(predict_fn: PredictFn, image: torch.Tensor, window: tuple[int, int],
                    stride: tuple[int, int], num_classes: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, num_classes, H, W) logits averaged over overlapping windows.

    Args:
        window: (h, w) of each crop given to ``predict_fn``.
        stride: (h, w) step between crops; must not exceed the window, so every pixel is covered.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, 3, H, W), got shape {tuple(image.shape)}")
    (wh, ww), (sh, sw) = window, stride
    if min(wh, ww, sh, sw) < 1:
        raise ValueError(f"window {window} and stride {stride} must be positive")
    if sh > wh or sw > ww:
        raise ValueError(f"stride {stride} larger than window {window} would leave gaps")
    batch, _, height, width = image.shape
    logits = image.new_zeros((batch, num_classes, height, width), dtype=torch.float32)
    count = image.new_zeros((1, 1, height, width), dtype=torch.float32)
    for y1 in window_starts(height, wh, sh):
        for x1 in window_starts(width, ww, sw):
            y2, x2 = min(y1 + wh, height), min(x1 + ww, width)
            crop = image[:, :, y1:y2, x1:x2]  # (B, 3, <=wh, <=ww)
            ch, cw = crop.shape[-2:]
            if (ch, cw) != (wh, ww):
                crop = F.pad(crop, (0, ww - cw, 0, wh - ch))  # zero = mean colour
            out = predict_fn(crop)  # (B, C, h', w')
            if out.ndim != 4 or out.shape[1] != num_classes:
                raise ValueError(f"predict_fn returned shape {tuple(out.shape)}, expected "
                                 f"(B, {num_classes}, h, w)")
            out = _resize_to(out.float(), (wh, ww))[:, :, :ch, :cw]  # (B, C, ch, cw)
            logits[:, :, y1:y2, x1:x2] += out
            count[:, :, y1:y2, x1:x2] += 1
    return logits / count
