"""The one trainer: an iteration loop that runs any :class:`~iccld.methods.base.Method`.

It owns what every method shares: devices and processes (``accelerate``), data streams, optimisers
and schedules, the EMA step, periodic evaluation, TensorBoard logs, the progress bar, atomic
checkpoints with exact resume, signal handling and the non-finite-loss guard.

Multi-process training (``accelerate launch``): every process holds the full model, draws its own
share of each batch (see :mod:`iccld.training.sampler`), and gradients are averaged across processes
after each backward pass (an explicit all-reduce, so the methods may call any model method, not only
``forward``). Buffers are broadcast from process 0 after each step. The EMA model and the
discriminator therefore stay identical on every process; evaluation splits the images and sums the
confusion matrices; only process 0 writes files.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..config import Config, save_config, to_dict
from ..errors import TrainingError
from ..methods import Method, build_method
from ..utils import atomic_write_text, seed_everything
from .checkpoint import CKPT_NAME, FINAL_DIR, TRAINING_INFO, rng_state, save_checkpoint, set_rng_state
from .sampler import KeySampler
from .schedule import lr_factor

SOURCE_STREAM, TARGET_STREAM = 1, 2


def resolve_precision(requested: str) -> str:
    """``auto`` means bf16 on a GPU that supports it, fp32 elsewhere (bf16 on CPU is very slow)."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _cycle(loader: DataLoader):
    while True:  # the sampler is infinite; this only guards against a loader that stops
        yield from loader


