"""The demo's ``report.md``: per-class table, learning curves and a qualitative grid."""

from __future__ import annotations

import json
import platform
from datetime import date
from pathlib import Path

import numpy as np
import torch

from ..io.run_folder import RunFolder
from ..utils import atomic_write_text
from .report import markdown_table

GRID_IMAGES = 4


def _read_scalars(log_dir: Path, tag: str) -> tuple[list[int], list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    if tag not in acc.Tags().get("scalars", []):
        return [], []
    events = acc.Scalars(tag)
    return [e.step for e in events], [e.value for e in events]


def pyplot():
    """matplotlib.pyplot on the Agg backend. With a read-only home (a container, a shared account)
    matplotlib would warn on every run that it cannot write its config folder; it gets a private
    temporary one instead, unless MPLCONFIGDIR says where."""
    import os
    import tempfile

    if "MPLCONFIGDIR" not in os.environ:
        folder = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "matplotlib"
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is None or not os.access(existing, os.W_OK):
            os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="iccld-matplotlib-")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(runs: Path, methods: list[str], titles: dict[str, str], path: Path) -> None:
    plt = pyplot()

    fig, (ax_loss, ax_miou) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name in methods:
        steps, values = _read_scalars(RunFolder(runs / name).logs, "train/seg")
        if steps:
            ax_loss.plot(steps, values, label=titles[name])
        history = RunFolder(runs / name).read_results().get("history", [])
        if history:
            ax_miou.plot([h["iteration"] for h in history], [h["ema"] for h in history], marker="o",
                         label=titles[name])
    ax_loss.set(title="segmentation loss (source / mixed)", xlabel="iteration", yscale="log")
    # periodic points use trainer.eval_max_images val images, the last one the whole split;
    # stage 2 counts its own iterations from its start
    ax_miou.set(title="target val mIoU (EMA model)", xlabel="iteration of the run", ylabel="mIoU %")
    for ax in (ax_loss, ax_miou):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def plot_grid(runs: Path, methods: list[str], titles: dict[str, str], path: Path, samples: int = 4,
              split: str = "test") -> None:
    plt = pyplot()

    from ..data.build import build_val_dataset
    from ..data.labels import colorize
    from ..data.transforms import denormalize
    from .inference import model_predict
    from .loading import load_models

    loaded = {name: load_models(str(runs / name), "ema") for name in methods}
    config = loaded[methods[-1]].config
    val = build_val_dataset(config.data, split=split)
    count = min(GRID_IMAGES, len(val))
    columns = ["image", "ground truth"] + [titles[m] for m in methods] + ["uncertainty (ICCLD)"]
    fig, axes = plt.subplots(count, len(columns), figsize=(2.6 * len(columns), 1.5 * count + 0.4), squeeze=False)
    for row in range(count):
        item = val[row * max(1, len(val) // count)]
        x = item["image"].unsqueeze(0)
        rgb = (denormalize(item["image"]).permute(1, 2, 0).clamp(0, 255).numpy()).astype(np.uint8)
        panels = [rgb, colorize(item["label"].numpy())]
        uncertainty = None
        for name in methods:
            lm = loaded[name]
            diffusion = lm.inference_path == "diffusion"
            pred = model_predict(lm.models["ema"], x, samples=samples if diffusion else 1,
                                 generator=torch.Generator().manual_seed(row), diffusion=diffusion)
            panels.append(colorize(pred.logits.argmax(1)[0].numpy()))
            if diffusion and pred.uncertainty is not None:
                uncertainty = pred.uncertainty[0].numpy()
        panels.append(uncertainty if uncertainty is not None else np.zeros(rgb.shape[:2]))
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(panel, cmap="magma" if panel.ndim == 2 else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out: Path, runs: Path, methods: list[str], titles: dict[str, str], *, quick: bool,
                 elapsed: float, encoder: str = "a tiny MiT (`mit-tiny`) trained from scratch, configs in "
                                                "`configs/synthetic/`") -> Path:
    from .runs import evaluate_run

    results = {m: RunFolder(runs / m).read_results() for m in methods}
    test = {m: evaluate_run(runs / m, "test")["ema"] for m in methods}
    summaries = {f"{titles[m]} ({results[m]['inference_path']})": test[m] for m in methods}
    beside = "\n".join(["| method | test mIoU | val mIoU |", "|---|---:|---:|"]
                       + [f"| {titles[m]} | {test[m]['miou']:.2f} | {results[m]['val']['ema']['miou']:.2f} |"
                          for m in methods])
    plot_curves(runs, methods, titles, out / "curves.png")
    plot_grid(runs, methods, titles, out / "grid.png", split="test")
    config = json.dumps({m: results[m]["iteration"] for m in methods})
    lines = [
        "# iccld demo report",
        "",
        f"Encoder: {encoder}.",
        "",
        f"Embedded synthetic benchmark (GTA5-like source -> Cityscapes-like target), CPU "
        f"schedules{' (--quick: a smoke run, numbers mean nothing)' if quick else ''}. "
        f"Iterations per method: `{config}`. Made on {date.today().isoformat()} on "
        f"{platform.machine()} / {platform.system()} in {elapsed / 60:.1f} minutes.",
        "",
        "Target **test** IoU (%) of each method's EMA model on its default inference path "
        "(`direct` = D(z0), `diffusion` = D(z0_hat) after 4 DDIM steps). The test split is held out: "
        "every setting of the configs was chosen on target val, which each run also scores itself on:",
        "",
        markdown_table(summaries),
        "",
        "Test against val (EMA model, mIoU %):",
        "",
        beside,
        "",
        "## Learning curves",
        "",
        "![curves](curves.png)",
        "",
        "Periodic mIoU points are measured on the first `trainer.eval_max_images` val images, the last "
        "point of each run on the whole split; stage 2 counts its iterations from its own start.",
        "",
        "## Qualitative results (target test)",
        "",
        "![grid](grid.png)",
        "",
        "Uncertainty: per-pixel variance of the logits over 4 noise draws of the diffusion path.",
        "",
    ]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return report
