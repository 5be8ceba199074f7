"""Datasets from config: the one place where DatasetConfig/DataConfig are read (each kind's file
builds its own split from a DatasetConfig, see :mod:`iccld.data.kinds`)."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import torch

from ..sections import DataConfig, DatasetConfig
from ..errors import ConfigError
from .base import SegmentationDataset
from .kinds import dataset_kind
from .rcs import RareClassDataset, load_class_stats
from .transforms import EvalTransform, TrainTransform


def build_dataset(cfg: DatasetConfig, *, train: bool, crop_size: Optional[Sequence[int]] = None,
                  cat_max_ratio: float = 0.75, flip: bool = True, labelled: bool = True,
                  skip_bad: bool = False, jitter: float = 0.0,
                  pl_margins: Optional[Sequence[int]] = None) -> SegmentationDataset:
    """One dataset split as ``cfg`` describes it.

    ``train=True`` gives random crops of ``crop_size`` (H, W) (required) after resizing to
    ``cfg.resize`` (by one factor with ``cfg.keep_ratio``); ``train=False`` resizes the image only
    (labels stay full-size). ``labelled=False``
    is the unlabelled target of UDA: no label files are needed and labels are all 255.
    ``pl_margins`` (training only): each sample also holds ``pl_valid``, its pseudo-label region
    (see :class:`~iccld.data.transforms.TrainTransform`).
    """
    if not cfg.root:
        raise ConfigError(f"data: the {cfg.kind} dataset has no root; set data.<part>.root to its folder")
    if train:
        if crop_size is None:
            raise ConfigError("data.crop_size: required for a training dataset")
        transform = TrainTransform(cfg.resize, crop_size, cat_max_ratio, flip, jitter, cfg.keep_ratio,
                                   pl_margins)
    else:
        transform = EvalTransform(cfg.resize, cfg.keep_ratio)
    kind = dataset_kind(cfg.kind, "data: dataset kind")  # ConfigError listing the kinds
    return kind.dataset(cfg, transform, labelled=labelled, skip_bad=skip_bad)


def build_source_dataset(data_cfg: DataConfig) -> torch.utils.data.Dataset:
    """The labelled source training set, wrapped in rare class sampling when
    ``data.rcs_temperature`` > 0 (that needs ROOT/sample_class_stats.json from ``iccld prepare``)."""
    dataset = build_dataset(data_cfg.source, train=True, crop_size=data_cfg.crop_size,
                            cat_max_ratio=data_cfg.cat_max_ratio, flip=data_cfg.flip,
                            labelled=True, skip_bad=data_cfg.skip_bad)
    if data_cfg.rcs_temperature <= 0:
        return dataset
    stats = load_class_stats(dataset.root, dataset.prepare_command)
    return RareClassDataset(dataset, stats, temperature=data_cfg.rcs_temperature,
                            min_pixels=data_cfg.rcs_min_pixels, min_crop_ratio=data_cfg.rcs_min_crop_ratio)


def build_val_dataset(data_cfg: DataConfig, split: str | None = None,
                      skip_bad: bool = False) -> SegmentationDataset:
    """The labelled evaluation split (image resized, label at full resolution); ``split`` replaces
    ``data.val.split`` (e.g. "test")."""
    cfg = data_cfg.val if split is None else dataclasses.replace(data_cfg.val, split=split)
    return build_dataset(cfg, train=False, labelled=True, skip_bad=skip_bad)
