"""Plain-text and markdown IoU tables."""

import pytest

from iccld.evaluation.report import format_table, markdown_table

SUMMARY = {"miou": 55.56, "miou16": 60.0, "per_class": {"road": 97.04, "wall": None, "sky": 14.0},
           "pixel_accuracy": 90.123}


def test_format_table_lists_classes_means_and_undefined_values():
    lines = format_table(SUMMARY).splitlines()
    rows = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1] for line in lines
            if line and not line.startswith("-")}
    assert rows["road"] == "97.0"
    assert rows["wall"] == "-"
    assert rows["sky"] == "14.0"
    assert rows["mIoU (3 classes)"] == "55.6"
    assert rows["mIoU (16 classes)"] == "60.0"
    assert rows["pixel accuracy"] == "90.1"


def test_markdown_table_has_one_column_per_method():
    other = {"miou": 40.0, "per_class": {"road": 80.0, "wall": 10.0, "sky": 30.0},
             "pixel_accuracy": 70.0}
    table = markdown_table({"ICCLD": SUMMARY, "source|only": other}).splitlines()
    assert table[0] == "| class | ICCLD | source\\|only |"
    assert table[1] == "|---|---:|---:|"
    assert "| road | 97.0 | 80.0 |" in table
    assert "| wall | - | 10.0 |" in table
    assert "| **mIoU (16 classes)** | 60.0 | - |" in table
    assert table[-1] == "| **pixel accuracy** | 90.1 | 70.0 |"
    assert len(table) == 2 + 3 + 3  # header, rule, classes, mIoU / mIoU16 / accuracy
    with pytest.raises(ValueError):
        markdown_table({})


def test_format_confusions_lists_mistakes_per_class():
    import torch

    from iccld.evaluation.metrics import ConfusionMatrix
    from iccld.evaluation.report import format_confusions

    cm = ConfusionMatrix(num_classes=19)
    gt = torch.tensor([10] * 10 + [0] * 4)  # 10 sky pixels, 4 road pixels
    pred = torch.tensor([10] * 4 + [2] * 5 + [8] + [0] * 4)  # sky: 4 right, 5 building, 1 vegetation
    cm.update(pred, gt)
    text = format_confusions(cm.confusions())
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["class", "GT", "pixels"]
    road = next(line for line in lines if line.startswith("road"))
    sky = next(line for line in lines if line.startswith("sky"))
    assert road.split()[1:] == ["4", "100.0", "-"]
    assert sky.split(None, 3)[1:] == ["10", "40.0", "building 50.0, vegetation 10.0"]
    assert format_confusions([]) == "no labelled pixels"
