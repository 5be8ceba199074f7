"""The one trainer: an iteration loop that runs any :class:`~iccld.methods.base.Method`.

It owns what every method shares: devices and processes (``accelerate``), data streams, optimisers
and schedules, the EMA step, periodic evaluation, TensorBoard logs, the progress bar, atomic
checkpoints with exact resume, signal handling and the non-finite-loss guard.

Multi-process training (``accelerate launch``): every process holds the full model and draws its own
share of each batch (see :mod:`iccld.training.sampler`). Gradients are averaged by PyTorch DDP, bucket
by bucket during the backward pass. DDP arms its reducer in ``forward``, while the methods call
``encode``, ``denoise``, ``decode`` ... of the model; so each loss function is run as the ``forward`` of
a thin module (:class:`_Objective`) that holds the parameters it trains (``model`` for the method's
losses, the discriminator for the critic's). Every process therefore steps with the same averaged
gradients, takes the same fp16 overflow decision (:meth:`Trainer._agree_on_overflow`) and stops at the
same iteration (:meth:`Trainer._should_stop`); the EMA model and the discriminator stay identical on
every process. Evaluation splits the images and sums the confusion matrices; only process 0 writes
files.
"""

from __future__ import annotations

import functools
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ..config import Config, save_config, to_dict
from ..errors import TrainingError
from ..io.checkpoint import TrainingState, rng_state, set_rng_state
from ..io.run_folder import FINAL_FILES, Provenance, RunFolder
from ..methods import LABELLED_TARGET, SOURCE, TARGET, Method, StepOutput, build_method
from ..outputs import record_outputs
from ..utils import seed_everything
from .sampler import KeySampler
from .schedule import lr_factor

SOURCE_STREAM, TARGET_STREAM = 1, 2


def resolve_precision(requested: str) -> str:
    """``auto`` means bf16 on a GPU with native bf16 (compute capability >= 8.0, Ampere on), fp32
    elsewhere: ``torch.cuda.is_bf16_supported()`` is also true on older GPUs, where bf16 is emulated
    and slower than fp32, and bf16 on a CPU is very slow."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8:
        return "bf16"
    return "no"


class _Objective(nn.Module):
    """A loss function as the ``forward`` of a module that holds the parameters it trains.

    DDP arms its gradient hooks in ``forward`` and finds the parameters a step did not use from the
    outputs of that one call; wrapping the whole loss function (which may call any method of
    ``trainable``, any number of times) keeps both right. ``loss_fn`` is a bound method of the
    :class:`Method`, kept as a plain attribute so that nothing else (the EMA model, a frozen
    critic) becomes part of the DDP module.
    """

    def __init__(self, trainable: nn.Module, loss_fn):
        super().__init__()
        self.trainable = trainable
        self.loss_fn = loss_fn

    def forward(self, *args) -> dict[str, torch.Tensor]:
        return self.loss_fn(*args)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers leave SIGINT/SIGTERM to the main process, which saves a
    stop checkpoint. Ctrl-C, ``timeout``, SLURM and ``kill -- -PGID`` signal the whole process group;
    a worker that died of it would take the run down with a traceback and no checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _Stream:
    """Endless batches of a DataLoader (its sampler is infinite); :meth:`close` stops the workers.

    The workers ignore SIGTERM, so DataLoader's last resort (``terminate``, also at interpreter exit)
    cannot stop one: a failed run would hang. ``close`` shuts them down explicitly and kills a hung
    one, whatever still refers to the iterator (a traceback does, after a data error).
    """

    def __init__(self, loader: DataLoader):
        self.loader, self.iterator = loader, None

    def __next__(self):
        if self.iterator is None:
            self.iterator = iter(self.loader)
        try:
            return next(self.iterator)
        except StopIteration:  # only a loader that stops; the sampler does not
            self.iterator = iter(self.loader)
            return next(self.iterator)

    def close(self) -> None:
        iterator, self.iterator = self.iterator, None
        if iterator is None:
            return
        shutdown = getattr(iterator, "_shutdown_workers", None)  # torch's own clean shutdown
        if shutdown is not None:
            shutdown()
        for worker in getattr(iterator, "_workers", []):
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=5)


NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _norm_parameter_ids(model: nn.Module) -> set[int]:
    """ids of the parameters of ``model``'s normalisation layers (BatchNorm, LayerNorm, GroupNorm)."""
    return {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}


