"""Resumable, worker-independent sampling: every training sample is a key ``(index, seed)``.

Global sample number ``s`` (counted over iterations, processes and the batch) picks the dataset
index from a per-epoch permutation and derives the seed of every random choice made for that sample
(crop, flip, rare class choice). So the data stream depends only on the run's seed and the
iteration, not on the number of loader workers, and resuming at iteration ``k`` replays nothing.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

def sample_seed(run_seed: int, stream: int, sample: int, purpose: int = 0) -> int:
    """A 63-bit seed from (run seed, stream id, global sample number, purpose); deterministic.
    Purpose 0 seeds a sample's random choices, 1 an epoch's permutation."""
    entropy = [run_seed, stream, purpose, sample]
    return int(np.random.SeedSequence(entropy).generate_state(2, np.uint64)[0] >> 1)


class KeySampler(Sampler):
    """Infinite stream of ``(index, seed)`` keys for one process, from iteration ``start_iter``."""

    def __init__(self, size: int, *, batch_size: int, seed: int, stream: int, start_iter: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.size, self.batch_size, self.seed, self.stream = size, batch_size, seed, stream
        self.start_iter, self.rank, self.world_size = start_iter, rank, world_size
        self._perm_epoch, self._perm = -1, None

    def _index(self, sample: int) -> int:
        epoch, pos = divmod(sample, self.size)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.stream, epoch, purpose=1))
            self._perm, self._perm_epoch = torch.randperm(self.size, generator=g), epoch
        return int(self._perm[pos])

    def __iter__(self) -> Iterator[tuple[int, int]]:
        it = self.start_iter
        while True:
            first = (it * self.world_size + self.rank) * self.batch_size
            for sample in range(first, first + self.batch_size):
                yield self._index(sample), sample_seed(self.seed, self.stream, sample)
            it += 1

    def __len__(self) -> int:  # pragma: no cover - infinite; DataLoader only needs it for hints
        return 2**62
