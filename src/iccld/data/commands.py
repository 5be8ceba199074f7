"""``iccld prepare``: the command line edge of :mod:`iccld.data.prepare` and the synthetic generator.

Kept apart from both so that neither imports the other (the generator prepares what it writes).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .prepare import prepare_dataset


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size: expected WIDTHxHEIGHT such as 256x128, got '{text}'") from None
    if w <= 0 or h <= 0:
        raise ConfigError(f"--size: width and height must be > 0, got '{text}'")
    return w, h


def prepare_command(args) -> int:
    """The ``iccld prepare`` subcommand (arguments: see iccld.cli)."""
    if args.kind == "synthetic":
        if not args.out:
            raise ConfigError("iccld prepare synthetic: --out is required (the folder to write to)")
        from ..outputs import check_output_dir
        from .synthetic import generate  # lazy: the generator pulls in the scene code

        if not (Path(args.out) / "benchmark.json").is_file():  # a finished one may sit on a read-only disk
            check_output_dir(args.out)  # a file in the way, read-only, full: before minutes of generating

        result = generate(out=args.out, seed=args.seed, num_source=args.num_source,
                          num_target=args.num_target, num_val=args.num_val, num_test=args.num_test,
                          size=_parse_size(args.size), workers=args.workers)
        status = result.get("status", "generated") if isinstance(result, dict) else "generated"
        print(f"synthetic benchmark in {args.out}: {status}")
        return 0
    if not args.root:
        raise ConfigError(f"iccld prepare {args.kind}: --root is required (the dataset folder)")
    s = prepare_dataset(args.kind, args.root, workers=args.workers, spec=args.spec,
                        overwrite=args.overwrite)
    for line in s["layout"]:
        print(f"{args.kind} {line}")
    if s["converted"] == 0 and s["checked"] == 0 and s["seconds"] == 0.0:
        print(f"{args.kind}: all {s['labels']} labels in {s['root']} are already prepared "
              f"(--overwrite recomputes them)")
    else:
        print(f"{args.kind}: {s['labels']} labels ({s['converted']} converted, {s['existing']} already "
              f"prepared, {s['checked']} checked) in {s['seconds']:.1f} s "
              f"({s['images_per_second']:.1f}/s); class statistics in {s['stats_file']}")
    return 0