class Trainer:
    def __init__(self, config: Config, run_dir: Path, *, progress: bool = True):
        from accelerate import Accelerator

        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        tc = config.trainer
        self.accelerator = Accelerator(mixed_precision=resolve_precision(tc.mixed_precision),
                                       cpu=not torch.cuda.is_available())
        self.device = self.accelerator.device
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        if tc.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.datasets = self._build_datasets()  # bad data fails here, before any heavy work
        seed_everything(tc.seed)  # identical initial weights on every process
        self.method: Method = build_method(config).to(self.device)
        self.optimizer = self._build_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda)
        disc_params = list(self.method.discriminator_parameters())
        self.disc_optimizer = None
        if disc_params:
            m = config.method
            self.disc_optimizer = torch.optim.Adam(disc_params, lr=m.disc_lr, betas=tuple(m.disc_betas))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.accelerator.mixed_precision == "fp16")
        self.iteration = 0
        self.skipped_nonfinite = 0
        self.skipped_bad = 0  # unreadable training pairs passed over (data.skip_bad), all workers
        self._stop_signal: int | None = None
        self.history: list[dict] = []

    # construction ----------------------------------------------------------------------------

    def _lr_lambda(self, step: int) -> float:
        o, tc = self.config.optim, self.config.trainer
        return lr_factor(step, max_iters=tc.max_iters, warmup_iters=o.warmup_iters,
                         warmup_ratio=o.warmup_ratio, power=o.poly_power, min_lr_ratio=o.min_lr / o.lr)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        """AdamW; the encoder at the base lr, every head at lr x head_lr_mult; no weight decay on
        1-D parameters (norms, biases)."""
        o = self.config.optim
        groups = []
        for name, params in self.method.trainable_groups().items():
            lr = (o.lr if name == "encoder" else o.lr * o.head_lr_mult) * self.method.lr_scale(name)
            decay = [p for p in params if p.ndim > 1]
            no_decay = [p for p in params if p.ndim <= 1]
            for ps, wd in ((decay, o.weight_decay), (no_decay, 0.0)):
                if ps:
                    groups.append({"params": ps, "lr": lr, "weight_decay": wd, "name": name})
        if not groups:
            raise TrainingError(f"method {self.config.method.name}: nothing to train (every parameter frozen)")
        return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)

    def _build_datasets(self) -> dict:
        from ..data.build import build_dataset, build_source_dataset, build_val_dataset

        d, name = self.config.data, self.config.method.name
        crop = dict(train=True, crop_size=tuple(d.crop_size), cat_max_ratio=d.cat_max_ratio, flip=d.flip,
                    skip_bad=d.skip_bad)
        datasets = {}
        if name != "oracle":
            datasets["source"] = build_source_dataset(d)
        if name != "source_only":
            datasets["target"] = build_dataset(d.target, labelled=(name == "oracle"), **crop)
        datasets["val"] = build_val_dataset(d, skip_bad=d.skip_bad)
        return datasets

    def _loader(self, name: str, stream: int) -> DataLoader:
        tc, d = self.config.trainer, self.config.data
        sampler = KeySampler(len(self.datasets[name]), batch_size=tc.batch_size, seed=tc.seed, stream=stream,
                             start_iter=self.iteration, rank=self.rank, world_size=self.world_size)
        return DataLoader(self.datasets[name], batch_size=tc.batch_size, sampler=sampler,
                          num_workers=d.num_workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False, drop_last=True)

    # state -----------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        state = {
            "config": to_dict(self.config),
            "iteration": self.iteration,
            "model": self.method.model.state_dict(),
            "ema_model": self.method.ema_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "data": {"sampler_iteration": self.iteration, "skipped_bad": self.skipped_bad},
            "skipped_nonfinite": self.skipped_nonfinite,
            "history": json.dumps(self.history),
        }
        if self.disc_optimizer is not None:
            state["discriminator"] = self.method.discriminator.state_dict()
            state["disc_optimizer"] = self.disc_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.method.model.load_state_dict(state["model"])
        self.method.ema_model.load_state_dict(state["ema_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.disc_optimizer is not None:
            self.method.discriminator.load_state_dict(state["discriminator"])
            self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        self.iteration = int(state["iteration"])
        self.skipped_nonfinite = int(state.get("skipped_nonfinite", 0))
        self.skipped_bad = int(state.get("data", {}).get("skipped_bad", 0))
        self.history = json.loads(state.get("history", "[]"))
        set_rng_state(state["rng"])

    def save(self) -> None:
        if self.is_main:
            save_checkpoint(self.run_dir / CKPT_NAME, self.state_dict())
        self.accelerator.wait_for_everyone()

    def skipped_bad_total(self) -> int:
        """Training pairs counted through the batches (workers' datasets are copies) + val pairs."""
        return self.skipped_bad + int(getattr(self.datasets["val"], "num_skipped", 0))

    # the loop --------------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._stop_signal = signum

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _sync_gradients(self, params) -> None:
        if self.world_size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for g in grads:
                g.copy_(flat[offset: offset + g.numel()].view_as(g))
                offset += g.numel()

    def _broadcast_buffers(self) -> None:
        if self.world_size > 1:
            for buffer in self.method.model.buffers():
                dist.broadcast(buffer, src=0)

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
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        self._sync_gradients(params)
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
        with self.accelerator.autocast():
            losses = self.method.training_losses(batch, self.iteration, generator)
        bad = self._all_finite(losses)
        if bad:
            self.skipped_nonfinite += 1
            if self.skipped_nonfinite > tc.skip_nonfinite:
                raise TrainingError(
                    f"iteration {self.iteration}: non-finite loss in {', '.join(bad)}; the last good "
                    f"checkpoint is {self.run_dir / CKPT_NAME} (lower optim.lr, or set "
                    "trainer.skip_nonfinite=N to skip up to N such batches)")
            self.optimizer.zero_grad(set_to_none=True)
            return {"skipped_nonfinite": float(self.skipped_nonfinite)}
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self._step(params, self.optimizer, sum(losses.values()))
        logged = {k: float(v.detach()) for k, v in losses.items()}
        if self.disc_optimizer is not None:
            with self.accelerator.autocast():
                d_losses = self.method.discriminator_losses()
            if d_losses:
                d_params = [p for g in self.disc_optimizer.param_groups for p in g["params"]]
                self._step(d_params, self.disc_optimizer, sum(d_losses.values()))
                logged.update({k: float(v.detach()) for k, v in d_losses.items()})
        self.scaler.update()
        self.scheduler.step()
        self.method.after_step(self.iteration)
        self._broadcast_buffers()
        logged.update(self.method.stats)
        return logged

    def evaluate(self, max_images: int | None = None) -> dict:
        """mIoU of ``model`` and ``ema_model`` on the validation split, on the method's default path."""
        from ..evaluation.evaluate import evaluate_model
        from ..evaluation.metrics import subsets_for_source

        tc = self.config.trainer
        results = {}
        for label, model in (("model", self.method.model), ("ema", self.method.ema_model)):
            cm = evaluate_model(model, self.datasets["val"], device=self.device,
                                path=self.method.inference_path, seed=tc.seed, slide=tc.eval_slide,
                                window=tuple(self.config.data.crop_size),
                                max_images=tc.eval_max_images if max_images is None else max_images,
                                rank=self.rank, world_size=self.world_size, progress=False,
                                autocast=self.accelerator.autocast)
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
            save_config(self.config, self.run_dir / "config.yaml")
        writer = SummaryWriter(str(self.run_dir / "logs"), purge_step=self.iteration) if self.is_main else None
        streams = {}
        if "source" in self.datasets:
            streams["source"] = _cycle(self._loader("source", SOURCE_STREAM))
        if "target" in self.datasets:
            streams["target"] = _cycle(self._loader("target", TARGET_STREAM))
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = tqdm(total=tc.max_iters, initial=self.iteration, disable=not (self.progress and self.is_main),
                   desc=f"{self.config.method.name}", dynamic_ncols=True, mininterval=1)
        started, start_iter = time.time(), self.iteration
        try:
            while self.iteration < tc.max_iters:
                batch = {name: self._to_device(next(stream)) for name, stream in streams.items()}
                self.skipped_bad += sum(int(b["skipped"].sum()) for b in batch.values() if "skipped" in b)
                logged = self.train_step(batch)
                self.iteration += 1
                bar.update(1)
                if self.iteration % tc.log_interval == 0 or self.iteration == tc.max_iters:
                    bar.set_postfix({k: f"{v:.3g}" for k, v in logged.items() if k != "pl_weight"})
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
                if self._stop_signal is not None and not done:
                    self.save()
                    self.stopped_by = self._stop_signal
                    return {}
        finally:
            bar.close()
            for s, h in handlers.items():
                signal.signal(s, h)
            if writer is not None:
                writer.flush()
                writer.close()
        final = self.evaluate(max_images=0)
        self._log_eval(final, None, None)
        if self.is_main:
            self._write_final(final)
        self.accelerator.wait_for_everyone()
        return final

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
        final_dir = self.run_dir / FINAL_DIR
        self.method.ema_model.save_pretrained(final_dir)
        info = {"method": self.config.method.name, "inference_path": self.method.inference_path,
                "iteration": self.iteration, "weights": "ema_model",
                "val_resize": self.config.data.val.resize}  # iccld predict resizes to it
        atomic_write_text(final_dir / TRAINING_INFO, json.dumps(info, indent=2))
        summary = {"iteration": self.iteration, "method": self.config.method.name,
                   "inference_path": self.method.inference_path, "history": self.history,
                   "skipped_bad_samples": self.skipped_bad_total(), "skipped_nonfinite": self.skipped_nonfinite,
                   "val": results}
        atomic_write_text(self.run_dir / "results.json", json.dumps(summary, indent=2))
