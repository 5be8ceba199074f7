"""The dataset kinds' registry: a kind declared here alone, registered at run time, is prepared,
trained on and evaluated through the command line; no module outside iccld.data names a kind."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from iccld.cli import main
from iccld.config import load_config
from iccld.data import kinds
from iccld.data.build import build_val_dataset
from iccld.data.base import PREPARED_SUFFIX, SegmentationDataset, attach_labels, list_files
from iccld.data.io import write_png
from iccld.data.kinds import DatasetKind, dataset_kind, display_name, kind_names, register
from iccld.data.labels import LabelMap
from iccld.data.transforms import EvalTransform
from iccld.errors import ConfigError

from conftest import CONFIGS, REPO, tiny_overrides

SRC = REPO / "src" / "iccld"


def _toy_items(root: Path, conditions) -> list:
    """(image, label, prepared label, name) of ROOT/<condition>_<n>.img.png, each label beside it as
    <condition>_<n>.lbl.png (train ids); only the ``conditions`` given (None: all)."""
    items = []
    for image in list_files(root, ".img.png"):
        name = image.name[: -len(".img.png")]
        if conditions is None or name.split("_")[0] in conditions:
            label = root / f"{name}.lbl.png"
            items.append((image, label, root / f"{name}{PREPARED_SUFFIX}", name))
    return items


def _toy_dataset(cfg, transform, *, labelled, skip_bad):
    command = f"iccld prepare toyset --root {cfg.root}"
    items = _toy_items(Path(cfg.root), cfg.conditions)
    return SegmentationDataset(attach_labels(items, labelled, command), transform or EvalTransform(),
                               root=Path(cfg.root), skip_bad=skip_bad, prepare_command=command)


TOY = DatasetKind(
    name="toyset", display_name="Toy Set", dataset=_toy_dataset,
    plan=lambda root, spec: ([(label, prep) for _, label, prep, _ in _toy_items(root, None)], LabelMap("train_ids")),
    conditions=("sunny", "rainy"), class_subsets={"miou3": (0, 1, 2)},
)


@pytest.fixture
def toy():
    register(TOY)
    yield TOY
    kinds.unregister(TOY.name)


def _write_toyset(root: Path) -> None:
    """Six 64x64 images, two conditions; labels in train ids: three horizontal bands (classes 0, 1, 2)
    whose colours match the image, so that a model can learn them."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        label = np.zeros((64, 64), np.uint8)
        label[20:40], label[40:] = 1, 2
        image = np.stack([label * 100, 200 - label * 90, label * 30], -1).astype(np.uint8)
        image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
        name = f"{'sunny' if i % 2 else 'rainy'}_{i}"
        write_png(root / f"{name}.img.png", image)
        write_png(root / f"{name}.lbl.png", label)


def test_a_kind_registered_at_run_time_prepares_trains_and_evaluates_through_the_cli(toy, tmp_path, tiny_benchmark):
    root = tmp_path / "toy"
    _write_toyset(root)
    assert "toyset" in kind_names() and "toyset" in kind_names("dataset")
    assert main(["prepare", "toyset", "--root", str(root), "--workers", "1"]) == 0
    stats = json.loads((root / "sample_class_stats.json").read_text())
    assert len(stats) == 6 and stats[0]["0"] == 20 * 64 and stats[0]["2"] == 24 * 64

    config = tmp_path / "toy.yaml"
    config.write_text(f"base: {CONFIGS / 'synthetic' / 'source_only.yaml'}\n"
                      f"data:\n  source: {{kind: toyset, root: {root}}}\n"
                      f"  val: {{kind: toyset, root: {root}, conditions: [sunny]}}\n")
    out = tmp_path / "run"
    overrides = [o for o in tiny_overrides(tiny_benchmark, 2) if not o.startswith(("data.source.", "data.val."))]
    assert main(["train", "--config", str(config), "--out", str(out), *overrides]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["val"]["ema"]["miou3"] is not None  # the subset the source kind declares is reported
    # the sunny half: the config's conditions reached the kind's dataset
    val = build_val_dataset(load_config(config, overrides).data)
    assert [s.name for s in val.samples] == ["sunny_1", "sunny_3", "sunny_5"]

    report = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(out), "--json", str(report), "--direct"]) == 0
    evaluated = json.loads(report.read_text())
    first3 = [evaluated["per_class"][c] for c in ("road", "sidewalk", "building")]
    assert evaluated["miou3"] == pytest.approx(sum(first3) / 3)  # the mean over the subset's classes
    assert evaluated["miou3"] == pytest.approx(results["val"]["ema"]["miou3"])  # as the run reported it


def test_the_config_reads_the_kinds_conditions_and_names(toy):
    assert load_config(None, ["data.val.kind=toyset", "data.val.conditions=[rainy]"]).data.val.conditions == ["rainy"]
    with pytest.raises(ConfigError, match=r"data.val.conditions: 'rainny' is not one of sunny, rainy "
                                          r"\(did you mean 'rainy'\?\)"):
        load_config(None, ["data.val.kind=toyset", "data.val.conditions=[rainny]"])
    with pytest.raises(ConfigError, match="data.source.conditions: only acdc and darkzurich and toyset datasets"):
        load_config(None, ["data.source.conditions=[sunny]"])
    with pytest.raises(ConfigError, match=r"data.target.kind: 'toyst' is not one of .*folder, toyset "
                                          r"\(did you mean 'toyset'\?\)"):
        load_config(None, ["data.target.kind=toyst"])
    assert display_name("toyset") == "Toy Set" and display_name("kitti") == "kitti"
    with pytest.raises(ValueError, match="already registered"):
        register(DatasetKind(name="toyset", display_name="again"))


def test_every_kind_in_the_registry_declares_itself_in_its_file():
    for name in kind_names():
        kind = dataset_kind(name, usable="name")
        assert kind.name == name and kind.display_name
    assert kind_names("conditions") == ("acdc", "darkzurich")
    assert dict(dataset_kind("synthia").class_subsets) == {
        "miou16": (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18),
        "miou13": (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)}
    assert "synthetic" in kind_names() and "synthetic" not in kind_names("dataset")  # generated, then gta5/cityscapes


# where a kind's name may appear outside iccld.data as a string, and why
ALLOWED_NAMES = {
    ("sections.py", "gta5"), ("sections.py", "cityscapes"),  # DataConfig's defaults: the paper's benchmark
    # the test servers of `iccld predict --format submission`, named after their benchmarks
    ("evaluation/submission.py", "cityscapes"), ("evaluation/submission.py", "acdc"),
    ("cli.py", "cityscapes"), ("cli.py", "acdc"),  # --benchmark's choices: those servers
    ("demo.py", "synthetic"),  # the folder configs/synthetic, not a kind
}
WORDS = {"folder"}  # a kind's name that is also an ordinary word (`iccld push FOLDER`, a submission's folder)


def test_no_module_outside_data_names_a_kind():
    names = set(kind_names()) - WORDS
    found = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("data/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.add((rel, node.value))
    assert found - ALLOWED_NAMES == set()
