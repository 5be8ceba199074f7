"""benchmarks/onnx_speed.py: the committed docs section is what the script renders from its committed JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402
import onnx_speed  # noqa: E402


def test_docs_section_is_rendered_from_the_committed_results():
    results = json.loads((BENCHMARKS / "results" / "onnx_speed.json").read_text())
    begin, end = common.markers("onnx_speed")
    text = common.DOC.read_text()
    section = text[text.index(begin) + len(begin): text.index(end)].strip()
    assert section == onnx_speed.render(results).strip()
    rows = results["rows"]
    # every size x thread count x path, each measured on both sides with the same noise
    assert {(tuple(r["size_wh"]), r["threads"], r["path"]) for r in rows} == {
        (size, t, path) for size in onnx_speed.SIZES for t in {r["threads"] for r in rows}
        for path in ("direct", "diffusion")}
    for r in rows:
        assert r["argmax_identical_percent"] >= 99.9 and r["max_abs_logit_diff"] < 1e-3
        assert f"{r['onnx_over_pytorch']:.2f}x" in section
