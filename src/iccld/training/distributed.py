"""What every process of a run must agree on: the DDP-wrapped loss calls, the fp16 overflow decision,
the non-finite guard and when to stop.

Multi-process training (``accelerate launch``): every process holds the full model and draws its own
share of each batch (see :mod:`iccld.training.sampler`). Gradients are averaged by PyTorch DDP, bucket
by bucket during the backward pass. DDP arms its reducer in ``forward``, while the methods call
``encode``, ``denoise``, ``decode`` ... of the model; so each loss function is run as the ``forward`` of
a thin module (:class:`_Objective`) that holds the parameters it trains (``model`` for the method's
losses, the discriminator for the critic's). Every process therefore steps with the same averaged
gradients, takes the same fp16 overflow decision (:meth:`Processes.agree_on_overflow`) and stops at
the same iteration (:meth:`StopSignals.agreed`); the EMA model and the discriminator stay identical
on every process. With one process none of this runs: each call is the plain call.
"""

from __future__ import annotations

import signal
import sys

import torch
import torch.distributed as dist
from torch import nn

from ..methods import StepOutput


class _Objective(nn.Module):
    """A loss function as the ``forward`` of a module that holds the parameters it trains.

    DDP arms its gradient hooks in ``forward`` and finds the parameters a step did not use from the
    outputs of that one call; wrapping the whole loss function (which may call any method of
    ``trainable``, any number of times) keeps both right. The loss function (a bound method of the
    :class:`Method`) is an argument of each call, so that nothing else (the EMA model, a frozen
    critic) becomes part of the DDP module.
    """

    def __init__(self, trainable: nn.Module):
        super().__init__()
        self.trainable = trainable

    def forward(self, loss_fn, *args) -> tuple[dict, dict, dict]:
        out = StepOutput.of(loss_fn(*args))
        return out.losses, out.critic_inputs, out.logged  # plain dicts, which DDP searches for tensors


def sync_batchnorm(trainable: nn.Module, device: torch.device) -> int:
    """On a GPU, every BatchNorm layer below ``trainable`` becomes a SyncBatchNorm (the same weights,
    running statistics and state-dict keys; the parameters stay the same objects, so the optimiser
    keeps them). Returns how many were converted; 0 on CPU, where torch cannot synchronise them."""
    if device.type != "cuda":
        return 0
    plain = [m for m in trainable.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)]
    nn.SyncBatchNorm.convert_sync_batchnorm(trainable)  # replaces them in place below the top module
    return len(plain)


class SyncedLosses:
    """``losses(loss_fn, *args)``: ``loss_fn(*args)`` as a :class:`StepOutput`; on several processes
    through DDP, which averages the gradients of ``trainable``'s parameters during backward.

    ``find_unused``: a step of ``model`` may leave trainable parameters without a gradient (stage 1
    never calls eps_theta), and which ones depends on the method and its options; DDP then finds
    them from the outputs and leaves their gradients None on every process, as one process would,
    instead of waiting for them. Frozen parameters (stage 2's E, requires_grad False) are not part
    of DDP at all. ``gradient_as_bucket_view``: the gradients live in DDP's all-reduce buckets, no
    second copy (unused parameters still keep None, checked with ``zero_grad(set_to_none=True)``).
    DDP broadcasts buffers from process 0 before each forward, so BatchNorm running statistics stay
    equal. BatchNorm layers (DAFormer's decoder, the BatchNorm encoders) normalise by the whole global
    batch on GPUs: :func:`sync_batchnorm` makes them SyncBatchNorm, so N GPUs of batch b train as one of
    batch N·b. On CPU processes (gloo) torch has no SyncBatchNorm: each process normalises its own
    share, and only networks without BatchNorm in training match one process exactly."""

    def __init__(self, trainable: nn.Module, *, find_unused: bool, world_size: int, device: torch.device):
        self.ddp = None
        if world_size > 1:
            sync_batchnorm(trainable, device)
            device_ids = [device.index] if device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(_Objective(trainable), device_ids=device_ids,
                                                           find_unused_parameters=find_unused,
                                                           gradient_as_bucket_view=True)

    def __call__(self, loss_fn, *args) -> StepOutput:
        if self.ddp is None:
            return StepOutput.of(loss_fn(*args))
        return StepOutput(*self.ddp(loss_fn, *args))


class Processes:
    """The processes of one run (rank, count, device) and the decisions they take together."""

    def __init__(self, rank: int, world_size: int, is_main: bool, device: torch.device):
        self.rank, self.world_size, self.is_main, self.device = rank, world_size, is_main, device

    def split_batch(self, batch: int) -> int:
        """``trainer.batch_size`` is the global batch: each of N processes takes batch / N samples, so
        the config trains as written on any number of GPUs. When N does not divide it, each process
        takes the whole batch and one line says what that means."""
        n = self.world_size
        if n == 1 or batch % n == 0:
            return batch // n
        if self.is_main:
            print(f"trainer.batch_size={batch} does not split over {n} processes: each takes {batch}, so the "
                  f"global batch is {batch * n}, {n}x the config's (its lr and trainer.max_iters were set for "
                  f"{batch}; set trainer.batch_size to a multiple of {n} to keep them)", file=sys.stderr)
        return batch

    def synced(self, trainable: nn.Module, *, find_unused: bool) -> SyncedLosses:
        return SyncedLosses(trainable, find_unused=find_unused, world_size=self.world_size, device=self.device)

    def agree_on_overflow(self, scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
        """fp16: make the scaler's "found inf" flag of ``optimizer`` the same on every process.

        DDP averages the gradients before ``unscale_``, so an overflow on one process already
        reaches all; the flag is still reduced (max over processes, one scalar) so that nothing
        local between backward and ``unscale_`` can make one process step while another skips,
        which leaves the processes with different weights and loss scales. torch's own sharded
        scaler (FSDP) reduces the same per-device flags."""
        if self.world_size == 1 or not scaler.is_enabled():
            return
        for found_inf in scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values():
            dist.all_reduce(found_inf, op=dist.ReduceOp.MAX)

    def nonfinite(self, losses: dict[str, torch.Tensor]) -> list[str]:
        """The names of the non-finite losses; on several processes, every one takes the same decision."""
        bad = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
        if self.world_size > 1:
            flag = torch.tensor([float(len(bad))], device=self.device)
            dist.all_reduce(flag)
            if flag.item() > 0 and not bad:
                bad = ["(another process)"]
        return bad

    def agree(self, local: int | None) -> int | None:
        """The largest of the processes' ``local`` values (None as 0), the same on every process."""
        local = local or 0
        if self.world_size > 1:
            flag = torch.tensor([local], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            local = int(flag.item())
        return local or None


class StopSignals:
    """SIGINT/SIGTERM stop training after the current iteration, the same one on every process.

    Each process's handler only records its own signal (``received``); processes compare once per
    iteration, at the same point (:meth:`agreed`), so a signal that reaches one process (or reaches
    them in different iterations) stops all of them after the same iteration, and all save it
    together. A second signal stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, processes: Processes):
        self.processes, self.received, self._previous = processes, None, {}

    def install(self) -> None:
        self._previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum

    def agreed(self) -> int | None:
        """The signal that stops training now, agreed by every process (None: go on)."""
        return self.processes.agree(self.received)
