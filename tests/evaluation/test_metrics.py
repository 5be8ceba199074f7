"""Confusion matrix and IoU against hand-computed values; SYNTHIA subsets; the NaN convention."""

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist

from iccld.data.labels import CLASSES, SYNTHIA13, SYNTHIA16
from iccld.evaluation.metrics import SYNTHIA_SUBSETS, ConfusionMatrix


def _hand_case() -> ConfusionMatrix:
    cm = ConfusionMatrix(num_classes=4, ignore_index=255, class_names=["a", "b", "c", "d"])
    target = torch.tensor([[0, 0, 1, 1], [2, 255, 0, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 2]])
    cm.update(pred, target)
    return cm


def test_matrix_iou_and_accuracy_by_hand():
    cm = _hand_case()
    # Valid (gt, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,0) (0,0) (1,2); the 255 pixel is skipped.
    expected = torch.tensor([[2, 1, 0, 0], [0, 2, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert cm.matrix.dtype == torch.int64
    assert torch.equal(cm.matrix, expected)
    iou = cm.iou()
    # a: 2 / (3 + 3 - 2); b: 2 / (3 + 3 - 2); c: 0 / (1 + 1 - 0); d: absent from both -> NaN
    assert iou[:3].tolist() == [0.5, 0.5, 0.0]
    assert math.isnan(iou[3])
    s = cm.summary()
    assert s["miou"] == pytest.approx(100 / 3)  # d is left out of the mean
    assert s["per_class"] == {"a": 50.0, "b": 50.0, "c": 0.0, "d": None}
    assert s["pixel_accuracy"] == pytest.approx(100 * 4 / 7)


def test_confusions_say_where_each_class_went():
    cm = _hand_case()  # rows a: [2, 1, 0, 0], b: [0, 2, 1, 0], c: [1, 0, 0, 0]; d absent
    cm.update(torch.tensor([7, 2]), torch.tensor([1, 1]))  # one b pixel unassigned, one more as c
    rows = cm.confusions(top=2)
    assert [r["class"] for r in rows] == ["a", "b", "c"]  # d has no ground-truth pixels
    a, b, c = rows
    assert a["pixels"] == 3 and a["correct"] == pytest.approx(200 / 3)
    assert a["predicted_as"] == [{"class": "b", "share": pytest.approx(100 / 3)}]
    assert b["pixels"] == 5 and b["correct"] == pytest.approx(40.0) and b["unassigned"] == pytest.approx(20.0)
    assert b["predicted_as"] == [{"class": "c", "share": pytest.approx(40.0)}]
    assert c["correct"] == 0.0 and c["predicted_as"] == [{"class": "a", "share": 100.0}]
    assert cm.confusions(top=0)[0]["predicted_as"] == []
    with pytest.raises(ValueError):
        cm.confusions(top=-1)


def test_confusions_order_mistakes_by_share():
    cm = ConfusionMatrix(num_classes=4)
    cm.update(torch.tensor([3, 3, 3, 1, 2, 2, 0]), torch.tensor([0, 0, 0, 0, 0, 0, 0]))
    (row,) = cm.confusions(top=2)
    assert [p["class"] for p in row["predicted_as"]] == ["3", "2"]  # 3/7 then 2/7; 1/7 is cut (numbers: no names for 4 classes)
    assert [round(p["share"], 2) for p in row["predicted_as"]] == [42.86, 28.57]


def test_updates_accumulate():
    cm = ConfusionMatrix(num_classes=4)
    cm.update(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]))
    cm.update(torch.tensor([0, 2, 0, 2]), torch.tensor([2, 255, 0, 1]))
    assert torch.equal(cm.matrix, _hand_case().matrix)
    cm.reset()
    assert int(cm.matrix.sum()) == 0


def test_prediction_outside_classes_is_a_miss_not_a_false_positive():
    cm = ConfusionMatrix(num_classes=2)
    cm.update(torch.tensor([0, 255, 1]), torch.tensor([0, 0, 1]))
    assert cm.iou().tolist() == [0.5, 1.0]  # class 0: 1 / (2 + 1 - 1)
    assert cm.summary()["pixel_accuracy"] == pytest.approx(200 / 3)


def test_invalid_ground_truth_raises():
    cm = ConfusionMatrix(num_classes=3)
    with pytest.raises(ValueError, match="7"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))


