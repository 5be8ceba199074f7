"""benchmarks/ddp.py: the committed docs section is what the script renders from its committed JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402
import ddp  # noqa: E402


def test_docs_section_is_rendered_from_the_committed_results():
    results = json.loads((BENCHMARKS / "results" / "ddp.json").read_text())
    begin, end = common.markers("ddp")
    text = common.DOC.read_text()
    section = text[text.index(begin) + len(begin): text.index(end)].strip()
    assert section == ddp.render(results).strip()
    two = results["two_processes"]
    assert two["world_size"] == 2 and results["one_process"]["world_size"] == 1
    assert two["batch_per_process"] * 2 == results["one_process"]["batch_per_process"]  # same global batch
    assert f"**{two['ratio_ddp_to_allreduce']:.2f}**" in section
