"""Helpers shared by the benchmark scripts (speed.py, gpu_check.py, write_gpu_section.py).

The scripts run as ``python benchmarks/<name>.py``, which puts this folder first on ``sys.path``,
so they ``import common``. Four parts:

- the machine: :func:`machine_info` (CPU model, cores, torch version, date, command);
- timing: :func:`time_interleaved` runs several workloads round-robin after a warm-up and keeps
  every sample, so ratios can be taken per round (:func:`paired_ratio`) and slow drifts of a shared
  machine's load hit all workloads alike;
- results: :func:`write_json` and the marked sections of ``docs/benchmarks.md``: each script owns
  the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` and never touches the rest;
- the training workload: :class:`TrainingStep`, one iteration exactly as
  ``iccld.training.trainer.Trainer.train_step`` does it, on random tensors.

This module imports torch and iccld only inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
RESULTS = REPO / "benchmarks" / "results"
SECTIONS = ("accuracy", "speed", "gpu")

DOC_INTRO = """# Benchmarks

Numbers measured by the scripts in `benchmarks/`; each script rewrites only its own section, between
the `<!-- name:begin -->` / `<!-- name:end -->` markers, so edit outside the markers.
Raw results are in `benchmarks/results/*.json`.
"""


class BenchmarkError(Exception):
    """A problem the user can fix (a damaged docs file, a bad option); printed as one line."""


# ------------------------------------------------------------------------------------------------
# docs/benchmarks.md sections

def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def skeleton() -> str:
    """A new docs/benchmarks.md: the intro and an empty marked section for each of SECTIONS."""
    parts = [DOC_INTRO]
    for name in SECTIONS:
        begin, end = markers(name)
        parts.append(f"{begin}\n_{name}: not yet measured._\n{end}\n")
    return "\n".join(parts)


def replace_section(text: str, name: str, body: str, origin: str = "docs/benchmarks.md") -> str:
    """``text`` with the part between ``name``'s markers replaced by ``body``; the rest is kept byte
    for byte. A section that is missing is appended at the end. Raises BenchmarkError when the
    markers are damaged (one without the other, repeated, or out of order)."""
    begin, end = markers(name)
    nb, ne = text.count(begin), text.count(end)
    block = f"{begin}\n{body.strip()}\n{end}"
    if nb == 0 and ne == 0:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    if nb != 1 or ne != 1:
        raise BenchmarkError(f"{origin}: expected one '{begin}' and one '{end}', found {nb} and {ne}; "
                             "fix the markers by hand")
    i, j = text.index(begin), text.index(end)
    if j < i:
        raise BenchmarkError(f"{origin}: '{end}' comes before '{begin}'; fix the markers by hand")
    return text[:i] + block + text[j + len(end):]


def write_section(name: str, body: str, path: Path = DOC) -> Path:
    """Replace section ``name`` of the docs file at ``path`` (created from :func:`skeleton` when
    missing), atomically."""
    from iccld.utils import atomic_write_text

    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else skeleton()
    atomic_write_text(path, replace_section(text, name, body, origin=str(path)))
    return path


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std_text(values: list[float]) -> str:
    """"mean ± std" of ``values`` to two decimals (std 0 for one value), "–" for none: a table cell."""
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {std:.2f}"


def write_json(path: Path, data: dict) -> Path:
    from iccld.utils import atomic_write_text

    atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")
    return Path(path)


# ------------------------------------------------------------------------------------------------
# the machine

def cpu_model(cpuinfo: str | None = None) -> str:
    """The first ``model name`` of /proc/cpuinfo (or of the text given), else platform's guess."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: str = "cpu") -> dict:
    """What the numbers were measured on, and how."""
    import torch

    info = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + shlex.join(sys.argv),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 1e9, 1)
    return info


def _proc_status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """This process's resident set size now, in MiB (Linux)."""
    value = _proc_status_mb("VmRSS")
    if value is None:
        raise BenchmarkError("/proc/self/status has no VmRSS: memory is only measured on Linux")
    return value


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM) since it started or since
    :func:`reset_peak_rss`, in MiB. Unlike getrusage's ru_maxrss, it does not carry over the
    parent's peak through fork + exec."""
    value = _proc_status_mb("VmHWM")
    if value is None:
        raise BenchmarkError("/proc/self/status has no VmHWM: memory is only measured on Linux")
    return value


