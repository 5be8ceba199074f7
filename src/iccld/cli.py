"""The ``iccld`` command line: a thin layer that parses arguments and calls the package.

Every user-facing failure is an :class:`~iccld.errors.ICCLDError` or an ``OSError`` from the
environment (a full or read-only disk, a file where a folder should be); :func:`main` prints it as
one line naming the path and the problem, and the exit status is 2. ``--debug`` (anywhere on the
line) shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from .data.kinds import kind_names
from .errors import ConfigError, ICCLDError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# set before torch loads OpenMP: idle threads sleep instead of spinning (spinning on a busy CPU
# makes small convolutions many times slower)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="convert a dataset's labels to train ids once, or generate "
                       "the embedded synthetic benchmark")
    p.add_argument("kind", choices=kind_names())
    p.add_argument("--root", help="dataset folder in its original layout (all kinds but synthetic)")
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
    p = sub.add_parser("train", help="train one method (the config's method.name) from a config")
    p.add_argument("--config", required=True, help="YAML config, e.g. configs/synthetic/stage1.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.max_iters=100")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--max-iters", type=int, help="shorthand for trainer.max_iters=N")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from last.ckpt")
    p.add_argument("--overwrite", action="store_true", help="start over in a run folder that holds a run")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="mIoU and per-class IoU of a checkpoint on a split")
    p.add_argument("--checkpoint", required=True,
                   help="run folder, last.ckpt, save_pretrained folder, Hub repo id USER/NAME[@REV] or "
                   "a .onnx file of `iccld export --onnx` (run with onnxruntime)")
    p.add_argument("--config", help="config naming the dataset (default: the one saved with the checkpoint)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    p.add_argument("--split", help="replaces data.val.split (default: the config's, e.g. val; test for "
                   "the held-out split)")
    p.add_argument("--steps", type=int, help="DDIM sampling steps K (default: model.sampling_steps)")
    p.add_argument("--samples", type=int, help="noise draws averaged per image (default 1)")
    p.add_argument("--direct", action="store_true", help="evaluate the stage-1 path D(z0), no diffusion")
    p.add_argument("--slide", action="store_true", help="sliding-window inference")
    p.add_argument("--which", choices=["model", "ema", "both"], default="ema")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    p.add_argument("--max-images", type=_count, default=0, help="evaluate only the first N images (0: all)")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--confusion", action="store_true",
                   help="also list, per class, what its pixels were predicted as (kept in --json as \"confusion\")")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score a folder of predicted train-id PNGs against ground truth")
    p.add_argument("--pred", required=True)
    p.add_argument("--gt", required=True)
    p.add_argument("--subsets", action="store_true", help="also report the SYNTHIA 16/13-class means")
    p.add_argument("--json", help="write the results to this JSON file")
    p.add_argument("--confusion", action="store_true",
                   help="also list, per class, what its pixels were predicted as (kept in --json as \"confusion\")")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="segment images (train-id PNG, colour PNG, overlay, uncertainty) "
                       "and videos (overlay video, train-id PNG per frame)")
    p.add_argument("inputs", nargs="+", help="images, videos (.mp4 .webm .avi .gif; needs iccld[video]) or "
                   "folders of them")
    p.add_argument("--checkpoint", required=True,
                   help="run folder, last.ckpt, save_pretrained folder, Hub repo id USER/NAME[@REV] or "
                   "a .onnx file of `iccld export --onnx` (run with onnxruntime)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int)
    p.add_argument("--samples", type=int, help="noise draws per image (default 1; 2+ adds the uncertainty map of an image)")
    p.add_argument("--direct", action="store_true", help="use the stage-1 path D(z0), no diffusion")
    p.add_argument("--which", choices=["model", "ema"], default="ema")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    p.add_argument("--format", choices=["images", "submission"], default="images",
                   help="images: train-id, colour, overlay PNGs; submission: what the Cityscapes or ACDC "
                   "test server scores, and OUT/submission.zip")
    p.add_argument("--benchmark", choices=["cityscapes", "acdc"],
                   help="--format submission: the server (default: told by the image names)")

    p.add_argument("--native-size", action="store_true",
                   help="run at each image's own size instead of the training config's data.val.resize "
                   "(outputs are written at the input's size either way)")
    g = p.add_argument_group("videos", "each video gives OUT/NAME_overlay.EXT at its size and frame rate; "
                             "frames are decoded, predicted and encoded one at a time")
    g.add_argument("--frames", action="store_true",
                   help="also write a train-id PNG per frame: OUT/NAME_frames/NAME_000000_trainid.png, ...")
    g.add_argument("--smooth", type=float, metavar="ALPHA",
                   help="average the class probabilities over frames, ALPHA the weight of the past "
                   "(e.g. 0.5; less flicker, slower to follow motion); default 0: each frame on its own")


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a finished run's EMA model, config, provenance and model card "
                       "to a folder ready for the Hugging Face Hub")
    p.add_argument("run", help="run folder of `iccld train` (finished: it holds final/ and results.json)")
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument("--repo-id", help="USER/NAME the model will have on the Hub (used in the model card)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    g = p.add_argument_group("ONNX (needs pip install 'iccld[onnx]')")
    g.add_argument("--onnx", action="store_true", help="also write model.onnx (the diffusion path, its noise an "
                   "input) and model_direct.onnx (the stage-1 path), checked against PyTorch on the config's val images")
    g.add_argument("--steps", type=int, help="DDIM steps K unrolled into model.onnx (default: model.sampling_steps)")
    g.add_argument("--check-images", nargs="+", metavar="IMAGE",
                   help="check on these images or folders instead of the val set (no labels: no mIoU difference)")
    g.add_argument("--check-max-images", type=_count, default=0, metavar="N",
                   help="check on the first N val images (0: all)")


def _add_push(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push", help="upload an exported model folder to the Hugging Face Hub")
    p.add_argument("folder", help="a folder written by `iccld export`")
    p.add_argument("--repo-id", required=True, help="USER/NAME on the Hub (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", help="branch to upload to (default: main)")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: benchmark, three methods, evaluation and report")
    p.add_argument("--out", default="demo", help="folder for the benchmark, runs and report")
    p.add_argument("--quick", action="store_true", help="a much shorter schedule (for tests)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace a report.md, grid.png or curves.png "
                   "in --out that the demo did not write")
    p.add_argument("--pretrained", metavar="WEIGHTS",
                   help="train with the ImageNet MobileNetV2 encoder (configs/synthetic_pretrained): a "
                        "save_pretrained folder or the Hub id google/mobilenet_v2_1.0_224 (needs internet once); "
                        "its runs go to OUT/runs-pretrained")


def _add_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="a local web demo of a model (Gradio; pip install 'iccld[app]')")
    p.add_argument("model", help="run folder, exported folder or Hub repo id USER/NAME[@REV]")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, help="port to serve on (default: Gradio's, 7860)")


def _count(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with iccld's one-line errors (exit status 2): the usage is behind ``--help``. An
    argument taken for an unknown option but naming an existing file (``-dash.png``) gets the two
    ways to pass it."""

    argv: list[str] = []  # what main() parses, for the hint below

    def error(self, message: str):
        for word in self.argv:
            if word.startswith("-") and not word.startswith("--") and len(word) > 2 and Path(word).exists():
                message += f" ({word} is a file: write ./{word}, or put it after --)"
                break
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="iccld", description="ICCLD: domain-adaptive semantic segmentation with latent diffusion")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"iccld {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="{prepare,train,evaluate,predict,score,export,push,demo,app}")
    sub.required = True
    for add in (_add_prepare, _add_train, _add_evaluate, _add_predict, _add_score, _add_export, _add_push,
                _add_demo, _add_app):
        add(sub)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "prepare":
        from .data.commands import prepare_command
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
    if args.command == "export":
        from .hub import export_command
        return export_command(args)
    if args.command == "push":
        from .hub import push_command
        return push_command(args)
    if args.command == "demo":
        from .demo import demo_command
        return demo_command(args)
    if args.command == "app":
        from .app import app_command
        return app_command(args)
    raise AssertionError(args.command)


