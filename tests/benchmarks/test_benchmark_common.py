"""The benchmark helpers (benchmarks/common.py), the docs sections and gpu_check.py's code path on a CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "benchmarks"
sys.path.insert(0, str(BENCH))  # the scripts import each other as top-level modules

import common  # noqa: E402
import speed  # noqa: E402
import write_gpu_section  # noqa: E402
from common import BenchmarkError, markers, replace_section  # noqa: E402


def _doc(accuracy: str, speed_body: str) -> str:
    a0, a1 = markers("accuracy")
    s0, s1 = markers("speed")
    g0, g1 = markers("gpu")
    return (f"# Benchmarks\n\nHand-written intro.\n\n{a0}\n{accuracy}\n{a1}\n\nNotes between sections.\n\n"
            f"{s0}\n{speed_body}\n{s1}\n\n{g0}\nold gpu\n{g1}\nTrailing user text.\n")


# ------------------------------------------------------------------------------------------------
# marked sections

def test_replace_section_changes_only_its_own_section():
    accuracy = "## Accuracy\n\n| method | mIoU |\n|---|---|\n| stage2 | 41.3 |"
    before = _doc(accuracy, "old speed")
    after = replace_section(before, "speed", "## Speed\n\nnew numbers")
    expected = _doc(accuracy, "## Speed\n\nnew numbers")
    assert after == expected  # accuracy, gpu, intro, notes and trailing text kept byte for byte
    assert replace_section(after, "speed", "## Speed\n\nnew numbers") == after  # idempotent


def test_replace_section_appends_a_missing_section():
    text = "# Benchmarks\n\nSomething a person wrote.\n"
    out = replace_section(text, "gpu", "gpu body")
    assert out.startswith(text.rstrip("\n"))
    assert out.endswith("<!-- gpu:begin -->\ngpu body\n<!-- gpu:end -->\n")


@pytest.mark.parametrize("text", [
    "<!-- speed:begin -->\nno end",
    "<!-- speed:end -->\nno begin",
    "<!-- speed:begin -->a<!-- speed:end --><!-- speed:begin -->b<!-- speed:end -->",
    "<!-- speed:end -->x<!-- speed:begin -->",
])
def test_replace_section_refuses_damaged_markers(text):
    with pytest.raises(BenchmarkError, match="fix the markers by hand"):
        replace_section(text, "speed", "body")


def test_write_section_creates_the_file_and_keeps_other_sections(tmp_path):
    doc = tmp_path / "docs" / "benchmarks.md"
    common.write_section("speed", "speed v1", doc)
    text = doc.read_text()
    for name in common.SECTIONS:
        begin, end = markers(name)
        assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end)
    assert "speed v1" in text and "_accuracy: not yet measured._" in text
    # another script fills the accuracy section; a later speed run must keep it
    doc.write_text(replace_section(text, "accuracy", "accuracy table"))
    common.write_section("speed", "speed v2", doc)
    text = doc.read_text()
    assert "accuracy table" in text and "speed v2" in text and "speed v1" not in text
    assert sorted(p.name for p in doc.parent.iterdir()) == ["benchmarks.md"]  # no temp file left


# ------------------------------------------------------------------------------------------------
# timing, machine, memory

class FakeClock:
    """A clock that each workload advances by its next scripted duration."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_time_interleaved_warms_up_rotates_and_keeps_samples():
    clock, calls = FakeClock(), []
    durations = {"a": iter([9, 9, 1.0, 5.0, 2.0]), "b": iter([9, 9, 3.0, 15.0, 6.0])}  # 2 warm-up, 3 measured

    def work(name):
        def run():
            calls.append(name)
            clock.now += next(durations[name])
        return run

    timings = common.time_interleaved({"a": work("a"), "b": work("b")}, warmup=2, repeats=3, clock=clock)
    assert calls == ["a", "b", "a", "b", "a", "b", "b", "a", "a", "b"]  # measured rounds rotate
    assert timings["a"].samples == [1.0, 5.0, 2.0] and timings["a"].median == 2.0
    assert timings["b"].median == 6.0
    assert common.paired_ratio(timings["b"], timings["a"]) == pytest.approx(3.0)
    d = timings["a"].as_dict()
    assert d == {"median_ms": 2000.0, "min_ms": 1000.0, "max_ms": 5000.0, "repeats": 3, "warmup": 2,
                 "samples_ms": [1000.0, 5000.0, 2000.0]}