def reset_peak_rss() -> bool:
    """Reset the peak RSS to the current RSS (Linux >= 4.0); False when the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------
# timing

@dataclasses.dataclass
class Timing:
    """Seconds per call: every measured sample in order, after ``warmup`` unmeasured calls."""

    samples: list[float]
    warmup: int

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_dict(self) -> dict:
        """Milliseconds, rounded, for the JSON results."""
        ms = [s * 1e3 for s in self.samples]
        return {"median_ms": round(statistics.median(ms), 3), "min_ms": round(min(ms), 3),
                "max_ms": round(max(ms), 3), "repeats": len(ms), "warmup": self.warmup,
                "samples_ms": [round(x, 2) for x in ms]}


def time_interleaved(fns: dict[str, Callable[[], object]], warmup: int, repeats: int,
                     sync: Callable[[], None] | None = None,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, Timing]:
    """Time each workload ``repeats`` times, round-robin, after ``warmup`` unmeasured rounds.

    Each round runs every workload once; the order rotates by one each round so that no workload
    always follows the same neighbour. ``sync`` (e.g. torch.cuda.synchronize) runs before the clock
    is read on both sides of a call.
    """
    if repeats < 1 or warmup < 0:
        raise BenchmarkError(f"repeats must be >= 1 and warm-up >= 0, got {repeats} and {warmup}")
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if sync is not None:
                sync()
            start = clock()
            fns[name]()
            if sync is not None:
                sync()
            samples[name].append(clock() - start)
    return {name: Timing(samples[name], warmup) for name in names}


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over rounds of a[r] / b[r], for two Timings from the same :func:`time_interleaved`."""
    if len(a.samples) != len(b.samples):
        raise BenchmarkError("paired_ratio needs timings from the same interleaved run")
    return statistics.median(x / y for x, y in zip(a.samples, b.samples))


# ------------------------------------------------------------------------------------------------
# the training workload

METHODS = ("source_only", "stage1", "stage2")


def random_batch(batch_size: int, crop: tuple[int, int], num_classes: int, device, seed: int = 0) -> dict:
    """A batch like the trainer's: normalised images (B, 3, H, W) and labels (B, H, W) made of 8x8
    blocks of random classes (so ClassMix sees regions, not noise), for both domains."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    h, w = crop

    def domain() -> dict:
        image = torch.randn(batch_size, 3, h, w, generator=g)
        coarse = torch.randint(0, num_classes, (batch_size, 1, -(-h // 8), -(-w // 8)), generator=g)
        label = F.interpolate(coarse.float(), scale_factor=8, mode="nearest")[:, 0, :h, :w].long()
        return {"image": image.to(device), "label": label.to(device)}

    return {"source": domain(), "target": domain()}


def build_timed_method(config, device):
    """The method of ``config.method.name``, on ``device``.

    Built as the trainer builds it (``Method.from_config``), except stage 2, which would load a
    stage-1 run: it starts from a fresh model instead (stage-1 weights change no shapes and no cost),
    with the critic ``Stage2.build_critic`` gives it.
    """
    from iccld.methods import build_method, method_class
    from iccld.methods.stage2 import Stage2
    from iccld.io import build_model_from_config

    cls = method_class(config.method.name)
    if not issubclass(cls, Stage2):
        return build_method(config).to(device)
    critic = cls.build_critic(config.method, config.model)
    return cls(build_model_from_config(config.model), config.method, critic).to(device)


class TrainingStep:
    """One training iteration of a method, as ``Trainer.train_step`` runs it: losses (under
    autocast when ``bf16``), backward, AdamW step, discriminator loss/backward/Adam step, EMA
    (``after_step``), and the losses read back as floats (a device sync, as the trainer's logging).
    Not included: data loading, the LR schedule step, the non-finite check, multi-process sync.

    Args:
        config: an iccld Config; its method, optim and model sections are used.
        batch: see :func:`random_batch`, already on ``device``.
        device: torch device.
        bf16: run the losses under bf16 autocast (CUDA).
    """

    def __init__(self, config, batch: dict, device, bf16: bool = False) -> None:
        import torch

        self.method = build_timed_method(config, device)
        self.batch, self.device, self.bf16 = batch, torch.device(device), bf16
        o = config.optim
        groups = []
        for name, params in self.method.trainable_groups().items():  # as training.optimizers.build_optimizer
            lr = o.lr if name == "encoder" else o.lr * o.head_lr_mult
            decay = [p for p in params if p.ndim > 1]
            no_decay = [p for p in params if p.ndim <= 1]
            groups += [{"params": ps, "lr": lr, "weight_decay": wd}
                       for ps, wd in ((decay, o.weight_decay), (no_decay, 0.0)) if ps]
        self.optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        critic = self.method.critic()
        self.disc_optimizer = None if critic is None else torch.optim.Adam(
            critic.module.parameters(), lr=critic.lr, betas=tuple(critic.betas))
        self.iteration = 0

    def _autocast(self):
        import torch

        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def __call__(self) -> dict[str, float]:
        import torch

        from iccld.methods import StepOutput

        seed = 1_000_003 + self.iteration
        torch.manual_seed(seed)  # dropout
        generator = torch.Generator().manual_seed(seed)  # mixing, augmentation, noise, timesteps
        self.method.train()
        with self._autocast():
            out = StepOutput.of(self.method.training_losses(self.batch, self.iteration, generator))
        losses = out.losses
        self.optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        self.optimizer.step()
        if self.disc_optimizer is not None:
            with self._autocast():
                d_losses = StepOutput.of(self.method.critic_losses(out.critic_inputs)).losses
            if d_losses:
                self.disc_optimizer.zero_grad(set_to_none=True)
                sum(d_losses.values()).backward()
                self.disc_optimizer.step()
                losses.update(d_losses)
        self.method.after_step(self.iteration)
        self.iteration += 1
        return {k: float(v.detach()) for k, v in losses.items()}
