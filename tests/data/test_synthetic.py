"""The embedded synthetic benchmark: layouts, determinism, class coverage, label/image agreement,
and refusal to touch folders it did not write."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iccld.data.labels import CITYSCAPES_ID_TO_TRAINID, lookup_table
from iccld.data.synthetic import (LABEL_ID_COLORS, SOURCE_STYLE, TARGET_STYLE, generate, image_seed,
                                  render_sample, write_benchmark)
from iccld.data.synthetic.generate import TEST_CITIES, TRAIN_CITIES, VAL_CITIES
from iccld.errors import ConfigError, DataError

TINY = dict(num_source=6, num_target=4, num_val=4, num_test=4, size=(128, 64), progress=False)
LUT = lookup_table(CITYSCAPES_ID_TO_TRAINID)

# Which palette materials each labelId may be painted with (an independent statement of the design).
VEHICLE_PARTS = ("glass", "tire", "tail_light", "head_light", "plate")
PEOPLE = ("skin", "shirt", "pants", "hair")
CLASS_MATERIALS = {
    7: ("road", "lane_marking"), 8: ("sidewalk", "curb"), 11: ("building", "window", "door", "roof"),
    12: ("wall",), 13: ("fence",), 17: ("pole", "lamp"), 19: ("light_box", "light_signal"),
    20: ("sign", "sign_mark"), 21: ("leaves", "trunk", "hedge"), 22: ("terrain",), 23: ("sky", "cloud"),
    24: PEOPLE, 25: PEOPLE, 26: ("car",) + VEHICLE_PARTS, 27: ("truck",) + VEHICLE_PARTS,
    28: ("bus",) + VEHICLE_PARTS, 31: ("train",) + VEHICLE_PARTS, 32: ("motorcycle", "tire"),
    33: ("bicycle",),
}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "b"
    write_benchmark(out, seed=0, workers=1, **TINY)
    return out


def test_source_has_the_gta5_layout(tiny: Path) -> None:
    images = sorted((tiny / "source" / "images").iterdir())
    labels = sorted((tiny / "source" / "labels").iterdir())
    assert [p.name for p in images] == [f"{i:05d}.png" for i in range(1, 7)]
    assert [p.name for p in labels] == [p.name for p in images]
    image, label = Image.open(images[0]), Image.open(labels[0])
    assert image.mode == "RGB" and image.size == (128, 64)
    assert label.mode == "P" and label.size == (128, 64)
    palette = label.getpalette()
    assert tuple(palette[7 * 3:7 * 3 + 3]) == (128, 64, 128)  # road
    assert tuple(palette[26 * 3:26 * 3 + 3]) == (0, 0, 142)  # car
    ids = set(np.unique(np.concatenate([np.asarray(Image.open(p)).ravel() for p in labels])).tolist())
    assert {7, 8, 11, 23} <= ids and ids <= set(CITYSCAPES_ID_TO_TRAINID)  # GTA5 ids, nothing unmapped


def test_target_has_the_cityscapes_layout(tiny: Path) -> None:
    pattern = re.compile(r"^([a-z]+)_000000_(\d{6})_leftImg8bit\.png$")
    for split, cities in (("train", TRAIN_CITIES), ("val", VAL_CITIES), ("test", TEST_CITIES)):
        images = sorted((tiny / "target" / "leftImg8bit" / split).rglob("*.png"))
        assert len(images) == 4
        for path in images:
            match = pattern.match(path.name)
            assert match and match.group(1) == path.parent.name and path.parent.name in cities
            gt = (tiny / "target" / "gtFine" / split / path.parent.name /
                  path.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"))
            label = Image.open(gt)
            assert label.mode == "L" and label.size == Image.open(path).size == (128, 64)
            ids = set(np.unique(np.asarray(label)).tolist())
            assert ids <= set(CITYSCAPES_ID_TO_TRAINID) | {1}  # 1 = ego vehicle, ignored
    assert not set(TRAIN_CITIES) & set(VAL_CITIES) and not set(TEST_CITIES) & (set(TRAIN_CITIES) | set(VAL_CITIES))
    meta = json.loads((tiny / "benchmark.json").read_text())
    assert meta["parameters"]["seed"] == 0 and meta["parameters"]["size"] == [128, 64]
    assert meta["counts"] == {"source": 6, "target_train": 4, "target_val": 4, "target_test": 4}
    assert meta["parameters"]["num_test"] == 4 and meta["parameters"]["test_cities"] == list(TEST_CITIES)
    assert meta["parameters"]["target_style"]["noise"] == TARGET_STYLE.noise


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(tiny: Path, tmp_path: Path) -> None:
    write_benchmark(tmp_path / "again", seed=0, workers=2, **TINY)
    first, second = _files(tiny), _files(tmp_path / "again")
    assert first.keys() == second.keys() and len(first) == 2 * (6 + 4 + 4 + 4) + 1
    assert all(first[k] == second[k] for k in first)


def test_another_seed_gives_other_scenes(tiny: Path, tmp_path: Path) -> None:
    write_benchmark(tmp_path / "other", seed=1, workers=1, **TINY)
    first, other = _files(tiny), _files(tmp_path / "other")
    images = [k for k in first if k.endswith(".png") and "label" not in k and "gtFine" not in k]
    assert sum(first[k] != other[k] for k in images) == len(images)


def test_at_least_14_classes_appear_with_a_realistic_imbalance() -> None:
    for style, domain in ((SOURCE_STYLE, "source"), (TARGET_STYLE, "train")):
        counts = np.zeros(256)
        for i in range(40):
            _, label, _ = render_sample(style, image_seed(3, domain, i), (256, 128))
            counts += np.bincount(LUT[label].ravel(), minlength=256)
        share = counts[:19] / counts[:19].sum()
        assert (share > 0).sum() >= 14, f"{domain}: only {(share > 0).sum()} classes"
        for big in (0, 2, 8):  # road, building, vegetation: large
            assert share[big] > 0.04, (domain, big, share[big])
        for small in (5, 6, 7, 11):  # pole, traffic light, sign, person: small but present
            assert 0 < share[small] < 0.03, (domain, small, share[small])


def test_source_labels_agree_with_the_drawn_colours() -> None:
    """Flat shading: a source pixel away from label edges has a colour of its class's materials."""
    hits, total = np.zeros(256), np.zeros(256)
    for i in range(12):
        image, label, tables = render_sample(SOURCE_STYLE, image_seed(0, "source", i), (256, 128))
        assert np.array_equal(label, tables["labels"][tables["ids"]])
        pad = np.pad(label, 1, mode="edge")
        interior = np.ones(label.shape, bool)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                interior &= pad[dy:dy + label.shape[0], dx:dx + label.shape[1]] == label
        for lid, materials in CLASS_MATERIALS.items():
            mask = interior & (label == lid)
            if not mask.any():
                continue
            allowed = np.array([c for m in materials for c in SOURCE_STYLE.palette[m]], dtype=np.int16)
            pixels = image[mask].astype(np.int16)  # (P, 3)
            ok = (pixels[:, None, :] == allowed[None]).all(-1).any(-1)
            hits[lid] += ok.sum()
            total[lid] += mask.sum()
    present = total > 30
    assert present.sum() >= 12
    assert (hits[present] / total[present] >= 0.95).all(), dict(zip(np.flatnonzero(present),
                                                                     hits[present] / total[present]))
    assert hits.sum() / total.sum() > 0.99


