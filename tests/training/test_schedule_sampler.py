"""Learning-rate schedule and the resumable key sampler."""

import itertools

import pytest

from iccld.training.sampler import KeySampler, sample_seed
from iccld.training.schedule import lr_factor


def test_lr_factor_warmup_then_poly():
    kw = dict(max_iters=100, warmup_iters=10, warmup_ratio=1e-6, power=1.0)
    assert lr_factor(0, **kw) == pytest.approx(1e-6)  # starts at the warm-up ratio
    # half-way through warm-up: poly value x (1 - (1 - r) * 0.5)
    assert lr_factor(5, **kw) == pytest.approx(0.95 * (1 - (1 - 1e-6) * 0.5))
    assert lr_factor(10, **kw) == pytest.approx(0.9)  # warm-up over: plain poly
    assert lr_factor(55, **kw) == pytest.approx(0.45)
    assert lr_factor(100, **kw) == pytest.approx(0.0)
    assert lr_factor(50, max_iters=100, warmup_iters=0, warmup_ratio=1, power=2.0) == pytest.approx(0.25)
    assert lr_factor(100, max_iters=100, warmup_iters=0, warmup_ratio=1, power=1.0,
                     min_lr_ratio=0.1) == pytest.approx(0.1)


def take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_sampler_is_deterministic_and_resumable():
    full = take(KeySampler(10, batch_size=2, seed=0, stream=1), 12)
    resumed = take(KeySampler(10, batch_size=2, seed=0, stream=1, start_iter=3), 6)
    assert full[6:] == resumed  # iteration 3 starts at sample 6
    assert full == take(KeySampler(10, batch_size=2, seed=0, stream=1), 12)
    assert full != take(KeySampler(10, batch_size=2, seed=1, stream=1), 12)


def test_sampler_covers_every_index_each_epoch():
    keys = take(KeySampler(7, batch_size=1, seed=0, stream=1), 14)
    assert sorted(i for i, _ in keys[:7]) == list(range(7))
    assert sorted(i for i, _ in keys[7:]) == list(range(7))
    assert len({s for _, s in keys}) == 14  # every sample its own seed


def test_processes_get_disjoint_shares_of_the_global_stream():
    single = take(KeySampler(50, batch_size=4, seed=0, stream=2), 16)  # 4 iterations x 4
    rank0 = take(KeySampler(50, batch_size=2, seed=0, stream=2, world_size=2, rank=0), 8)
    rank1 = take(KeySampler(50, batch_size=2, seed=0, stream=2, world_size=2, rank=1), 8)
    assert set(rank0).isdisjoint(rank1)
    # 2 processes x batch 2 walk the same global stream as 1 process x batch 4
    assert sorted(rank0 + rank1) == sorted(single)
    assert sample_seed(0, 2, 5) == sample_seed(0, 2, 5) != sample_seed(0, 1, 5)