def test_time_interleaved_and_paired_ratio_reject_bad_input():
    with pytest.raises(BenchmarkError):
        common.time_interleaved({"a": lambda: None}, warmup=0, repeats=0)
    with pytest.raises(BenchmarkError):
        common.paired_ratio(common.Timing([1.0, 2.0], 0), common.Timing([1.0], 0))


def test_cpu_model_reads_the_first_model_name():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n" \
           "processor\t: 1\nmodel name\t: other\n"
    assert common.cpu_model(text) == "AMD EPYC 9654 96-Core Processor"
    assert common.cpu_model("no such line") != ""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only")
def test_peak_rss_sees_a_new_allocation():
    import numpy as np

    if not common.reset_peak_rss():
        pytest.skip("kernel refuses to reset the peak RSS")
    before = common.rss_mb()
    block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
    assert common.peak_rss_mb() - before >= 60
    del block


# ------------------------------------------------------------------------------------------------
# the training step

@pytest.fixture
def one_thread():
    """One torch thread: two threads on two cores shared with other jobs stall at every barrier."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_step_follows_the_trainer_semantics(one_thread):
    """stage2: E stays bit-identical, the denoiser and its EMA move, the discriminator trains."""
    import dataclasses

    import torch

    from iccld.config import load_config

    cfg = load_config(REPO / "configs" / "synthetic" / "stage2.yaml")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, crop_size=[64, 64]))
    torch.manual_seed(0)
    batch = common.random_batch(2, (64, 64), cfg.model.num_classes, "cpu")
    assert batch["source"]["image"].shape == (2, 3, 64, 64) and batch["target"]["label"].shape == (2, 64, 64)
    assert batch["source"]["label"].max() < cfg.model.num_classes
    step = common.TrainingStep(cfg, batch, "cpu")
    method = step.method
    enc = {k: v.clone() for k, v in method.model.encoder.state_dict().items()}
    unet = {k: v.clone() for k, v in method.model.denoiser.state_dict().items()}
    ema_unet = {k: v.clone() for k, v in method.ema_model.denoiser.state_dict().items()}
    disc = {k: v.clone() for k, v in method.discriminator.state_dict().items()}
    losses = step()
    assert set(losses) == {"diffusion", "seg", "adv", "disc"} and step.iteration == 1
    assert all(torch.equal(v, method.model.encoder.state_dict()[k]) for k, v in enc.items())

    def changed(before, module):
        return any(not torch.equal(v, module.state_dict()[k]) for k, v in before.items())

    assert changed(unet, method.model.denoiser)
    assert changed(ema_unet, method.ema_model.denoiser)
    assert changed(disc, method.discriminator)


# ------------------------------------------------------------------------------------------------
# rendering

def _speed_result(stage2_ratio: float, k4_ratio: float) -> dict:
    timing = {"median_ms": 10.0, "min_ms": 9.0, "max_ms": 12.0, "repeats": 3, "warmup": 1}
    machine = {"device": "cpu", "date": "2026-01-01 00:00 UTC", "command": "python benchmarks/speed.py",
               "cpu": "Test CPU", "usable_cores": 2, "torch": "2.x", "torch_threads": 2, "load_average_1m": 1.0}
    rows = [{"path": "stage1", "steps": None, "draws": None, **timing, "ratio_to_stage1": 1.0},
            {"path": "diffusion", "steps": 4, "draws": 1, **timing, "ratio_to_stage1": k4_ratio}]
    return {
        "machine": machine, "omp_wait_policy": "PASSIVE",
        "training": {"batch_size": 4, "crop_hw": [128, 128], "model": "cpu preset",
                     "methods": {"source_only": {**timing, "ratio_to_source_only": 1.0},
                                 "stage2": {**timing, "ratio_to_source_only": stage2_ratio}},
                     "target": {"value": stage2_ratio, "met": stage2_ratio <= speed.STAGE2_TARGET}},
        "predict": {"size_wh": [256, 128], "latent_hw": [8, 16], "rows": rows,
                    "breakdown": {"encode": {"median_ms": 6.0}, "decode": {"median_ms": 4.0},
                                  "denoiser_call": {"median_ms": 3.0}, "sample_K4": {"median_ms": 12.0}},
                    "target": {"value": k4_ratio, "met": k4_ratio <= speed.K4_TARGET}},
        "sizes": {"rows": [{"size_wh": [128, 64], "pixels": 8192, "stage1_ms": 5.0, "K4_ms": 9.0,
                            "K4_over_stage1": 1.8}]},
    }


def test_speed_section_states_the_targets_plainly():
    text = speed.render_speed_section(_speed_result(stage2_ratio=2.0, k4_ratio=2.6))
    assert "3x a source-only one: **met** (2.00x)." in text
    assert "1.3x the stage-1 path: **not met** (2.60x, 2.00x the target)." in text
    assert "data loader is not measured" in text and "Test CPU" in text
    assert "| stage2 | 10.0 | 9.0-12.0 | 2.00x | - |" in text
    assert "costs 1.20x encoder + decoder" in text  # sample_K4 12 / (encode 6 + decode 4)
    text = speed.render_speed_section(_speed_result(stage2_ratio=3.5, k4_ratio=1.2))
    assert "**not met** (3.50x, 1.17x the target)" in text and "**met** (1.20x)" in text
    assert "paper preset" not in text  # measured only without --no-paper


def test_speed_section_reports_the_paper_preset_when_measured():
    result = _speed_result(stage2_ratio=2.0, k4_ratio=1.6)
    timing = {"median_ms": 1200.0, "min_ms": 1100.0, "max_ms": 1300.0, "repeats": 3, "warmup": 1}
    result["paper"] = {"size_wh": [512, 512], "backbone": "mit-b5", "unet_channels": [128, 256, 256],
                       "rows": [{"steps": None, **timing, "ratio_to_stage1": 1.0},
                                {"steps": 4, **timing, "median_ms": 1464.0, "ratio_to_stage1": 1.22}],
                       "target": {"value": 1.22, "met": True}}
    text = speed.render_speed_section(result)
    assert "### The paper preset (mit-b5, denoiser channels [128, 256, 256], 512x512" in text
    assert "K=4, N=1 against the stage-1 path: **met** (1.22x; target 1.3x)" in text
    assert "| diffusion | 4 | 1464 | 1.22x |" in text


def test_speed_section_reports_other_thread_settings_when_measured():
    result = _speed_result(stage2_ratio=2.0, k4_ratio=1.2)
    assert "other thread settings" not in speed.render_speed_section(result)
    result["policies"] = {"rounds": 30, "rows": [
        {"policy": "PASSIVE", "threads": 2, "stage1_ms": 20.0, "K4_ms": 23.0, "ratio": 1.15},
        {"policy": "ACTIVE", "threads": 2, "stage1_ms": 9.0, "K4_ms": 11.0, "ratio": 1.22}]}
    text = speed.render_speed_section(result)
    assert "### The K=4 ratio under other thread settings" in text
    assert "| ACTIVE | 2 | 9.0 | 11.0 | 1.22x |" in text


def _gpu_result(device="cuda", tiny=False) -> dict:
    timing = {"median_ms": 500.0, "min_ms": 490.0, "max_ms": 520.0, "repeats": 10, "warmup": 3}
    training = {name: {**timing, "ratio_to_source_only": r, "peak_memory_gb": g, "losses_finite": True}
                for name, r, g in (("source_only", 1.0, 7.5), ("stage1", 2.4, 11.2), ("stage2", 1.9, 9.1))}
    rows = [{"steps": s, **timing, "ratio_to_stage1": r, "peak_memory_gb": 2.0, "logits_finite": True}
            for s, r in ((None, 1.0), (1, 1.1), (4, 1.4), (10, 2.0))]
    return {"machine": {"date": "d", "command": "c", "gpu": "NVIDIA H100 80GB HBM3", "cuda": "12.4", "torch": "2.x"},
            "device": device, "tiny": tiny, "precision": "bf16",
            "settings": {"preset": "paper", "backbone": "mit-b5", "batch_size": 2, "crop_hw": [512, 512]},
            "sanity": {"all_losses_finite": True, "all_logits_finite": True}, "training": training,
            "predict": {"size_wh": [1024, 512], "rows": rows}, "reference": {"daformer_peak_memory_gb": 9.7}}


def test_gpu_section_waits_for_a_real_gpu_result(tmp_path):
    assert write_gpu_section.load_gpu_result(tmp_path / "missing.json") is None
    for result in (None, _gpu_result(tiny=True), _gpu_result(device="cpu")):
        assert "Not yet measured on a GPU." in write_gpu_section.render_gpu_section(result)
    text = write_gpu_section.render_gpu_section(_gpu_result())
    assert "NVIDIA H100 80GB HBM3" in text and "9.7 GB" in text
    assert "| stage1 | 500 | 2.40x | 11.20 | yes |" in text
    assert "| diffusion | 4 | 500.0 | 1.40x | 2.00 |" in text
    bad = tmp_path / "gpu.json"
    bad.write_text("{not json")
    with pytest.raises(BenchmarkError, match="gpu.json"):
        write_gpu_section.load_gpu_result(bad)


def test_write_gpu_section_script_renders_from_json(tmp_path):
    src, doc = tmp_path / "gpu.json", tmp_path / "benchmarks.md"
    src.write_text(json.dumps(_gpu_result()))
    assert write_gpu_section.main(["--json", str(src), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert "NVIDIA H100 80GB HBM3" in text and "_accuracy: not yet measured._" in text


# ------------------------------------------------------------------------------------------------
# gpu_check on a CPU

def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO / "src")}


@pytest.mark.slow
def test_gpu_check_runs_tiny_on_cpu(tmp_path):
    out, doc = tmp_path / "gpu.json", tmp_path / "benchmarks.md"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--device", "cpu", "--tiny",
                           "--out", str(out), "--doc", str(doc)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["tiny"] is True and result["device"] == "cpu" and result["precision"] == "fp32"
    assert list(result["training"]) == ["source_only", "stage1", "stage2"]
    for name, v in result["training"].items():
        assert v["losses_finite"] and v["median_ms"] > 0 and v["repeats"] == 2
    assert set(result["training"]["stage2"]["last_losses"]) == {"diffusion", "seg", "adv", "disc"}
    assert [r["steps"] for r in result["predict"]["rows"]] == [None, 1, 4, 10]
    assert result["predict"]["size_wh"] == [128, 64]
    assert result["sanity"]["all_losses_finite"] and result["sanity"]["all_logits_finite"]
    assert not doc.exists()  # a CPU run never publishes a GPU section
    assert "Not yet measured on a GPU." in write_gpu_section.render_gpu_section(result)


def test_gpu_check_sh_without_cuda_measures_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    env = {**_env(), "PYTHON": sys.executable, "WHEELS": str(tmp_path / "no-wheels")}
    proc = subprocess.run(["bash", str(BENCH / "gpu_check.sh")], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no CUDA device; nothing measured"



def test_speed_sizes_table_shows_the_commands_thread_choice_and_both_thread_counts():
    result = _speed_result(stage2_ratio=2.0, k4_ratio=1.2)
    result["sizes"] = {"threads": 2, "small_input_pixels": 32768, "rows": [
        {"size_wh": [256, 128], "pixels": 32768, "stage1_ms": 12.0, "K4_ms": 14.4, "K4_over_stage1": 1.2,
         "one_thread": True, "threads_1": {"stage1": 12.0, "K4": 14.4}, "threads_2": {"stage1": 20.0, "K4": 27.0}},
        {"size_wh": [512, 256], "pixels": 131072, "stage1_ms": 40.0, "K4_ms": 44.0, "K4_over_stage1": 1.1,
         "one_thread": False, "threads_1": {"stage1": 48.0, "K4": 55.0}, "threads_2": {"stage1": 40.0, "K4": 44.0}}]}
    text = speed.render_speed_section(result)
    assert "at most 32768 pixels on one thread" in text
    assert "| 256x128 | 32768 | 1 | 12.0 | 14.4 | 1.20x | 12.0 / 14.4 | 20.0 / 27.0 |" in text
    assert "| 512x256 | 131072 | 2 | 40.0 | 44.0 | 1.10x | 48.0 / 55.0 | 40.0 / 44.0 |" in text


def test_schedule_section_pairs_seeds_and_states_the_closure():
    import schedule

    def result(scores: dict, date: str) -> dict:
        runs = [{"method": m, "seed": s, "miou": {"ema": v}, "miou_val": {"ema": v + 1}}
                for m, per_seed in scores.items() for s, v in enumerate(per_seed)]
        return {"meta": {"date": date, "command": "c", "schedule": 2.0}, "runs": runs}

    base = result({"oracle": [25, 25, 25], "source_only": [9, 9, 9], "stage1": [15, 15, 16], "stage2": [17, 18, 18]}, "d1")
    longer = result({"oracle": [27, 27, 27], "source_only": [9, 10, 8], "stage1": [18, 17, 18], "stage2": [21, 20, 19]}, "d2")
    text = schedule.render(base, longer, 2.0)
    assert "| ICCLD (full) | 17.67 ± 0.58 | 20.00 ± 1.00 | +2.33 ± 1.53 | 3 of 3 | 18.67 / 21.00 |" in text
    # (17.67 - 9) / (25 - 9) = 54%; (20 - 9) / (27 - 9) = 61%
    assert "closes 54% of the source-only -> oracle gap on test at the default schedule and 61% at 2x" in text
    assert "NOT reached at 2x" in text
