"""benchmarks/decoder.py's paired deltas and benchmarks/paper_configs.py's config list and table."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import decoder  # noqa: E402
import paper_configs  # noqa: E402

MACHINE = {"cpu": "test cpu", "logical_cores": 2}


def _run(row, seed, test, val=0.0):
    return {"regime": "scratch", "row": row, "seed": seed, "test": test, "val": val,
            "thin": {c: 1.0 for c in decoder.THIN}, "seconds": 1.0}


def test_decoder_deltas_are_paired_by_seed():
    runs = [_run("stage1", 0, 10.0), _run("stage1", 1, 20.0), _run("stage1_daformer", 1, 23.0),
            _run("stage1_daformer", 0, 9.0)]
    assert sorted(decoder._paired(runs, "scratch", "stage1_daformer", "stage1")) == [-1.0, 3.0]
    text = decoder.render({"meta": {"date": "d", "machine": MACHINE, "command": "c", "minutes": 1,
                                    "regimes": ["scratch"]}, "runs": runs})
    row = next(line for line in text.splitlines() if line.startswith("| stage 1, daformer"))
    assert "| 16.00 ± 9.90 |" in row and "| 1.00 ± 2.83 | 1 of 2 |" in row


def test_paper_configs_cover_every_paper_config_stage1_first():
    names = paper_configs.default_configs()
    assert "gta5_cityscapes/stage1.yaml" in names and "synthia_cityscapes/stage2_mic.yaml" in names
    assert not any(n.endswith(("base.yaml", "hrda.yaml")) for n in names)
    assert "gta5_cityscapes/hrda_stage2.yaml" in names
    first_stage2 = min(i for i, n in enumerate(names) if "stage2" in Path(n).stem)
    assert all("stage2" not in Path(n).stem for n in names[:first_stage2])
    assert all("stage2" in Path(n).stem for n in names[first_stage2:])


def test_every_stage2_config_starts_from_its_own_stage1_run():
    names = [Path(n).stem for n in paper_configs.default_configs()]
    assert paper_configs.stage1_of("hrda_stage2_mic") == "hrda_stage1_mic"
    assert paper_configs.stage1_of("stage2") == "stage1" and paper_configs.stage1_of("hrda_oracle") is None
    assert all(paper_configs.stage1_of(n) in names for n in names if "stage2" in n)


def test_paper_configs_table_names_failures():
    result = {"meta": {"date": "d", "machine": MACHINE, "command": "c", "minutes": 2, "iterations": 2},
              "runs": [{"config": "gta5_cityscapes/stage1.yaml", "ok": True, "seconds": 494.0,
                        "iteration_s": 155.67, "peak_rss_gib": 12.66},
                       {"config": "gta5_cityscapes/stage2.yaml", "ok": False, "error": "boom", "seconds": 3.0}]}
    lines = paper_configs.render(result).splitlines()
    assert "| `configs/gta5_cityscapes/stage1.yaml` | yes | 155.7 | 12.7 | 494 |  |" in lines
    result["runs"][0]["note"] = "beside make demo"
    assert "| 494 |  (beside make demo) |" in paper_configs.render(result)
    assert "| `configs/gta5_cityscapes/stage2.yaml` | no: boom | – | – | 3 |  |" in lines


def test_fixed_steps_section_is_rendered_from_the_committed_results():
    import json

    import common
    import fixed_steps_speed

    results = json.loads((BENCHMARKS / "results" / "fixed_steps_speed.json").read_text())
    begin, end = common.markers("fixed_steps")
    text = common.DOC.read_text()
    section = text[text.index(begin) + len(begin): text.index(end)].strip()
    assert section == fixed_steps_speed.render(results).strip()
    assert "| cpu | 8x16 | 4 | 1 | 10.05 | 6.16 | 1.75x | 1.15x | yes |" in section
