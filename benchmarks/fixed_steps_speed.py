"""What the fixed-step runner (``iccld.diffusion.fixed_steps``, ``LatentDiffusion.fast_sampling``)
saves over diffusers' generic ``UNet2DModel.forward``, on the CPU.

    python benchmarks/fixed_steps_speed.py            # about a minute on 2 shared cores
    python benchmarks/fixed_steps_speed.py --quick

Times, round-robin on one thread (what the commands use for inputs of this size), with
``fast_sampling`` on and off: the K-step sampling loop alone (``LatentDiffusion.sample``) and the
whole prediction (``ICCLD.predict``: E, the loop, D), for the ``cpu`` preset on one 256x128 image
(latent 8x16) at K = 4 and 10 with 1 and 4 noise draws, and for the ``paper`` preset's denoiser
alone on a 512x512 image's latent (32x32, MiT-B5's stride 16), randomly initialised. Prints a table
and writes benchmarks/results/fixed_steps_speed.json and the ``fixed_steps`` section of
docs/benchmarks.md (``--render`` rewrites the section from the committed JSON without measuring).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from common import RESULTS, machine_info, markdown_table, paired_ratio, time_interleaved, write_section

from iccld.io import build_model_from_config
from iccld.presets import preset


def workloads(model, x, steps, draws):
    """``loop`` and ``predict`` with the runner on and off, on the same inputs and noise seed."""
    z0, _ = model.encode(x)

    def run(fast, what):
        def call():
            model.diffusion.fast_sampling = fast
            g = torch.Generator().manual_seed(0)
            if what == "loop":
                return model.diffusion.sample(z0, steps, draws, generator=g)
            return model.predict(x, steps=steps, samples=draws, generator=g)
        return call

    return {f"{what}_{'fast' if fast else 'generic'}": run(fast, what)
            for what in ("loop", "predict") for fast in (True, False)}


def render(results: dict) -> str:
    m = results["machine"]
    rows = [[r["model"], f"{r['latent'][0]}x{r['latent'][1]}", r["K"], r["draws"],
             f"{r['loop_generic_ms']:.2f}", f"{r['loop_fast_ms']:.2f}", f"{r['loop_speedup']:.2f}x",
             f"{r['predict_speedup']:.2f}x" if "predict_speedup" in r else "–", "yes" if r["same_output"] else "NO"]
            for r in results["rows"]]
    return "\n".join([
        "The fixed-step runner (`iccld.diffusion.fixed_steps`, on by default through `fast_sampling`) against "
        f"diffusers' generic `UNet2DModel.forward` (diffusers {results['diffusers']}), paired medians on one thread.",
        "",
        f"Measured {m['date']} on {m['cpu']} ({m['logical_cores']} cores, 1-minute load {m.get('load_average_1m', '?')}: "
        f"not a quiet machine), command `{m['command']}`.", "",
        markdown_table(["model", "latent", "K", "draws", "loop generic (ms)", "loop fast (ms)", "loop speed-up",
                        "whole predict speed-up", "same output"], rows), ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--render", action="store_true", help="rewrite the docs section from the committed JSON")
    args = parser.parse_args()
    if args.render:
        write_section("fixed_steps", render(json.loads((RESULTS / "fixed_steps_speed.json").read_text())))
        return
    warmup, repeats = (1, 5) if args.quick else (3, 20)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows, results = [], {"machine": machine_info(), "diffusers": __import__("diffusers").__version__, "rows": []}
    cases = [("cpu", (128, 256), steps, draws) for steps in (4, 10) for draws in (1, 4)]
    cases.append(("paper-denoiser", (512, 512), 4, 1))
    with torch.no_grad():
        for name, (h, w), steps, draws in cases:
            cfg = preset("cpu") if name == "cpu" else dataclasses.replace(preset("paper"), backbone="mit-tiny")
            model = build_model_from_config(cfg).eval()
            for p in model.denoiser.parameters():  # as after training: every weight matters
                torch.nn.init.normal_(p, std=0.02)
            x = torch.randn(1, 3, h, w)
            fns = workloads(model, x, steps, draws)
            if name != "cpu":  # the paper-size denoiser: the loop only (E and D are not the subject)
                fns = {k: v for k, v in fns.items() if k.startswith("loop")}
            t = time_interleaved(fns, warmup, repeats)
            same = torch.equal(fns["loop_fast"](), fns["loop_generic"]()) or torch.allclose(
                fns["loop_fast"](), fns["loop_generic"](), atol=1e-5, rtol=0)
            row = {"model": name, "latent": list(model.encode(x)[0].shape[-2:]), "K": steps, "draws": draws,
                   "same_output": bool(same),
                   **{f"{k}_ms": round(v.median * 1e3, 2) for k, v in t.items()},
                   "loop_speedup": round(paired_ratio(t["loop_generic"], t["loop_fast"]), 2)}
            if "predict_fast" in t:
                row["predict_speedup"] = round(paired_ratio(t["predict_generic"], t["predict_fast"]), 2)
            results["rows"].append(row)
            rows.append(row)
            print(json.dumps(row))
    out = RESULTS / "fixed_steps_speed.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    write_section("fixed_steps", render(results))
    print(f"wrote {out} and docs/benchmarks.md")


if __name__ == "__main__":
    main()
