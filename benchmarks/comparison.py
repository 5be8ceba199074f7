"""The driver that ``benchmarks/decoder.py`` and ``benchmarks/hrda.py`` share: rows x seeds x regimes of
``accuracy.train_one``, each row naming the stage-1 row it starts from; finished runs reused (several
processes, each ``--no-doc`` on a share of the seeds or rows, can fill the run folders and a last call
writes the table); ``--merge`` keeps the runs of earlier invocations whose run folders are gone.

A script describes itself as a :class:`Comparison` and calls :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from accuracy import DEFAULT_WEIGHTS, REGIMES
from common import machine_info, write_json, write_section

# row -> (label, run key, config, stage-1 row it starts from, overrides)
Rows = dict[str, tuple[str, str, str, "str | None", tuple[str, ...]]]


@dataclass(frozen=True)
class Comparison:
    script: str  # "decoder.py": its command lines and messages
    section: str  # the docs/benchmarks.md section it writes
    rows: Rows
    default_json: Path
    benchmark: Callable[[Path], Path]  # --out -> the benchmark folder, generated when missing
    folder: Callable[[Path, str], Path]  # (--out, regime) -> where that regime's run folders are
    run_row: Callable[[str, Path, Path, str, int, str], dict]  # (regime, out, bench, row, seed, weights)
    render: Callable[[dict], str]


def wanted_rows(rows: Rows, asked: list[str]) -> list[str]:
    """``asked`` with the stage-1 row each one starts from, in the table's order."""
    wanted = set(asked) | {rows[r][3] for r in asked if rows[r][3]}
    return [r for r in rows if r in wanted]


def merge_runs(runs: list[dict], earlier: list[dict]) -> list[dict]:
    """``runs`` and, after them, each earlier invocation's run that has no run of the same regime, row
    and seed among ``runs``. ``earlier``: those invocations' JSON; every kept run says when it was
    measured and by which command."""
    have = {(r["regime"], r["row"], r["seed"]) for r in runs}
    kept = []
    for result in earlier:
        for run in result["runs"]:
            key = (run["regime"], run["row"], run["seed"])
            if key not in have:
                have.add(key)
                kept.append({"measured": run.get("measured") or {"date": result["meta"]["date"],
                                                                  "command": result["meta"]["command"]}, **run})
    return runs + kept


def provenance(meta: dict, runs: list[dict]) -> str:
    """The "Measured ..." sentence of a table: this invocation and, where runs were merged, theirs."""
    text = (f"Measured {meta['date']} on {meta['machine']['cpu']} ({meta['machine']['logical_cores']} cores), "
            f"command `{meta['command']}`, {meta['minutes']} min in this invocation (finished runs reused")
    earlier: dict[tuple[str, str], int] = {}
    for run in runs:
        if "measured" in run:
            key = (run["measured"]["date"], run["measured"]["command"])
            earlier[key] = earlier.get(key, 0) + 1
    for (date, command), count in earlier.items():
        text += f"; {count} run{'s' if count > 1 else ''} from `{command}` of {date}"
    return text + ")."


def main(comparison: Comparison, doc: str, argv: list[str] | None = None) -> int:
    c = comparison
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", default="runs/accuracy", help="the benchmark and run folders go under it")
    parser.add_argument("--regime", nargs="+", choices=list(REGIMES), default=list(REGIMES))
    parser.add_argument("--rows", nargs="+", choices=list(c.rows), default=list(c.rows))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--json", default=str(c.default_json))
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--finished-only", action="store_true",
                        help="train nothing: the table from the runs already finished under --out")
    parser.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                        help="earlier invocations' results: their runs are kept where this one has none "
                             "of the same regime, row and seed")
    args = parser.parse_args(argv)

    if "pretrained" in args.regime and not Path(args.weights).exists():
        print(f"{c.script}: {args.weights}: no such folder (the pretrained regime's MobileNetV2 weights)",
              file=sys.stderr)
        return 2
    earlier = []
    for path in args.merge:
        try:
            earlier.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as err:
            print(f"{c.script}: {path}: cannot read earlier results ({err})", file=sys.stderr)
            return 2
    out, started = Path(args.out), time.time()
    bench = c.benchmark(out)
    runs = []
    for regime in args.regime:
        for seed in args.seeds:
            for row in wanted_rows(c.rows, args.rows):
                finished = (c.folder(out, regime) / f"{c.rows[row][1]}_s{seed}" / "results.json").exists()
                if args.finished_only and not finished:
                    continue
                print(f"== {regime} seed {seed}: {row}", file=sys.stderr)
                runs.append(c.run_row(regime, out, bench, row, seed, args.weights))
    runs = merge_runs(runs, earlier)
    regimes = [r for r in REGIMES if r in args.regime or any(run["regime"] == r for run in runs)]
    command = " ".join([f"python benchmarks/{c.script}", *(argv if argv is not None else sys.argv[1:])])
    result = {"meta": {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       "regimes": regimes, "seeds": args.seeds, "machine": machine_info("cpu"),
                       "command": command, "minutes": round((time.time() - started) / 60, 1)},
              "runs": runs}
    write_json(Path(args.json), result)
    text = c.render(result)
    if not args.no_doc:
        write_section(c.section, text)
    print(text)
    return 0
