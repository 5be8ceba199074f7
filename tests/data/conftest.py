"""Prepared tiny datasets in each real format, shared by the tests of iccld.data.

The builders themselves live in tests/data/fixtures.py (importable from any test)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from iccld.data.prepare import prepare_dataset

from .fixtures import make_cityscapes, make_gta5, make_synthia


@pytest.fixture(scope="session")
def _prepared_roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("prepared")
    roots = {"gta5": make_gta5(base / "gta5", 4, (64, 48)),
             "synthia": make_synthia(base / "synthia", 4, (64, 48)),
             "cityscapes": make_cityscapes(base / "cityscapes", ("train", "val"), 3, (64, 32))}
    for kind, root in roots.items():
        prepare_dataset(kind, root, workers=1, progress=False)
    return roots


@pytest.fixture
def prepared(_prepared_roots, tmp_path) -> dict[str, Path]:
    """Fresh copies (tests may damage them) of prepared GTA5 / SYNTHIA / Cityscapes roots."""
    return {kind: Path(shutil.copytree(root, tmp_path / kind)) for kind, root in _prepared_roots.items()}
