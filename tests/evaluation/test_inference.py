"""Whole-image and sliding-window inference: resizing, stitching, padding."""

import pytest
import torch

from iccld.evaluation.inference import slide_inference, whole_inference, window_starts

WEIGHT = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))


def pointwise(x: torch.Tensor) -> torch.Tensor:
    """A 1x1 'network': each pixel's logits depend only on that pixel."""
    return torch.einsum("kc,bchw->bkhw", WEIGHT, x)


def test_window_grid_is_mmseg_style():
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]  # last window flush with the border
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(3, 4, 3) == [0]  # image smaller than the window


def test_whole_inference_resizes_low_resolution_logits():
    image = torch.randn(2, 3, 8, 12)
    out = whole_inference(lambda x: torch.ones(2, 5, 2, 3), image)
    assert out.shape == (2, 5, 8, 12)
    torch.testing.assert_close(out, torch.ones(2, 5, 8, 12))


@pytest.mark.parametrize("window,stride", [((16, 20), (16, 20)), ((8, 8), (4, 4)), ((5, 7), (3, 2))])
def test_slide_equals_whole_for_a_pointwise_network(window, stride):
    image = torch.randn(2, 3, 13, 17)
    whole = whole_inference(pointwise, image)
    slide = slide_inference(pointwise, image, window=window, stride=stride, num_classes=5)
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=0)


def test_overlapping_windows_are_averaged_at_the_right_place():
    height, width = 11, 6
    # Channel 0/1 of the image carry absolute row/column; the fake network returns them together
    # with the row index *inside its window*, which differs between overlapping windows.
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    image = torch.stack((rows, cols, torch.zeros(height, width)))[None]  # (1, 3, 11, 6)
    seen = []

    def fake(x):
        seen.append(tuple(x.shape[-2:]))
        local = torch.arange(x.shape[2], dtype=torch.float32)[:, None].expand(x.shape[2], x.shape[3])
        return torch.stack((x[0, 0], x[0, 1], local))[None]

    out = slide_inference(fake, image, window=(4, 6), stride=(3, 6), num_classes=3)
    assert set(seen) == {(4, 6)} and len(seen) == 4
    torch.testing.assert_close(out[0, 0], rows)
    torch.testing.assert_close(out[0, 1], cols)
    # Row windows start at 0, 3, 6, 7 (see test_window_grid_is_mmseg_style).
    expected = torch.zeros(height)
    count = torch.zeros(height)
    for start in (0, 3, 6, 7):
        for r in range(start, start + 4):
            expected[r] += r - start
            count[r] += 1
    torch.testing.assert_close(out[0, 2, :, 0], expected / count)
    assert out[0, 2, 3, 0] == pytest.approx(1.5)  # local row 3 of window 0 and row 0 of window 3


def test_image_smaller_than_window_is_padded_and_cut_back():
    image = torch.randn(1, 3, 5, 6)
    shapes = []

    def net(x):
        shapes.append(tuple(x.shape[-2:]))
        return pointwise(x)

    out = slide_inference(net, image, window=(8, 8), stride=(4, 4), num_classes=5)
    assert shapes == [(8, 8)]
    assert out.shape == (1, 5, 5, 6)
    torch.testing.assert_close(out, pointwise(image))


def test_low_resolution_window_logits_are_upsampled():
    image = torch.randn(1, 3, 16, 16)
    out = slide_inference(lambda x: torch.full((1, 2, 2, 2), 3.0), image, (8, 8), (4, 4), num_classes=2)
    torch.testing.assert_close(out, torch.full((1, 2, 16, 16), 3.0))


def test_bad_arguments_raise():
    image = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="gaps"):
        slide_inference(pointwise, image, (4, 4), (5, 4), num_classes=5)
    with pytest.raises(ValueError, match="expected"):
        slide_inference(pointwise, image, (4, 4), (4, 4), num_classes=3)


class _ThreadSpy(torch.nn.Module):
    """Records torch's thread count when its predict runs."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def predict(self, x, **kwargs):
        self.seen.append(torch.get_num_threads())
        return x.sum()


@pytest.mark.parametrize("shape,inside", [((1, 3, 128, 256), 1),   # the benchmark's images: one thread
                                          ((4, 3, 128, 256), 1),   # B * H * W counts: 4 of them is the limit
                                          ((5, 3, 128, 256), 2),
                                          ((1, 3, 512, 1024), 2)])
def test_model_predict_runs_small_cpu_inputs_on_one_thread(shape, inside):
    from iccld.evaluation.inference import SMALL_INPUT_PIXELS, model_predict

    assert SMALL_INPUT_PIXELS == 512 * 256
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        spy = _ThreadSpy()
        x = torch.zeros(shape)
        assert model_predict(spy, x) == 0
        assert spy.seen == [inside]
        assert torch.get_num_threads() == 2  # restored
        with pytest.raises(ZeroDivisionError):  # restored when predict raises, too
            model_predict(type("Boom", (), {"predict": lambda self, x: 1 / 0})(), x)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_model_predict_is_model_predict_with_the_same_arguments():
    from iccld.evaluation.inference import model_predict
    from iccld.io import build_model_from_config
    from iccld.presets import preset

    torch.manual_seed(0)
    model = build_model_from_config(preset("cpu")).eval()
    x = torch.randn(1, 3, 64, 128, generator=torch.Generator().manual_seed(1))
    for kwargs in (dict(diffusion=False), dict(steps=2, samples=3), dict(steps=4, samples=1)):
        ours = model_predict(model, x, generator=torch.Generator().manual_seed(2), **kwargs)
        theirs = model.predict(x, generator=torch.Generator().manual_seed(2), **kwargs)
        torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-5, atol=1e-5)
        assert (ours.uncertainty is None) == (kwargs.get("samples", 1) == 1)