def test_target_looks_like_a_camera_not_a_game() -> None:
    """Same kind of scene, other appearance: darker textured road, noise, no flat colours."""
    road_mean, grain, flat = {}, {}, {}
    for style, domain in ((SOURCE_STYLE, "source"), (TARGET_STYLE, "val")):
        means, diffs, uniq = [], [], []
        for i in range(6):
            image, label, _ = render_sample(style, image_seed(0, domain, i), (256, 128))
            image = image.astype(float)
            means.append(np.median(image[label == 7]))
            both = (label[:, 1:] == 7) & (label[:, :-1] == 7)  # horizontally adjacent road pixels
            diffs.append(np.median(np.abs(image[:, 1:] - image[:, :-1]).mean(-1)[both]))
            uniq.append(len(np.unique(image.reshape(-1, 3), axis=0)))
        road_mean[domain], grain[domain], flat[domain] = np.mean(means), np.mean(diffs), np.mean(uniq)
    assert road_mean["val"] < road_mean["source"] - 15
    assert grain["source"] == 0 and grain["val"] > 1.5
    assert flat["source"] < 60 < 1000 < flat["val"]


def test_refuses_a_foreign_folder_and_other_parameters(tiny: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        write_benchmark(foreign, workers=1, **TINY)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(DataError, match="seed"):
        write_benchmark(tiny, seed=5, workers=1, **TINY)
    with pytest.raises(DataError, match="target_style"):
        write_benchmark(tiny, seed=0, workers=1, target_style=replace(TARGET_STYLE, noise=0.0), **TINY)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        write_benchmark(tmp_path / "file", workers=1, **TINY)


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="num_source"):
        write_benchmark(tmp_path / "x", num_source=0, workers=1)
    with pytest.raises(ConfigError, match="size"):
        write_benchmark(tmp_path / "x", size=(16, 8), workers=1)
    palette = {k: v for k, v in TARGET_STYLE.palette.items() if k != "car"}
    with pytest.raises(ConfigError, match="car"):
        write_benchmark(tmp_path / "x", target_style=replace(TARGET_STYLE, palette=palette), workers=1)
    assert not (tmp_path / "x").exists()


