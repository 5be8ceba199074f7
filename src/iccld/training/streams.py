"""The training data: the datasets a method declares, their endless per-process loaders and batches.

Every stream samples with a :class:`~iccld.training.sampler.KeySampler`, so the batches depend only
on the run's seed and the iteration (resuming at iteration k replays nothing).
"""

from __future__ import annotations

import signal

import torch
from torch.utils.data import DataLoader

from ..config import Config
from ..methods import LABELLED_TARGET, SOURCE, TARGET
from .sampler import KeySampler

SOURCE_STREAM, TARGET_STREAM = 1, 2
STREAMS = {"source": SOURCE_STREAM, "target": TARGET_STREAM}  # dataset -> its sampler's stream id


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


def build_datasets(config: Config, streams: tuple[str, ...]) -> dict:
    """The datasets of a method's ``streams``, and "val"."""
    from ..data.build import build_dataset, build_source_dataset, build_val_dataset

    d = config.data
    crop = dict(train=True, crop_size=tuple(d.crop_size), cat_max_ratio=d.cat_max_ratio, flip=d.flip,
                skip_bad=d.skip_bad)
    datasets = {}
    if SOURCE in streams:
        datasets["source"] = build_source_dataset(d)
    if TARGET in streams or LABELLED_TARGET in streams:  # one target stream, with or without labels
        labelled = LABELLED_TARGET in streams  # pseudo-label margins for the unlabelled target only
        datasets["target"] = build_dataset(d.target, labelled=labelled, pl_margins=None if labelled else d.pl_margins,
                                           **crop)
    datasets["val"] = build_val_dataset(d, skip_bad=d.skip_bad)
    return datasets


class TrainingData:
    """The training streams of one process: batches of ``batch_size`` for its share of each iteration."""

    def __init__(self, datasets: dict, config: Config, *, batch_size: int, rank: int, world_size: int,
                 device: torch.device):
        self.datasets, self.config, self.batch_size = datasets, config, batch_size
        self.rank, self.world_size, self.device = rank, world_size, device
        self.bad_pairs: set[str] = set()  # distinct unreadable training pairs passed over (data.skip_bad)
        self.streams: dict[str, _Stream] = {}

    def loader(self, name: str, start_iter: int) -> DataLoader:
        tc, d = self.config.trainer, self.config.data
        sampler = KeySampler(len(self.datasets[name]), batch_size=self.batch_size, seed=tc.seed,
                             stream=STREAMS[name], start_iter=start_iter, rank=self.rank,
                             world_size=self.world_size)
        return DataLoader(self.datasets[name], batch_size=self.batch_size, sampler=sampler,
                          num_workers=d.num_workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False, drop_last=True,
                          worker_init_fn=ignore_stop_signals if d.num_workers else None)

    def open(self, start_iter: int) -> None:
        self.streams = {name: _Stream(self.loader(name, start_iter)) for name in STREAMS if name in self.datasets}

    def next_batch(self) -> dict:
        """One batch of every stream, on the device; notes the unreadable pairs it passed over."""
        batch = {name: self.to_device(next(stream)) for name, stream in self.streams.items()}
        for b in batch.values():  # "bad_pairs": per sample, the "\n"-joined image paths skipped
            self.bad_pairs.update(n for names in b.get("bad_pairs", ()) for n in names.split("\n") if n)
        return batch

    def first_batch(self) -> dict:
        """The first training batch, built the way the loop builds it (for tests and benchmarks)."""
        return {name: self.to_device(next(iter(self.loader(name, 0)))) for name in STREAMS if name in self.datasets}

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()
        self.streams = {}

    def skipped_bad_total(self) -> int:
        """Distinct unreadable pairs: training ones named in the batches (workers' datasets are copies)
        and validation ones (read in this process)."""
        return len(self.bad_pairs | getattr(self.datasets["val"], "bad_pairs", set()))
