"""The accuracy benchmark's summary and findings (no training: hand-made run records)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import accuracy  # noqa: E402


def _run(method, seed, ema):
    return {"method": method, "seed": seed, "miou": {"ema": ema, "model": ema - 0.5}}


def test_paired_deltas_match_seeds():
    runs = [_run("stage1", 0, 15.0), _run("stage1", 1, 12.0), _run("stage1", 2, 14.0),
            _run("stage2", 0, 16.0), _run("stage2", 2, 14.5)]  # seed 1 of stage 2 missing
    assert accuracy.paired_deltas(runs, "stage2", "stage1") == pytest.approx([1.0, 0.5])


def test_findings_report_gap_closure_spread_and_paired_deltas():
    runs = [_run("source_only", s, 8.0 + s) for s in range(3)]
    runs += [_run("oracle", s, 24.0 + s) for s in range(3)]
    runs += [_run("stage1", s, v) for s, v in enumerate([17.0, 14.0, 16.0])]
    runs += [_run("stage2", s, v) for s, v in enumerate([18.0, 15.0, 16.5])]
    lines = accuracy.findings(accuracy.summarise(runs), runs)
    text = "\n".join(lines)
    # gap: source-only 9, oracle 25, ICCLD 16.5 -> (16.5 - 9) / 16 = 47%
    assert "closes **47%**" in text and "NOT reached" in text
    full = next(line for line in lines if line.startswith("- Full ICCLD (stage 2) over stage 1"))
    # +0.83 mean, the largest std (1.53) is bigger: not beyond the spread, but better on every seed
    assert "+0.83 mIoU" in full and "NOT beyond the seeds' spread" in full
    assert "paired by seed +0.83 ± 0.29, 3 of 3 seeds better" in full