def test_generate_prepares_both_domains_then_is_a_no_op(tmp_path: Path, monkeypatch) -> None:
    calls = []
    fake = lambda kind, root, workers=2, **kw: calls.append((kind, Path(root), workers)) or {"kind": kind}  # noqa: E731
    monkeypatch.setattr(sys.modules["iccld.data.synthetic.generate"], "prepare_dataset", fake)
    out = tmp_path / "bench"
    meta = generate(out, seed=2, workers=1, **TINY)
    assert meta["status"] == "generated" and meta["prepared"]["gta5"] == {"kind": "gta5"}
    assert calls == [("gta5", out / "source", 1), ("cityscapes", out / "target", 1)]
    assert json.loads((out / "benchmark.json").read_text())["complete"] is True
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = generate(out, seed=2, workers=2, **TINY)  # the worker count does not change the files
    assert again["status"] == "already generated" and len(calls) == 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_an_interrupted_run_is_finished_by_the_next_one(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "bench"
    write_benchmark(out, seed=0, workers=1, **TINY)  # no prepare: benchmark.json says incomplete
    (out / "source" / "images" / "00003.png").unlink()
    monkeypatch.setattr(sys.modules["iccld.data.synthetic.generate"], "prepare_dataset",
                        lambda kind, root, workers=2, **kw: {})
    assert generate(out, seed=0, workers=1, **TINY)["status"] == "generated"
    assert (out / "source" / "images" / "00003.png").is_file()


def test_label_palette_covers_every_cityscapes_id() -> None:
    assert sorted(LABEL_ID_COLORS) == list(range(34))
    assert LABEL_ID_COLORS[23] == (70, 130, 180)


def test_generate_with_the_real_prepare_step(tmp_path: Path) -> None:
    pytest.importorskip("iccld.data.prepare")
    meta = generate(tmp_path / "bench", seed=0, workers=1, **TINY)
    assert meta["complete"] is True
    assert json.loads((tmp_path / "bench" / "benchmark.json").read_text())["complete"] is True


def _test_split_files(files: dict[str, bytes]) -> set[str]:
    return {k for k in files if k.startswith(("target/leftImg8bit/test/", "target/gtFine/test/"))}


def test_the_test_split_leaves_every_other_file_byte_identical(tiny: Path, tmp_path: Path) -> None:
    """A benchmark without a test split (as made before it existed) has exactly the same source,
    train and val files; the test scenes are new ones, none equal to a val scene."""
    write_benchmark(tmp_path / "no_test", seed=0, workers=1, **{**TINY, "num_test": 0})
    with_test, without = _files(tiny), _files(tmp_path / "no_test")
    test_files = _test_split_files(with_test)
    assert len(test_files) == 2 * 4 and not _test_split_files(without)
    assert set(with_test) - test_files == set(without)
    assert all(with_test[k] == without[k] for k in without if k != "benchmark.json")
    old = json.loads((tmp_path / "no_test" / "benchmark.json").read_text())
    assert "num_test" not in old["parameters"] and "target_test" not in old["counts"]
    val_images = {v for k, v in with_test.items() if k.startswith("target/leftImg8bit/val/")}
    test_images = {v for k, v in with_test.items() if k.startswith("target/leftImg8bit/test/")}
    assert len(test_images) == 4 and not test_images & val_images
    # image i of each split has its own seed: (seed, split code, i)
    assert image_seed(0, "test", 0).entropy == [0, 3, 0] and image_seed(0, "val", 0).entropy == [0, 2, 0]


def test_a_finished_benchmark_without_test_split_gets_only_the_test_split(tmp_path: Path, monkeypatch) -> None:
    prepared = []
    monkeypatch.setattr(sys.modules["iccld.data.synthetic.generate"], "prepare_dataset",
                        lambda kind, root, workers=2, **kw: prepared.append(kind) or {})
    out = tmp_path / "bench"
    generate(out, seed=0, workers=1, **{**TINY, "num_test": 0})
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.png")}
    meta = generate(out, seed=0, workers=1, **TINY)
    assert meta["status"] == "test split added" and meta["complete"] is True
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before} == before  # not rewritten
    added = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png") if p not in before)
    assert len(added) == 8 and all("/test/" in p for p in added)
    assert prepared == ["gta5", "cityscapes"] * 2
    stored = json.loads((out / "benchmark.json").read_text())
    assert stored["parameters"]["num_test"] == 4 and stored["counts"]["target_test"] == 4
    assert generate(out, seed=0, workers=1, **TINY)["status"] == "already generated"
    with pytest.raises(DataError, match="num_test"):  # another test size is other parameters
        generate(out, seed=0, workers=1, **{**TINY, "num_test": 2})


def test_panning_clip_moves_the_scene_by_pan_pixels_per_frame():
    from iccld.data.synthetic import panning_clip

    clean = list(panning_clip((40, 24), 4, pan=3, seed=5, noise=0))
    assert len(clean) == 4 and clean[0][0].shape == (24, 40, 3) and clean[0][1].shape == (24, 40)
    for (f0, l0), (f1, l1) in zip(clean, clean[1:]):  # frame t+1 is frame t moved 3 pixels left
        assert np.array_equal(f1[:, :-3], f0[:, 3:]) and np.array_equal(l1[:, :-3], l0[:, 3:])
    assert set(np.unique(clean[0][1])) <= set(range(19)) | {255}
    noisy = list(panning_clip((40, 24), 4, pan=3, seed=5, noise=2.0))
    diff = noisy[2][0].astype(int) - clean[2][0].astype(int)
    assert 1.0 < diff.std() < 3.0 and np.array_equal(noisy[2][1], clean[2][1])  # noise on the image only
    again = list(panning_clip((40, 24), 4, pan=3, seed=5, noise=2.0))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(noisy, again))
