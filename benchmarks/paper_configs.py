"""Every paper-scale config trains end to end at its real sizes: 2 iterations each on this machine, with
the time of an iteration and the peak memory written down.

    python benchmarks/paper_configs.py                                  # every config below
    python benchmarks/paper_configs.py --configs gta5_cityscapes/stage1.yaml gta5_cityscapes/stage2.yaml

Each config (default: every YAML of ``configs/gta5_cityscapes`` and ``configs/synthia_cityscapes`` but
the bases ``base.yaml`` and ``hrda.yaml``) runs through ``iccld train`` in its own process on generated
data in the real download layouts at the real sizes (GTA5 1914x1052, SYNTHIA 1280x760, Cityscapes 2048x1024; 4 images each),
for 2 iterations, with everything else as the config says (crops, batch, network, method) except:
random encoder weights (``model.pretrained`` is a Hub id, not reachable offline: the network's size is
the same), ``data.num_workers=0`` (data loading in the measured process), one val image, and a stage 2
starting from the stage-1 run of this script with the same prefix and suffix (``hrda_stage2_mic`` from
``hrda_stage1_mic``). Measured: the second iteration's time (the difference of the wall-clock stamps of
the TensorBoard scalars of iterations 1 and 2) and the process's peak RSS (``wait4``; everything:
model, EMA, optimiser, activations, data). Writes ``benchmarks/results/paper_configs.json`` and the
``paper_configs`` section of ``docs/benchmarks.md``. The machine is named in the table; these are CPU
figures, not GPU ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))

from common import REPO, RESULTS, machine_info, markdown_table, write_json, write_section  # noqa: E402

FAMILIES = ("gta5_cityscapes", "synthia_cityscapes")
SIZES = {"gta5": (1914, 1052), "synthia": (1280, 760), "cityscapes": (2048, 1024)}
ITERATIONS = 2


def default_configs() -> list[str]:
    found = []
    for family in FAMILIES:
        for path in sorted((REPO / "configs" / family).glob("*.yaml")):
            if path.name not in ("base.yaml", "hrda.yaml"):  # bases and overlays, not runs
                found.append(f"{family}/{path.name}")
    # stage 1 before the stage 2 that starts from it
    return sorted(found, key=lambda name: ("stage2" in Path(name).stem, name))


def make_data(root: Path) -> dict[str, Path]:
    """The three datasets in their download layouts at their real sizes, prepared (once)."""
    from fixtures import make_cityscapes, make_gta5, make_synthia

    from iccld.data.prepare import prepare_dataset

    roots = {"gta5": root / "gta5", "synthia": root / "synthia", "cityscapes": root / "cityscapes"}
    if not (root / ".done").exists():
        make_gta5(roots["gta5"], n=4, size=SIZES["gta5"])
        make_synthia(roots["synthia"], n=4, size=SIZES["synthia"])
        make_cityscapes(roots["cityscapes"], splits=("train", "val"), n=4, size=SIZES["cityscapes"])
        for kind, path in roots.items():
            prepare_dataset(kind, path, progress=False)
        (root / ".done").write_text("")
    return roots


def iteration_seconds(run: Path) -> float | None:
    """Wall-clock time between the TensorBoard scalars of iterations 1 and 2 (None if absent)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    stamps: dict[int, float] = {}
    for events in (run / "logs").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events.parent))
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if tag.startswith("train/"):
                for e in acc.Scalars(tag):
                    stamps[e.step] = max(stamps.get(e.step, 0.0), e.wall_time)
    return stamps[2] - stamps[1] if 1 in stamps and 2 in stamps else None


def stage1_of(stem: str) -> str | None:
    """The stage-1 config a stage-2 config starts from (``hrda_stage2_mic`` -> ``hrda_stage1_mic``), else None."""
    return stem.replace("stage2", "stage1") if "stage2" in stem else None


