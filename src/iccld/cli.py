"""The ``iccld`` command line: a thin layer that parses arguments and calls the package.

Every user-facing failure is an :class:`~iccld.errors.ICCLDError`; it is printed as one line and
the exit status is 2. ``--debug`` (anywhere on the line) shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import ICCLDError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# set before torch loads OpenMP: idle threads sleep instead of spinning (spinning on a busy CPU
# makes small convolutions many times slower)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="convert a dataset's labels to train ids once, or generate "
                       "the embedded synthetic benchmark")
    p.add_argument("kind", choices=["gta5", "synthia", "cityscapes", "folder", "synthetic"])
    p.add_argument("--root", help="dataset folder in its original layout (gta5, synthia, cityscapes, folder)")
    p.add_argument("--spec", help="folder datasets: YAML describing the layout and the label map")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes to use")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute prepared files (train-id PNGs, stats) that already exist")
    g = p.add_argument_group("synthetic benchmark")
    g.add_argument("--out", help="where to write the synthetic benchmark")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--num-source", type=int, default=2000)
    g.add_argument("--num-target", type=int, default=1000)
    g.add_argument("--num-val", type=int, default=300, help="labelled target val images (choose settings here)")
    g.add_argument("--num-test", type=int, default=300, help="held-out labelled target test images (report these)")
    g.add_argument("--size", default="256x128", help="WxH of the generated images")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one method (source_only, stage1, stage2, oracle) from a config")
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/synthetic/stage1.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_iters=100")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--max-iters", type=int, help="shorthand for trainer.max_iters=N")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.ckpt")
    p.add_argument("--overwrite", action="store_true", help="start over in a run folder that holds a run")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="mIoU and per-class IoU of a checkpoint on a split")
    p.add_argument("--checkpoint", required=True, help="run folder, last.ckpt or save_pretrained folder")
    p.add_argument("--config", help="config naming the dataset (default: the one saved with the checkpoint)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    p.add_argument("--split", help="replaces data.val.split (default: the config's, e.g. val; test for "
                   "the held-out split)")
    p.add_argument("--steps", type=int, help="DDIM sampling steps K (default: model.sampling_steps)")
    p.add_argument("--samples", type=int, default=1, help="noise draws averaged per image")
    p.add_argument("--direct", action="store_true", help="evaluate the stage-1 path D(z0), no diffusion")
    p.add_argument("--slide", action="store_true", help="sliding-window inference")
    p.add_argument("--which", choices=["model", "ema", "both"], default="ema")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    p.add_argument("--max-images", type=int, default=0, help="evaluate only the first N images")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--confusion", action="store_true",
                   help="also list, per class, what its pixels were predicted as (kept in --json as \"confusion\")")


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a folder of predicted train-id PNGs against ground truth")
    p.add_argument("--pred", required=True)
    p.add_argument("--gt", required=True)
    p.add_argument("--subsets", action="store_true", help="also report the SYNTHIA 16/13-class means")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--confusion", action="store_true",
                   help="also list, per class, what its pixels were predicted as (kept in --json as \"confusion\")")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment images: train-id PNG, colour PNG, overlay, uncertainty")
    p.add_argument("inputs", nargs="+", help="images or folders of images")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--direct", action="store_true", help="use the stage-1 path D(z0), no diffusion")
    p.add_argument("--which", choices=["model", "ema"], default="ema")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    p.add_argument("--native-size", action="store_true",
                   help="run at each image's own size instead of the training config's data.val.resize "
                   "(outputs are written at the input's size either way)")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: benchmark, three methods, evaluation and report")
    p.add_argument("--out", default="demo", help="folder for the benchmark, runs and report")
    p.add_argument("--quick", action="store_true", help="a much shorter schedule (for tests)")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iccld", description="ICCLD: domain-adaptive semantic segmentation with latent diffusion")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"iccld {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{prepare,train,evaluate,predict,score,demo}")
    sub.required = True
    for add in (_add_prepare, _add_train, _add_evaluate, _add_predict, _add_score, _add_demo):
        add(sub)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "prepare":
        from .data.prepare import prepare_command
        return prepare_command(args)
    if args.command == "train":
        from .training.commands import train_command
        return train_command(args)
    if args.command == "evaluate":
        from .evaluation.commands import evaluate_command
        return evaluate_command(args)
    if args.command == "predict":
        from .evaluation.commands import predict_command
        return predict_command(args)
    if args.command == "score":
        from .evaluation.commands import score_command
        return score_command(args)
    if args.command == "demo":
        from .demo import demo_command
        return demo_command(args)
    raise AssertionError(args.command)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    args = build_parser().parse_args(argv)
    try:
        return int(_dispatch(args) or 0)
    except ICCLDError as exc:
        if debug:
            raise
        print(f"iccld {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"iccld {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
