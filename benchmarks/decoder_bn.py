"""Why DAFormer's decoder falls behind with a BatchNorm encoder on the embedded benchmark: its
BatchNorm statistics, gathered on source and mixed batches, do not fit the target.

    python benchmarks/decoder_bn.py --out /work/acc          # the three pretrained daformer runs

For each finished stage-1 run with the daformer decoder (``benchmarks/decoder.py``'s
``stage1_daformer`` rows under ``--out``, pretrained regime by default), the EMA model is read twice
on target val (the run's own first ``--images`` images, as its training-time evaluation):

- as trained: D's BatchNorm layers with their running statistics (what the run reports);
- with D's BatchNorm statistics re-estimated on ``--images`` target *train* images (cumulative
  averages of batch statistics, one image at a time; no weight changes, no labels).

Beside each, the share of target-train pixels whose top probability reaches the pseudo-label
threshold (0.968): the share that sets the pseudo-labels' weight in self-training. If
re-estimation lifts both, the teacher's target predictions were held back by statistics that do not
fit the target, not by what D learned. Writes ``benchmarks/results/decoder_bn.json`` and the
``decoder_bn`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine_info, markdown_table, mean_std_text, write_json, write_section  # noqa: E402

THRESHOLD = 0.968  # the self-training methods' pseudo_threshold


def _predict(model, image):
    from iccld.evaluation.evaluate import make_predict_fn

    return make_predict_fn(model, path="direct", steps=None, samples=1, generator=None)(image.unsqueeze(0))


def confident_share(model, dataset, images: int) -> float:
    """Share of the pixels of the first ``images`` of ``dataset`` with top probability >= THRESHOLD."""
    import torch

    model.eval()
    hits = total = 0
    with torch.no_grad():
        for i in range(min(images, len(dataset))):
            top = _predict(model, dataset[i]["image"]).softmax(1).amax(1)
            hits += int((top >= THRESHOLD).sum())
            total += top.numel()
    return hits / total


def reestimate_decoder_norms(model, dataset, images: int) -> int:
    """Replace the running statistics of D's BatchNorm layers by the average of their batch
    statistics over the first ``images`` of ``dataset``; returns how many layers changed."""
    import torch
    from torch import nn

    norms = [m for m in model.decoder.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.eval()
    for m in norms:
        m.train()
    with torch.no_grad():
        for i in range(min(images, len(dataset))):
            _predict(model, dataset[i]["image"])
    model.eval()
    return len(norms)


def diagnose(run: Path, images: int) -> dict:
    from iccld.data.build import build_val_dataset
    from iccld.evaluation.evaluate import evaluate_model
    from iccld.evaluation.loading import load_models

    loaded = load_models(str(run), "ema")
    model, config = loaded.models["ema"], loaded.config
    val = build_val_dataset(config.data)
    train = build_val_dataset(config.data, split="train")  # the target's train images, whole, unlabelled use
    before = evaluate_model(model, val, max_images=images, progress=False).summary()["miou"]
    share_before = confident_share(model, train, images)
    layers = reestimate_decoder_norms(model, train, images)
    after = evaluate_model(model, val, max_images=images, progress=False).summary()["miou"]
    share_after = confident_share(model, train, images)
    return {"run": str(run), "layers": layers, "val_miou": before, "val_miou_reestimated": after,
            "confident": share_before, "confident_reestimated": share_after}


def render(result: dict) -> str:
    meta, rows = result["meta"], result["runs"]
    table = [[Path(r["run"]).name, f"{r['val_miou']:.2f}", f"{r['val_miou_reestimated']:.2f}",
              f"{100 * r['confident']:.2f}", f"{100 * r['confident_reestimated']:.2f}"] for r in rows]
    if len(rows) > 1:
        table.append(["mean ± std", mean_std_text([r["val_miou"] for r in rows]),
                      mean_std_text([r["val_miou_reestimated"] for r in rows]),
                      mean_std_text([100 * r["confident"] for r in rows]),
                      mean_std_text([100 * r["confident_reestimated"] for r in rows])])
    return "\n".join([
        "DAFormer's decoder with the ImageNet MobileNetV2 encoder, stage 1 (`benchmarks/decoder_bn.py`): the "
        "finished runs' EMA models as trained, and with only D's BatchNorm statistics re-estimated on "
        f"{meta['images']} target train images (no weights changed). mIoU on the first {meta['images']} target "
        f"val images; confident share: target-train pixels whose top probability reaches {THRESHOLD} (what "
        "the pseudo-labels' weight counts).", "",
        f"Measured {meta['date']} on {meta['machine']['cpu']} ({meta['machine']['logical_cores']} cores), "
        f"command `{meta['command']}`, {meta['minutes']} min.", "",
        markdown_table(["run", "val mIoU, as trained", "val mIoU, D's statistics on target", "confident %, as trained",
                        "confident %, D's statistics on target"], table), ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/accuracy", help="decoder.py's --out")
    parser.add_argument("--runs", nargs="+", default=["pretrained/full/stage1_daformer_s0",
                                                      "pretrained/full/stage1_daformer_s1",
                                                      "pretrained/full/stage1_daformer_s2"],
                        help="run folders under --out")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--json", default=str(RESULTS / "decoder_bn.json"))
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    started = time.time()
    missing = [r for r in args.runs if not (Path(args.out) / r / "results.json").is_file()]
    if missing:
        print(f"decoder_bn.py: {Path(args.out) / missing[0]}: not a finished run "
              "(train it with benchmarks/decoder.py)", file=sys.stderr)
        return 2
    rows = [diagnose(Path(args.out) / r, args.images) for r in args.runs]
    result = {"meta": {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "images": args.images,
                       "machine": machine_info("cpu"),
                       "command": " ".join(["python benchmarks/decoder_bn.py",
                                            *(argv if argv is not None else sys.argv[1:])]),
                       "minutes": round((time.time() - started) / 60, 1)},
              "runs": rows}
    write_json(Path(args.json), result)
    text = render(result)
    if not args.no_doc:
        write_section("decoder_bn", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
