"""benchmarks/comparison.py: the rows a request trains, and earlier invocations' runs merged."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import comparison  # noqa: E402
import decoder  # noqa: E402
import hrda  # noqa: E402

MACHINE = {"cpu": "test cpu", "logical_cores": 2}


def _run(regime, row, seed, test):
    return {"regime": regime, "row": row, "seed": seed, "test": test, "val": test,
            "per_class": {c: 0.0 for c in hrda.THIN}, "seconds": 1.0}


def test_a_stage2_row_brings_its_own_stage1_row_in_table_order():
    assert comparison.wanted_rows(hrda.ROWS, ["stage2_hrda"]) == ["stage1_hrda", "stage2_hrda"]
    assert comparison.wanted_rows(decoder.ROWS, ["stage2_daformer_tb", "stage1"]) == [
        "stage1", "stage1_daformer_tb", "stage2_daformer_tb"]


def test_earlier_runs_fill_in_only_what_this_invocation_lacks():
    new = [_run("scratch", "stage1", 1, 10.0)]
    earlier = {"meta": {"date": "2026-12-01", "command": "python benchmarks/hrda.py --seeds 0 1"},
               "runs": [_run("scratch", "stage1", 0, 5.0), _run("scratch", "stage1", 1, 99.0)]}
    merged = comparison.merge_runs(new, [earlier])
    assert [(r["seed"], r["test"]) for r in merged] == [(1, 10.0), (0, 5.0)]  # seed 1: this run, not 99
    assert merged[1]["measured"] == {"date": "2026-12-01", "command": "python benchmarks/hrda.py --seeds 0 1"}
    again = comparison.merge_runs([], [{"meta": {"date": "later", "command": "x"}, "runs": merged}])
    assert again[0]["measured"]["date"] == "later" and again[1]["measured"]["date"] == "2026-12-01"
    meta = {"date": "d", "machine": MACHINE, "command": "c", "minutes": 1}
    assert "; 1 run from `python benchmarks/hrda.py --seeds 0 1` of 2026-12-01)." in comparison.provenance(
        meta, merged)


def test_finished_only_with_merge_renders_the_earlier_table(tmp_path, monkeypatch):
    monkeypatch.setattr(hrda, "COMPARISON", dataclasses.replace(hrda.COMPARISON,
                                                                benchmark=lambda out: out / "benchmark_512"))
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"meta": {"date": "2026-12-01", "command": "old"},
                                   "runs": [_run("pretrained", "stage1", 0, 20.0),
                                            _run("pretrained", "stage1_hrda", 0, 23.0)]}))
    out = tmp_path / "result.json"
    code = hrda.main(["--out", str(tmp_path), "--finished-only", "--no-doc", "--regime", "scratch",
                      "--json", str(out), "--merge", str(earlier), "--weights", str(tmp_path)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["meta"]["regimes"] == ["scratch", "pretrained"] and len(result["runs"]) == 2
    assert "| stage 1, HRDA | 1 | 23.00 ± 0.00 | 23.00 ± 0.00 | 3.00 ± 0.00 | 1 of 1 |" in hrda.render(result)


def test_an_unreadable_merge_file_is_one_line_and_status_2(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert decoder.main(["--merge", str(bad), "--regime", "scratch", "--no-doc"]) == 2
    assert capsys.readouterr().err.startswith(f"decoder.py: {bad}: cannot read earlier results")