class Trainer:
    def __init__(self, config: Config, run_dir: Path, *, progress: bool = True):
        from accelerate import Accelerator

        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.run = RunFolder(run_dir)
        tc = config.trainer
        self.accelerator = Accelerator(mixed_precision=resolve_precision(tc.mixed_precision),
                                       cpu=not torch.cuda.is_available())
        self.device = self.accelerator.device
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        self.batch_per_process = self._split_batch(tc.batch_size)
        if tc.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.datasets = self._build_datasets()  # bad data fails here, before any heavy work
        seed_everything(tc.seed)  # identical initial weights on every process
        self.method: Method = build_method(config).to(self.device)
        self.optimizer = self._build_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda)
        self.critic = self.method.critic()  # an extra network with its own optimiser, or None
        self.disc_optimizer = self.disc_scheduler = None
        if self.critic is not None:
            self.disc_optimizer = torch.optim.Adam(self.critic.module.parameters(), lr=self.critic.lr,
                                                   betas=tuple(self.critic.betas))
            if self.critic.lr_power is not None:  # AdvSeg's poly decay of the critic's lr, no warm-up
                poly = functools.partial(lr_factor, max_iters=tc.max_iters, warmup_iters=0, warmup_ratio=1.0,
                                         power=self.critic.lr_power)
                self.disc_scheduler = torch.optim.lr_scheduler.LambdaLR(self.disc_optimizer, poly)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.accelerator.mixed_precision == "fp16")
        # the methods' loss functions, run through DDP on several processes (see _synced)
        self.losses = self._synced(self.method.model, self._method_losses, find_unused=True)
        if tc.backward == "per_term":
            if self.world_size > 1:
                raise TrainingError(f"trainer.backward=per_term: runs on one process only (DDP averages the "
                                    f"gradients in one backward per step; {self.world_size} processes here); "
                                    "use trainer.backward=sum")
            self.method.backward_now = self._backward_now
        self.disc_losses = None
        if self.critic is not None:  # the critic's loss uses every critic parameter
            self.disc_losses = self._synced(self.critic.module, self.method.critic_losses, find_unused=False)
        self.iteration = 0
        self.skipped_nonfinite = 0
        self.bad_pairs: set[str] = set()  # distinct unreadable training pairs passed over (data.skip_bad)
        self.saved_iteration: int | None = None  # of the last checkpoint on disk
        self._stop_signal: int | None = None
        self.history: list[dict] = []

    # construction ----------------------------------------------------------------------------

    def _split_batch(self, batch: int) -> int:
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

    def _lr_lambda(self, step: int) -> float:
        o, tc = self.config.optim, self.config.trainer
        return lr_factor(step, max_iters=tc.max_iters, warmup_iters=o.warmup_iters,
                         warmup_ratio=o.warmup_ratio, power=o.poly_power, min_lr_ratio=o.min_lr / o.lr)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        """AdamW; the encoder at the base lr, every head at lr x head_lr_mult; no weight decay on
        1-D parameters (norms, biases), or with ``optim.no_decay=norms`` on normalisation layers only."""
        o = self.config.optim
        exempt = _norm_parameter_ids(self.method.model) if o.no_decay == "norms" else None
        groups = []
        for name, params in self.method.trainable_groups().items():
            lr = (o.lr if name == "encoder" else o.lr * o.head_lr_mult) * self.method.lr_scale(name)
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
            raise TrainingError(f"method {self.config.method.name}: nothing to train (every parameter frozen)")
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)

    def _build_datasets(self) -> dict:
        from ..data.build import build_dataset, build_source_dataset, build_val_dataset

        from ..methods import method_class

        d, streams = self.config.data, method_class(self.config.method.name).streams
        crop = dict(train=True, crop_size=tuple(d.crop_size), cat_max_ratio=d.cat_max_ratio, flip=d.flip,
                    skip_bad=d.skip_bad)
        datasets = {}
        if SOURCE in streams:
            datasets["source"] = build_source_dataset(d)
        if TARGET in streams or LABELLED_TARGET in streams:  # one target stream, with or without labels
            datasets["target"] = build_dataset(d.target, labelled=LABELLED_TARGET in streams, **crop)
        datasets["val"] = build_val_dataset(d, skip_bad=d.skip_bad)
        return datasets

    def _loader(self, name: str, stream: int) -> DataLoader:
        tc, d = self.config.trainer, self.config.data
        sampler = KeySampler(len(self.datasets[name]), batch_size=self.batch_per_process, seed=tc.seed, stream=stream,
                             start_iter=self.iteration, rank=self.rank, world_size=self.world_size)
        return DataLoader(self.datasets[name], batch_size=self.batch_per_process, sampler=sampler,
                          num_workers=d.num_workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False, drop_last=True,
                          worker_init_fn=ignore_stop_signals if d.num_workers else None)

    # state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return self.training_state().to_state()

    def training_state(self) -> TrainingState:
        critic = self.disc_optimizer is not None
        return TrainingState(
            config=to_dict(self.config), iteration=self.iteration, model=self.method.model.state_dict(),
            ema_model=self.method.ema_model.state_dict(), optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(), rng=rng_state(),
            method=self.provenance().checkpoint_entry(), bad_pairs=sorted(self.bad_pairs),
            skipped_nonfinite=self.skipped_nonfinite, history=self.history,
            discriminator=self.critic.module.state_dict() if critic else None,
            disc_optimizer=self.disc_optimizer.state_dict() if critic else None,
            disc_scheduler=self.disc_scheduler.state_dict() if self.disc_scheduler is not None else None)

    def provenance(self) -> Provenance:
        return Provenance.of_run(self.method.name, self.method.inference_path, self.iteration, to_dict(self.config))

    def load_state_dict(self, state: dict) -> None:
        saved = TrainingState.from_state(state)
        self.method.model.load_state_dict(saved.model)
        self.method.ema_model.load_state_dict(saved.ema_model)
        self.optimizer.load_state_dict(saved.optimizer)
        self.scheduler.load_state_dict(saved.scheduler)
        self.scaler.load_state_dict(saved.scaler)
        if self.disc_optimizer is not None:
            self.critic.module.load_state_dict(saved.discriminator)
            self.disc_optimizer.load_state_dict(saved.disc_optimizer)
        if self.disc_scheduler is not None and saved.disc_scheduler is not None:
            self.disc_scheduler.load_state_dict(saved.disc_scheduler)
        self.iteration = saved.iteration
        self.skipped_nonfinite = saved.skipped_nonfinite
        self.bad_pairs = set(saved.bad_pairs)
        self.saved_iteration = self.iteration
        self.history = saved.history
        set_rng_state(saved.rng)

    def save(self) -> None:
        if self.is_main:
            path = self.run.checkpoint
            record_outputs(self.run_dir, [path, *self.run.log_files()], "train")
            try:
                self.run.save_checkpoint(self.training_state())
            except OSError as exc:  # the write goes through a temporary file: the old one is untouched
                kept = (f"the previous {path.name} (iteration {self.saved_iteration}) is intact"
                        if self.saved_iteration is not None else "no earlier checkpoint exists")
                raise TrainingError(f"{path}: cannot write the checkpoint of iteration {self.iteration} "
                                    f"({(exc.strerror or str(exc)).lower()}); {kept}") from None
            self.saved_iteration = self.iteration
        self.accelerator.wait_for_everyone()

    def skipped_bad_total(self) -> int:
        """Distinct unreadable pairs: training ones named in the batches (workers' datasets are copies)
        and validation ones (read in this process)."""
        return len(self.bad_pairs | getattr(self.datasets["val"], "bad_pairs", set()))

    # the loop --------------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._stop_signal = signum

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _method_losses(self, batch: dict, step: int, generator: torch.Generator):
        """(losses, critic inputs) of one ``training_losses`` call: plain dicts of tensors, which DDP
        searches for the graph's outputs."""
        out = StepOutput.of(self.method.training_losses(batch, step, generator))
        return out.losses, out.critic_inputs

    def _synced(self, trainable: nn.Module, loss_fn, *, find_unused: bool):
        """``loss_fn`` itself on one process; on several, the same call through DDP, which averages
        the gradients of ``trainable``'s parameters during backward.

        ``find_unused``: a step of ``model`` may leave trainable parameters without a gradient
        (stage 1 never calls eps_theta), and which ones depends on the method and its options; DDP
        then finds them from the outputs and leaves their gradients None on every process, as one
        process would, instead of waiting for them. Frozen parameters (stage 2's E, requires_grad
        False) are not part of DDP at all. ``gradient_as_bucket_view``: the gradients live in DDP's
        all-reduce buckets, no second copy (unused parameters still keep None, checked with
        ``zero_grad(set_to_none=True)``). DDP broadcasts buffers from process 0 before each forward
        (the networks hold no running statistics today; this keeps any they gain equal)."""
        if self.world_size == 1:
            return loss_fn
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(_Objective(trainable, loss_fn), device_ids=device_ids,
                                                   find_unused_parameters=find_unused,
                                                   gradient_as_bucket_view=True)

    def _agree_on_overflow(self, optimizer: torch.optim.Optimizer) -> None:
        """fp16: make the scaler's "found inf" flag of ``optimizer`` the same on every process.

        DDP averages the gradients before ``unscale_``, so an overflow on one process already
        reaches all; the flag is still reduced (max over processes, one scalar) so that nothing
        local between backward and ``unscale_`` can make one process step while another skips,
        which leaves the processes with different weights and loss scales. torch's own sharded
        scaler (FSDP) reduces the same per-device flags."""
        if self.world_size == 1 or not self.scaler.is_enabled():
            return
        for found_inf in self.scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values():
            dist.all_reduce(found_inf, op=dist.ReduceOp.MAX)

    def _should_stop(self) -> int | None:
        """The signal that stops training now, agreed by every process (None: go on).

        Each process's handler only records its own signal; processes compare once per iteration,
        at the same point, so a signal that reaches one process (or reaches them in different
        iterations) stops all of them after the same iteration, and all save it together."""
        local = self._stop_signal or 0
        if self.world_size > 1:
            flag = torch.tensor([local], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            local = int(flag.item())
        return local or None

    def _all_finite(self, losses: dict[str, torch.Tensor]) -> list[str]:
        bad = [k for k, v in losses.items() if not torch.isfinite(v.detach()).all()]
        if self.world_size > 1:  # every process must take the same decision
            flag = torch.tensor([float(len(bad))], device=self.device)
            dist.all_reduce(flag)
            if flag.item() > 0 and not bad:
                bad = ["(another process)"]
        return bad

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
        self._agree_on_overflow(optimizer)
        if self.config.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.config.optim.grad_clip)
        self.scaler.step(optimizer)

    def train_step(self, batch: dict) -> dict[str, float]:
        """One iteration: losses, backward, optimiser steps, EMA. Returns the logged numbers."""
        tc = self.config.trainer
        step_seed = tc.seed * 1_000_003 + self.iteration * self.world_size + self.rank
        torch.manual_seed(step_seed)  # dropout
        generator = torch.Generator().manual_seed(step_seed)  # mixing, augmentation, noise, timesteps
        self.method.train()
        per_term = self.method.backward_now is not None
        if per_term:  # the method back-propagates finished terms while it computes the rest
            self.optimizer.zero_grad(set_to_none=True)
        with self.accelerator.autocast():
            losses, critic_inputs = self.losses(batch, self.iteration, generator)
        bad = self._all_finite(losses)
        if bad:
            self.skipped_nonfinite += 1
            if self.skipped_nonfinite > tc.skip_nonfinite:
                raise TrainingError(
                    f"iteration {self.iteration}: non-finite loss in {', '.join(bad)}; the last good "
                    f"checkpoint is {self.run.checkpoint} (lower optim.lr, or set "
                    "trainer.skip_nonfinite=N to skip up to N such batches)")
            self.optimizer.zero_grad(set_to_none=True)
            return {"skipped_nonfinite": float(self.skipped_nonfinite)}
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if per_term:
            rest = [v for v in losses.values() if v.requires_grad]  # terms the method did not release
            if rest:
                self._backward_now(sum(rest))
            self._apply(params, self.optimizer)
        else:
            self._step(params, self.optimizer, sum(losses.values()))
        logged = {k: float(v.detach()) for k, v in losses.items()}
        if self.disc_optimizer is not None:
            # the critic's step, on the detached tensors of this step; the generator's adversarial
            # term treated the critic's weights as constants, so its gradients are the critic's own
            with self.accelerator.autocast():
                d_losses = self.disc_losses(critic_inputs)
            if d_losses:
                d_params = [p for g in self.disc_optimizer.param_groups for p in g["params"]]
                self._step(d_params, self.disc_optimizer, sum(d_losses.values()))
                logged.update({k: float(v.detach()) for k, v in d_losses.items()})
        self.scaler.update()
        self.scheduler.step()
        if self.disc_scheduler is not None:
            self.disc_scheduler.step()
        self.method.after_step(self.iteration)
        logged.update(self.method.stats)
        return logged

    def evaluate(self, max_images: int | None = None) -> dict:
        """mIoU of ``model`` and ``ema_model`` on the validation split, on the method's default path.

        In fp32, without the training autocast: the argmax of bf16/fp16 logits can differ from the
        fp32 one, and ``results.json`` must equal what ``iccld evaluate`` reports."""
        from ..evaluation.evaluate import evaluate_model
        from ..evaluation.metrics import subsets_for_source

        tc = self.config.trainer
        results = {}
        for label, model in (("model", self.method.model), ("ema", self.method.ema_model)):
            cm = evaluate_model(model, self.datasets["val"], device=self.device,
                                path=self.method.inference_path, seed=tc.seed, slide=tc.eval_slide,
                                window=tuple(self.config.data.crop_size),
                                max_images=tc.eval_max_images if max_images is None else max_images,
                                rank=self.rank, world_size=self.world_size, progress=False)
            results[label] = cm.summary(subsets_for_source(self.config.data.source.kind))  # + miou16/13 for SYNTHIA
        return results

    def fit(self) -> dict:
        """Train from ``self.iteration`` to ``trainer.max_iters``; returns the final evaluation.

        Stops early, after saving a checkpoint, on SIGINT/SIGTERM (``self.stopped_by`` is set).
        """
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        tc = self.config.trainer
        self.stopped_by: int | None = None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            record_outputs(self.run_dir, [self.run.config], "train")
            save_config(self.config, self.run.config)
        writer = SummaryWriter(str(self.run.logs), purge_step=self.iteration) if self.is_main else None
        streams = {}
        if "source" in self.datasets:
            streams["source"] = _Stream(self._loader("source", SOURCE_STREAM))
        if "target" in self.datasets:
            streams["target"] = _Stream(self._loader("target", TARGET_STREAM))
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = tqdm(total=tc.max_iters, initial=self.iteration, disable=not (self.progress and self.is_main),
                   desc=f"{self.config.method.name}", dynamic_ncols=True, mininterval=1)
        started, start_iter = time.time(), self.iteration
        try:
            while self.iteration < tc.max_iters:
                try:
                    batch = {name: self._to_device(next(stream)) for name, stream in streams.items()}
                except RuntimeError:  # a DataLoader worker killed by the signal that stops us
                    if self._stop_signal is None:
                        raise
                    self.save()
                    self.stopped_by = self._stop_signal
                    return {}
                for b in batch.values():  # "bad_pairs": per sample, the "\n"-joined image paths skipped
                    self.bad_pairs.update(n for names in b.get("bad_pairs", ()) for n in names.split("\n") if n)
                logged = self.train_step(batch)
                self.iteration += 1
                bar.update(1)
                if self.iteration % tc.log_interval == 0 or self.iteration == tc.max_iters:
                    # the bar shows the losses; the method's statistics go to TensorBoard only
                    bar.set_postfix({k: f"{v:.3g}" for k, v in logged.items() if k not in self.method.stats})
                    if writer is not None:
                        for k, v in logged.items():
                            writer.add_scalar(f"train/{k}", v, self.iteration)
                        writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.iteration)
                        rate = (self.iteration - start_iter) / max(time.time() - started, 1e-9)
                        writer.add_scalar("train/it_per_s", rate, self.iteration)
                done = self.iteration == tc.max_iters
                if tc.eval_interval > 0 and (self.iteration % tc.eval_interval == 0) and not done:
                    self._log_eval(self.evaluate(), writer, bar)
                if self.iteration % tc.checkpoint_interval == 0 or done:
                    self.save()
                stop = self._should_stop()
                if stop is not None and not done:
                    self.save()
                    self.stopped_by = stop
                    return {}
        finally:
            for stream in streams.values():
                stream.close()
            bar.close()
            for s, h in handlers.items():
                signal.signal(s, h)
            if writer is not None:
                writer.flush()
                writer.close()
        final = self.evaluate(max_images=0)
        self._log_eval(final, None, None)
        self.diagnostics = {"last_step": dict(self.method.stats), **self._end_of_run()}
        if self.is_main:
            self._write_final(final)
        self.accelerator.wait_for_everyone()
        return final

    END_OF_RUN_IMAGES = 8  # validation images the method's end-of-run check looks at

    def _end_of_run(self) -> dict:
        """The method's own check of what the run changed (:meth:`Method.end_of_run`), on the first
        validation images, each cut to the training crop around its centre (bounded memory at any
        image size); its summary line is printed."""
        val, (ch, cw) = self.datasets["val"], self.config.data.crop_size
        images = []
        for index in range(min(self.END_OF_RUN_IMAGES, len(val))):
            image = val[index]["image"]  # (3, H, W)
            h, w = image.shape[-2:]
            top, left = max(0, (h - ch) // 2), max(0, (w - cw) // 2)
            images.append(image[:, top:top + ch, left:left + cw].unsqueeze(0).to(self.device))
        self.method.eval()
        found = self.method.end_of_run(images)
        if found.get("summary") and self.is_main:
            print(f"[{self.config.method.name}] {found['summary']}", file=sys.stderr)
        return {"end_of_run": found} if found else {}

    def _log_eval(self, results: dict, writer, bar) -> None:
        entry = {"iteration": self.iteration, **{k: round(v["miou"], 3) for k, v in results.items()}}
        self.history.append(entry)
        if writer is not None:
            for k, v in results.items():
                writer.add_scalar(f"val/miou_{k}", v["miou"], self.iteration)
                for subset in ("miou16", "miou13"):  # SYNTHIA runs only
                    if v.get(subset) is not None:
                        writer.add_scalar(f"val/{subset}_{k}", v[subset], self.iteration)
        if bar is not None and self.is_main:
            bar.write(f"[{self.config.method.name}] iteration {self.iteration}: val mIoU model "
                      f"{results['model']['miou']:.2f}, ema {results['ema']['miou']:.2f}")

    def _write_final(self, results: dict) -> None:
        record_outputs(self.run_dir, [*FINAL_FILES, self.run.results], "train")
        provenance = self.provenance()
        self.run.write_final(self.method.ema_model, provenance)
        self.run.write_results(provenance, {
            "history": self.history, "skipped_bad_samples": self.skipped_bad_total(),
            "skipped_nonfinite": self.skipped_nonfinite, "val": results, "diagnostics": self.diagnostics})
