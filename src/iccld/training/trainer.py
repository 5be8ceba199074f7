"""The one trainer: an iteration loop that runs any :class:`~iccld.methods.base.Method`.

The loop (:meth:`Trainer.fit`) and the step (:meth:`Trainer.train_step`) are written out here, the
method's loss call in plain sight; what they call lives in named collaborators:

- :mod:`~iccld.training.distributed`: the processes of ``accelerate launch``, the loss calls through
  DDP, and what the processes agree on (fp16 overflow, non-finite losses, stop signals);
- :mod:`~iccld.training.streams`: the datasets the method declares and their resumable loaders;
- :mod:`~iccld.training.optimizers`: AdamW groups, the lr schedule, the critic's optimiser;
- :mod:`~iccld.training.checkpointing`: exact resume, the saved config, the finished run's files;
- :mod:`~iccld.training.validation`: periodic and final evaluation, the method's end-of-run check;
- :mod:`~iccld.training.logging`: TensorBoard, the progress bar and the evaluation history.

A method talks back only through what it returns (:class:`~iccld.methods.base.StepOutput`): losses
are optimised, ``logged`` numbers are logged; the trainer knows none of their names.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import Config
from ..errors import TrainingError
from ..io.run_folder import RunFolder
from ..methods import Method, build_method, method_class
from ..utils import seed_everything
from .checkpointing import Checkpointing
from .distributed import Processes, StopSignals
from .logging import TrainingLog
from .optimizers import build_critic_optimizer, build_optimizer, build_scheduler
from .streams import TrainingData, build_datasets
from .validation import Validation


def resolve_precision(requested: str) -> str:
    """``auto`` means bf16 on a GPU with native bf16 (compute capability >= 8.0, Ampere on), fp32
    elsewhere: ``torch.cuda.is_bf16_supported()`` is also true on older GPUs, where bf16 is emulated
    and slower than fp32, and bf16 on a CPU is very slow."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8:
        return "bf16"
    return "no"


