"""benchmarks/hrda.py: the two rows' settings, paired deltas by seed and by thin class."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import hrda  # noqa: E402

MACHINE = {"cpu": "test cpu", "logical_cores": 2}


def _run(row, seed, test, pole):
    return {"regime": "pretrained", "row": row, "seed": seed, "test": test, "val": test - 1,
            "per_class": {c: (pole if c == "pole" else 0.0) for c in hrda.THIN}, "seconds": 600.0}


def test_rows_differ_in_resolution_only_and_load_as_configs():
    from iccld.config import load_config

    configs = BENCHMARKS.parent / "configs" / "synthetic"
    single = load_config(configs / "stage1.yaml", [*hrda.COMMON, *hrda.SINGLE])
    multi = load_config(configs / "stage1.yaml", [*hrda.COMMON, *hrda.HRDA])
    assert single.data.target.resize == [256, 128] and single.data.crop_size == [128, 128]
    assert multi.data.target.resize is None and multi.data.crop_size == [256, 256]
    assert multi.model.multires.enabled and multi.model.multires.detail_crop == [128, 128]
    assert not single.model.multires.enabled
    assert (multi.method.pl_crop_top, multi.method.pl_crop_bottom) == (8, 32)  # the crop's twice the height
    assert single.data.rcs_min_pixels == multi.data.rcs_min_pixels == 200


def test_deltas_are_paired_by_seed_and_by_class():
    runs = [_run("stage1", 0, 20.0, 10.0), _run("stage1", 1, 30.0, 5.0),
            _run("stage1_hrda", 1, 31.0, 9.0), _run("stage1_hrda", 0, 24.0, 30.0)]
    assert sorted(hrda._paired(runs, "pretrained", "stage1_hrda", "stage1")) == [1.0, 4.0]
    assert sorted(hrda._paired_class(runs, "pretrained", "stage1_hrda", "stage1", "pole")) == [4.0, 20.0]
    text = hrda.render({"meta": {"date": "d", "machine": MACHINE, "command": "c", "minutes": 1,
                                 "regimes": ["pretrained"]}, "runs": runs})
    row = next(line for line in text.splitlines() if line.startswith("| stage 1, HRDA"))
    assert "| 2 | 26.50 ± 4.95 | 27.50 ± 4.95 | 2.50 ± 2.12 | 2 of 2 | 19.50 ± 14.85 |" in row
    assert "pole 12.00 ± 11.31" in text