def run_config(name: str, data: dict[str, Path], runs: Path, extra: tuple[str, ...] = ()) -> dict:
    family, stem = name.split("/")[0], Path(name).stem
    source = "synthia" if family.startswith("synthia") else "gta5"
    run = runs / family / (stem + "".join(f"+{o}" for o in extra))
    overrides = [f"data.source.root={data[source]}", f"data.target.root={data['cityscapes']}",
                 f"data.val.root={data['cityscapes']}", "data.num_workers=0", "model.pretrained=",
                 f"trainer.max_iters={ITERATIONS}", "trainer.log_interval=1", "trainer.eval_max_images=1",
                 f"trainer.eval_interval={ITERATIONS}", f"trainer.checkpoint_interval={ITERATIONS}"]
    if stage1_of(stem):
        overrides.append(f"method.stage1_checkpoint={runs / family / stage1_of(stem)}")
    overrides += extra
    command = [sys.executable, "-c", "import sys; from iccld.cli import main; sys.exit(main())", "train",
               "--config", str(REPO / "configs" / name), "--out", str(run), "--overwrite", *overrides]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    started = time.time()
    log = runs / f"{family}_{run.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as sink:
        proc = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage: its peak RSS
    code = os.waitstatus_to_exitcode(status)
    seconds = time.time() - started
    if code != 0:
        if code < 0:  # a signal: SIGKILL here is the kernel's out-of-memory killer
            error = f"killed by signal {-code}" + (" (out of memory on this machine)" if code == -9 else "")
        else:
            lines = log.read_text().strip().splitlines()
            error = lines[-1] if lines else f"status {code}"
        return {"config": name, "overrides": list(extra), "ok": False, "error": error,
                "seconds": round(seconds, 1), "peak_rss_gib": usage.ru_maxrss / 2**20}
    return {"config": name, "overrides": list(extra), "ok": True, "seconds": round(seconds, 1),
            "iteration_s": iteration_seconds(run), "peak_rss_gib": usage.ru_maxrss / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", help="paths under configs/ (default: every paper-scale config)")
    parser.add_argument("--out", default="/tmp/iccld-paper-configs", help="data and run folders")
    parser.add_argument("--json", default=str(RESULTS / "paper_configs.json"))
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides for every config of this invocation (e.g. trainer.backward=per_term); "
                             "a row is kept per config and overrides")
    parser.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                        help="run nothing: the rows of these results files (an invocation with another --json) "
                             "join --json's table, replacing rows of the same config and overrides")
    parser.add_argument("--note", help="the conditions of this invocation's rows (e.g. what else ran), "
                                       "shown beside their date")
    args = parser.parse_args(argv)
    out, started = Path(args.out), time.time()
    results = []
    for path in args.merge:  # each row keeps the command that measured it
        merged = json.loads(Path(path).read_text())
        results += [{"command": merged["meta"]["command"], **row} for row in merged["runs"]]
    data = None if args.merge else make_data(out / "data")
    for name in [] if args.merge else args.configs or default_configs():
        print(f"== {name}", file=sys.stderr)
        results.append({**run_config(name, data, out / "runs", tuple(args.set)),
                        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                        **({"note": args.note} if args.note else {})})
        print(json.dumps(results[-1]), file=sys.stderr)
    ran = {_row_key(r) for r in results}
    if Path(args.json).exists():  # rows of configs measured by an earlier invocation are kept, marked as such
        earlier = json.loads(Path(args.json).read_text())
        results = [{**r, "date": r.get("date", earlier["meta"]["date"])} for r in earlier["runs"]
                   if _row_key(r) not in ran] + results
    result = {"meta": {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                       "machine": machine_info("cpu"), "iterations": ITERATIONS,
                       "command": " ".join(["python benchmarks/paper_configs.py",
                                            *(argv if argv is not None else sys.argv[1:])]),
                       "minutes": round((time.time() - started) / 60, 1)},
              "runs": results}
    write_json(Path(args.json), result)
    text = render(result)
    if not args.no_doc:
        write_section("paper_configs", text)
    print(text)
    return 0 if all(r["ok"] for r in results) else 1


def _row_key(row: dict) -> tuple:
    return row["config"], tuple(row.get("overrides", ()))


def render(result: dict) -> str:
    meta = result["meta"]
    rows = [[f"`configs/{r['config']}`" + "".join(f" `{o}`" for o in r.get("overrides", ())),
             "yes" if r["ok"] else f"no: {r['error']}",
             f"{r['iteration_s']:.1f}" if r.get("iteration_s") else "–",
             f"{r['peak_rss_gib']:.1f}" if r.get("peak_rss_gib") else "–", f"{r['seconds']:.0f}",
             r.get("date", "") + (f" ({r['note']})" if r.get("note") else "")
             + (f", by `{r['command']}`" if r.get("command") else "")]
            for r in result["runs"]]
    return "\n".join([
        f"Each paper-scale config trained {meta['iterations']} iterations end to end on CPU at its real sizes "
        "(`benchmarks/paper_configs.py`: generated data in the download layouts, GTA5 1914x1052, SYNTHIA "
        "1280x760, Cityscapes 2048x1024; random encoder weights; data loading in the process). CPU figures, "
        "fp32: what a GPU takes is in the GPU section.", "",
        f"Measured {meta['date']} on {meta['machine']['cpu']} ({meta['machine']['logical_cores']} cores), "
        f"command `{meta['command']}` (rows measured earlier kept), {meta['minutes']} min.", "",
        markdown_table(["config", "trains", "s / iteration (2nd)", "peak RSS (GiB)", "whole run incl. build, "
                        "val (s)", "measured"], rows), ""])


if __name__ == "__main__":
    sys.exit(main())