class Trainer:
    processes_class = Processes  # who the processes are and what they agree on (a benchmark swaps it)

    def __init__(self, config: Config, run_dir: Path, *, progress: bool = True):
        from accelerate import Accelerator

        self.config, self.run_dir = config, Path(run_dir)
        tc = config.trainer
        self.accelerator = Accelerator(mixed_precision=resolve_precision(tc.mixed_precision),
                                       cpu=not torch.cuda.is_available())
        self.device = self.accelerator.device
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.processes = self.processes_class(self.rank, self.world_size, self.is_main, self.device)
        batch = self.processes.split_batch(tc.batch_size)
        if tc.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        # bad data fails here, before any heavy work
        self.datasets = build_datasets(config, method_class(config.method.name).streams)
        seed_everything(tc.seed)  # identical initial weights on every process
        self.method: Method = build_method(config).to(self.device)
        self.optimizer = build_optimizer(self.method, config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.critic = self.method.critic()  # an extra network with its own optimiser, or None
        self.disc_optimizer, self.disc_scheduler = (None, None) if self.critic is None else \
            build_critic_optimizer(self.critic, tc.max_iters)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.accelerator.mixed_precision == "fp16")
        # the method's loss functions, called through DDP on several processes
        self.synced_model = self.processes.synced(self.method.model, find_unused=True)
        if tc.backward == "per_term":
            if self.world_size > 1:
                raise TrainingError(f"trainer.backward=per_term: runs on one process only (DDP averages the "
                                    f"gradients in one backward per step; {self.world_size} processes here); "
                                    "use trainer.backward=sum")
            self.method.backward_now = self._backward_now
        # the critic's loss uses every critic parameter
        self.synced_critic = None if self.critic is None else self.processes.synced(self.critic.module,
                                                                                    find_unused=False)
        self.iteration, self.skipped_nonfinite = 0, 0
        self.last_logged: dict[str, float] = {}  # the method's logged numbers of the last step
        self.data = TrainingData(self.datasets, config, batch_size=batch, rank=self.rank,
                                 world_size=self.world_size, device=self.device)
        run = RunFolder(run_dir)
        self.log = TrainingLog(run, name=config.method.name, max_iters=tc.max_iters, log_interval=tc.log_interval,
                               is_main=self.is_main, progress=progress)
        self.validation = Validation(self.method, self.datasets["val"], config, device=self.device, rank=self.rank,
                                     world_size=self.world_size, is_main=self.is_main)
        self.checkpoints = Checkpointing(self, run)
        self.signals = StopSignals(self.processes)

    # the step ----------------------------------------------------------------------------------

    def train_step(self, batch: dict) -> dict[str, float]:
        """One iteration: losses, backward, optimiser steps, EMA. Returns the step's numbers: its
        losses, then the method's logged ones."""
        tc = self.config.trainer
        step_seed = tc.seed * 1_000_003 + self.iteration * self.world_size + self.rank
        torch.manual_seed(step_seed)  # dropout
        generator = torch.Generator().manual_seed(step_seed)  # mixing, augmentation, noise, timesteps
        self.method.train()
        per_term = self.method.backward_now is not None
        if per_term:  # the method back-propagates finished terms while it computes the rest
            self.optimizer.zero_grad(set_to_none=True)
        with self.accelerator.autocast():
            out = self.synced_model(self.method.training_losses, batch, self.iteration, generator)
        self.last_logged = dict(out.logged)
        bad = self.processes.nonfinite(out.losses)
        if bad:
            return self._skip_nonfinite(bad)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if per_term:
            rest = [v for v in out.losses.values() if v.requires_grad]  # terms the method did not release
            if rest:
                self._backward_now(sum(rest))
            self._apply(params, self.optimizer)
        else:
            self._step(params, self.optimizer, sum(out.losses.values()))
        numbers = {k: float(v.detach()) for k, v in out.losses.items()}
        if self.synced_critic is not None:
            # the critic's step, on the detached tensors of this step; the generator's adversarial
            # term treated the critic's weights as constants, so its gradients are the critic's own
            with self.accelerator.autocast():
                critic = self.synced_critic(self.method.critic_losses, out.critic_inputs)
            if critic.losses:
                d_params = [p for g in self.disc_optimizer.param_groups for p in g["params"]]
                self._step(d_params, self.disc_optimizer, sum(critic.losses.values()))
                numbers.update({k: float(v.detach()) for k, v in critic.losses.items()})
            self.last_logged.update(critic.logged)
        self.scaler.update()
        self.scheduler.step()
        if self.disc_scheduler is not None:
            self.disc_scheduler.step()
        self.method.after_step(self.iteration)
        return {**numbers, **self.last_logged}

    def _skip_nonfinite(self, bad: list[str]) -> dict[str, float]:
        self.skipped_nonfinite += 1
        if self.skipped_nonfinite > self.config.trainer.skip_nonfinite:
            raise TrainingError(
                f"iteration {self.iteration}: non-finite loss in {', '.join(bad)}; the last good "
                f"checkpoint is {self.checkpoints.run.checkpoint} (lower optim.lr, or set "
                "trainer.skip_nonfinite=N to skip up to N such batches)")
        self.optimizer.zero_grad(set_to_none=True)
        return {"skipped_nonfinite": float(self.skipped_nonfinite)}

    def _step(self, params: list, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # with DDP, the gradients are averaged across processes here
        self._apply(params, optimizer)

    def _backward_now(self, loss: torch.Tensor) -> None:
        """trainer.backward=per_term: one finished term's backward, during the method's step."""
        self.scaler.scale(loss).backward()

    def _apply(self, params: list, optimizer: torch.optim.Optimizer) -> None:
        """The optimiser step on the gradients the backward passes accumulated."""
        self.scaler.unscale_(optimizer)
        self.processes.agree_on_overflow(self.scaler, optimizer)
        if self.config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.config.optim.grad_clip)
        self.scaler.step(optimizer)

    # the loop ----------------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train from ``self.iteration`` to ``trainer.max_iters``; returns the final evaluation.

        Stops early, after saving a checkpoint, on SIGINT/SIGTERM (``self.stopped_by`` is set).
        """
        tc = self.config.trainer
        self.stopped_by: int | None = None
        self.checkpoints.start()
        self.log.open(self.iteration)
        self.data.open(self.iteration)
        self.signals.install()
        try:
            while self.iteration < tc.max_iters:
                try:
                    batch = self.data.next_batch()
                except RuntimeError:  # a DataLoader worker killed by the signal that stops us
                    if self.signals.received is None:
                        raise
                    return self._stop(self.signals.received)
                numbers = self.train_step(batch)
                self.iteration += 1
                self.log.step(self.iteration, numbers, self.last_logged, self.optimizer.param_groups[0]["lr"])
                done = self.iteration == tc.max_iters
                if tc.eval_interval > 0 and (self.iteration % tc.eval_interval == 0) and not done:
                    self.log.evaluation(self.iteration, self.evaluate())
                if self.iteration % tc.checkpoint_interval == 0 or done:
                    self.save()
                stop = self.signals.agreed()
                if stop is not None and not done:
                    return self._stop(stop)
        finally:
            self.data.close()
            self.log.close()
            self.signals.restore()
        final = self.evaluate(max_images=0)
        self.log.evaluation(self.iteration, final, periodic=False)
        self.diagnostics = {"last_step": dict(self.last_logged), **self.validation.end_of_run()}
        if self.is_main:
            self.checkpoints.finish(final, self.diagnostics)
        self.accelerator.wait_for_everyone()
        return final

    def _stop(self, signum: int) -> dict:
        self.save()
        self.stopped_by = signum
        return {}

    # what the collaborators do, by name ----------------------------------------------------------

    def evaluate(self, max_images: int | None = None) -> dict:
        return self.validation.evaluate(max_images)

    def save(self) -> None:
        self.checkpoints.save()

    def state_dict(self) -> dict:
        return self.checkpoints.state().to_state()

    def load_state_dict(self, state: dict) -> None:
        self.checkpoints.restore(state)

    def skipped_bad_total(self) -> int:
        return self.data.skipped_bad_total()