def test_matches_a_naive_count_on_random_data():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (3, 17, 13), generator=g)
    target[target == 5] = 255
    pred = torch.randint(0, 5, (3, 17, 13), generator=g)
    cm = ConfusionMatrix(num_classes=5)
    cm.update(pred, target)
    naive = np.zeros((5, 5), dtype=np.int64)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist()):
        if t != 255:
            naive[t, p] += 1
    assert np.array_equal(cm.matrix.numpy(), naive)


def _synthia_case() -> ConfusionMatrix:
    """Every SYNTHIA16 class has GT; odd ones are half missed (IoU 0.5), even ones perfect.
    Terrain, truck and train have GT pixels that are never predicted (IoU 0); misses are 255
    predictions so no other class gets a false positive."""
    target, pred = [], []
    for c in range(19):
        if c in SYNTHIA16:
            target += [c, c]
            pred += [c, c] if c % 2 == 0 else [c, 255]
        else:
            target += [c]
            pred += [255]
    cm = ConfusionMatrix()
    cm.update(torch.tensor(pred), torch.tensor(target))
    return cm


def test_synthia_subsets_when_missing_classes_have_iou_zero():
    s = _synthia_case().summary(SYNTHIA_SUBSETS)
    iou = {c: (1.0 if c % 2 == 0 else 0.5) if c in SYNTHIA16 else 0.0 for c in range(19)}
    assert s["miou"] == pytest.approx(100 * sum(iou.values()) / 19)
    assert s["miou16"] == pytest.approx(100 * sum(iou[c] for c in SYNTHIA16) / 16)
    assert s["miou13"] == pytest.approx(100 * sum(iou[c] for c in SYNTHIA13) / 13)
    assert s["miou16"] == pytest.approx(s["miou"] * 19 / 16)
    assert s["per_class"]["terrain"] == 0.0 and s["per_class"]["road"] == 100.0
    assert list(s["per_class"]) == list(CLASSES)


def test_synthia_subsets_when_missing_classes_are_absent_from_both():
    # Without GT for terrain/truck/train their IoU is undefined and skipped, so mIoU19 == mIoU16.
    target, pred = [], []
    for c in SYNTHIA16:
        target += [c, c]
        pred += [c, c] if c % 2 == 0 else [c, 255]
    cm = ConfusionMatrix()
    cm.update(torch.tensor(pred), torch.tensor(target))
    s = cm.summary(SYNTHIA_SUBSETS)
    assert s["per_class"]["truck"] is None
    assert s["miou"] == pytest.approx(s["miou16"])


def test_empty_matrix_summary_is_all_none():
    s = ConfusionMatrix(num_classes=2, class_names=["x", "y"]).summary()
    assert s == {"miou": None, "per_class": {"x": None, "y": None}, "pixel_accuracy": None}


def test_bad_subset_raises():
    with pytest.raises(ValueError, match="subset"):
        ConfusionMatrix(num_classes=3).summary({"miou2": [0, 5]})


def test_reduce_is_a_no_op_without_distributed_and_sums_with_one_process(tmp_path):
    cm = _hand_case()
    expected = cm.matrix.clone()
    cm.reduce_across_processes()
    assert torch.equal(cm.matrix, expected)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cm.reduce_across_processes()
        assert torch.equal(cm.matrix, expected)
        cm.update(torch.tensor([0]), torch.tensor([0]))  # still usable after the reduce
        assert int(cm.matrix[0, 0]) == 3
    finally:
        dist.destroy_process_group()
