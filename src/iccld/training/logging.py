"""What a run reports while it trains: TensorBoard scalars, the progress bar and the evaluation
history. It logs whatever numbers it is handed, under their own names, and knows none of them."""

from __future__ import annotations

import time
from numbers import Real

from ..io.run_folder import RunFolder


class TrainingLog:
    """TensorBoard (``train/<name>``, ``val/<metric>_<model>``) and the progress bar, on process 0;
    the evaluation history (checkpointed, and written to results.json) on every process."""

    def __init__(self, run: RunFolder, *, name: str, max_iters: int, log_interval: int, is_main: bool,
                 progress: bool):
        self.run, self.name, self.max_iters, self.log_interval = run, name, max_iters, log_interval
        self.is_main, self.progress = is_main, progress
        self.history: list[dict] = []  # {"iteration", <model label>: mIoU} per evaluation
        self.writer = self.bar = None

    def open(self, iteration: int) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.writer = SummaryWriter(str(self.run.logs), purge_step=iteration) if self.is_main else None
        self.bar = tqdm(total=self.max_iters, initial=iteration, disable=not (self.progress and self.is_main),
                        desc=self.name, dynamic_ncols=True, mininterval=1)
        self.started, self.start_iter = time.time(), iteration

    def step(self, iteration: int, numbers: dict[str, float], diagnostics: dict[str, float], lr: float) -> None:
        """After an iteration: the bar moves; every ``log_interval`` iterations (and the last) the bar
        shows the step's ``numbers`` but its ``diagnostics`` (the losses), and TensorBoard gets all
        of them, the lr and the speed."""
        self.bar.update(1)
        if iteration % self.log_interval and iteration != self.max_iters:
            return
        self.bar.set_postfix({k: f"{v:.3g}" for k, v in numbers.items() if k not in diagnostics})
        if self.writer is not None:
            for k, v in numbers.items():
                self.writer.add_scalar(f"train/{k}", v, iteration)
            self.writer.add_scalar("train/lr", lr, iteration)
            rate = (iteration - self.start_iter) / max(time.time() - self.started, 1e-9)
            self.writer.add_scalar("train/it_per_s", rate, iteration)

    def evaluation(self, iteration: int, results: dict[str, dict], *, periodic: bool = True) -> None:
        """``results``: {model label: evaluation summary}. Every mIoU-like number of a summary (the
        mIoU and whatever class subsets it reports) goes to TensorBoard; a periodic one also to the bar."""
        self.history.append({"iteration": iteration, **{k: round(v["miou"], 3) for k, v in results.items()}})
        if self.writer is not None and periodic:
            for label, summary in results.items():
                for key, value in summary.items():
                    if key.startswith("miou") and isinstance(value, Real):
                        self.writer.add_scalar(f"val/{key}_{label}", value, iteration)
        if periodic and self.is_main:
            shown = ", ".join(f"{label} {v['miou']:.2f}" for label, v in results.items())
            self.bar.write(f"[{self.name}] iteration {iteration}: val mIoU {shown}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        self.writer = None
