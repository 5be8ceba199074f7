"""Render the "GPU" section of docs/benchmarks.md from benchmarks/results/gpu.json.

    python benchmarks/write_gpu_section.py [--json PATH] [--doc PATH]

gpu.json is written by gpu_check.py on a machine with a CUDA GPU (see gpu_check.sh). Until a CUDA
result exists the section says "not yet measured on a GPU"; a ``--tiny`` or CPU run of gpu_check.py
(a test of its code path) never counts as a GPU measurement. speed.py also rewrites this section.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import DOC, RESULTS, BenchmarkError, markdown_table, write_section

GPU_JSON = RESULTS / "gpu.json"
DAFORMER_MEMORY_GB = 9.7  # DAFormer (MiT-B5, 512x512, batch 2 + 2), its paper's reported training memory

HOW_TO_RUN = ("Run `bash benchmarks/gpu_check.sh` on a machine with one CUDA GPU (about 5 minutes), "
              "copy its `benchmarks/results/gpu.json` here and run `python benchmarks/write_gpu_section.py`.")


def load_gpu_result(path: Path = GPU_JSON) -> dict | None:
    """The gpu_check.py result at ``path``, or None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchmarkError(f"{path}: not a readable JSON file ({exc}); rerun benchmarks/gpu_check.sh") from None
    if not isinstance(data, dict) or "training" not in data or "machine" not in data:
        raise BenchmarkError(f"{path}: not a gpu_check.py result (no 'training'/'machine' keys)")
    return data


def is_gpu_measurement(result: dict | None) -> bool:
    return bool(result) and not result.get("tiny") and str(result.get("device", "")).startswith("cuda")


def render_gpu_section(result: dict | None) -> str:
    """Markdown for the GPU section; "not yet measured on a GPU" unless ``result`` is a CUDA run."""
    if not is_gpu_measurement(result):
        return "\n".join(["## GPU (paper scale)", "", "Not yet measured on a GPU.", "", HOW_TO_RUN])
    m, s = result["machine"], result["settings"]
    sanity = result["sanity"]
    lines = [
        "## GPU (paper scale)", "",
        f"Measured {m['date']} with `{m['command']}` on **{m['gpu']}** (CUDA {m.get('cuda')}, torch "
        f"{m['torch']}). Model: `{s['preset']}` preset ({s['backbone']}, random init), "
        f"{s['crop_hw'][0]}x{s['crop_hw'][1]} crops, batch {s['batch_size']} source + "
        f"{s['batch_size']} target, {result['precision']} autocast; random tensors as data.", "",
        f"Sanity check, CUDA + {result['precision']} autocast: finite losses in every iteration "
        f"**{'yes' if sanity['all_losses_finite'] else 'NO'}**, finite predict logits "
        f"**{'yes' if sanity.get('all_logits_finite') else 'NO'}**.", "",
        "### Training iteration", "",
    ]
    rows = []
    for name, v in result["training"].items():
        rows.append([name, f"{v['median_ms']:.0f}", f"{v['ratio_to_source_only']:.2f}x",
                     f"{v['peak_memory_gb']:.2f}", "yes" if v["losses_finite"] else "NO"])
    lines += [markdown_table(["method", "ms / iteration (median)", "x source_only",
                              "peak memory (GB, max_memory_allocated)", "finite losses"], rows), ""]
    ref = result.get("reference", {}).get("daformer_peak_memory_gb", DAFORMER_MEMORY_GB)
    lines += [f"Published figure to compare with: DAFormer trains at this setting in {ref} GB.", ""]
    p = result["predict"]
    w, h = p["size_wh"]
    lines += [f"### Inference latency (`ICCLD.predict`, batch 1, {w}x{h} W x H, N=1 draw)", ""]
    rows = [["stage-1 path D(z0)" if r["steps"] is None else "diffusion", r["steps"] or "-",
             f"{r['median_ms']:.1f}", f"{r['ratio_to_stage1']:.2f}x", f"{r['peak_memory_gb']:.2f}"]
            for r in p["rows"]]
    lines += [markdown_table(["path", "K steps", "ms (median)", "x stage-1 path", "peak memory (GB)"], rows)]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="render the GPU section of docs/benchmarks.md from gpu.json")
    p.add_argument("--json", type=Path, default=GPU_JSON)
    p.add_argument("--doc", type=Path, default=DOC)
    args = p.parse_args(argv)
    try:
        result = load_gpu_result(args.json)
        write_section("gpu", render_gpu_section(result), args.doc)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = "from " + str(args.json) if is_gpu_measurement(result) else "(not yet measured on a GPU)"
    print(f"wrote the gpu section of {args.doc} {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
