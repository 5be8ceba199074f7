"""Runs saved before the redesign (tests/fixtures/legacy_v0, written by the code of commit e3a4104) still
load and give the outputs they gave then."""

from pathlib import Path

import pytest
import torch

from iccld.evaluation.loading import load_models

LEGACY = Path(__file__).parent / "fixtures" / "legacy_v0"


@pytest.mark.parametrize("run, path", [("stage1", "direct"), ("stage2", "diffusion")])
def test_legacy_run_loads_with_its_inference_path_and_outputs(run, path):
    expected = torch.load(LEGACY / "expected.pt")
    loaded = load_models(str(LEGACY / run / "final"))
    assert loaded.method == run and loaded.inference_path == path
    model = loaded.models["ema"]
    x = expected["x"]
    direct = model.predict(x, diffusion=False).logits
    torch.testing.assert_close(direct, expected[f"{run}/direct"], rtol=1e-5, atol=1e-5)
    sampled = model.predict(x, steps=4, generator=torch.Generator().manual_seed(1)).logits
    torch.testing.assert_close(sampled, expected[f"{run}/diffusion"], rtol=1e-5, atol=1e-5)