def one_line(exc: BaseException) -> str:
    """The message of an ICCLDError or OSError as one line.

    An error raised in a DataLoader worker arrives re-raised by torch with the worker's traceback in
    its message ("Caught DataError in DataLoader worker process 0. Original Traceback ..."); its last
    line holds the original message. An OSError gives "<path>: <problem>".
    """
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return (f"{where}too many open files (this shell allows {limit}, `ulimit -n`); lower data.num_workers "
                "or raise the limit")
    if isinstance(exc, OSError) and exc.strerror is not None:
        where = exc.filename if exc.filename is not None else ""
        if exc.filename2 is not None:
            where = f"{where} -> {exc.filename2}"
        problem = exc.strerror or str(exc) or type(exc).__name__  # "No space left on device"
        problem = problem[:1].lower() + problem[1:]
        return f"{where}: {problem}" if where else problem
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        prefix = f"{type(exc).__module__}.{type(exc).__name__}: "
        text = last[len(prefix):] if last.startswith(prefix) else last.partition(": ")[2] or last
    return " ".join(text.split("\n")).strip()


MIN_ADDRESS_SPACE = 2**30  # `import torch` aborts below ~0.8 GiB of address space (measured, torch 2.13)


def _address_space_limit() -> int | None:
    """The soft RLIMIT_AS in bytes (``ulimit -v``), None when unlimited or unknown."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def _out_of_memory(exc: BaseException) -> bool:
    """torch's allocators (CPU and CUDA) and Python report memory exhaustion with these messages."""
    text = str(exc)
    return isinstance(exc, MemoryError) or any(s in text for s in (
        "out of memory", "can't allocate memory", "DefaultCPUAllocator", "Cannot allocate memory"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    _Parser.argv = argv
    args = build_parser().parse_args(argv)
    limit = _address_space_limit()
    if limit is not None and limit < MIN_ADDRESS_SPACE:  # PyTorch would abort while loading
        print(f"iccld {args.command}: error: the address-space limit (ulimit -v) is {limit // 2**20} MiB; "
              f"PyTorch needs at least {MIN_ADDRESS_SPACE // 2**30} GiB to load: raise the limit", file=sys.stderr)
        return 2
    try:
        seed = getattr(args, "seed", 0)
        if not 0 <= seed < 2 ** 63:  # torch.Generator takes a 64-bit seed
            raise ConfigError(f"--seed: must be in 0..2**63-1, got {seed}")
        return int(_dispatch(args) or 0)
    except (ICCLDError, OSError) as exc:
        if debug:
            raise
        print(f"iccld {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, ICCLDError) else 2
    except (RuntimeError, MemoryError) as exc:
        if debug or not _out_of_memory(exc):
            raise
        print(f"iccld {args.command}: error: out of memory ({one_line(exc)[:160]}); lower trainer.batch_size, "
              "data.crop_size or the image size (data.*.resize), or free memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"iccld {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
