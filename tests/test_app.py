"""``iccld app`` without a browser: the page's function against ``iccld predict``, the class shares,
the missing extra, and an exported folder's Space entry point (tests/test_app_browser.py drives the
page itself in Chromium)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_support import need, tiny_stage2_export
from iccld.app import MAX_DRAWS, class_shares, load_app_model
from iccld.cli import main
from iccld.data.labels import CLASSES, PALETTE


@pytest.fixture(scope="module")
def exported(tiny_benchmark, tmp_path_factory) -> Path:
    return tiny_stage2_export(tiny_benchmark, tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def street(tiny_benchmark) -> Path:
    return sorted((tiny_benchmark / "target" / "leftImg8bit" / "val").rglob("*.png"))[0]


def test_class_shares_count_the_pixels_largest_first():
    label = np.array([[0, 0, 0, 13], [13, 10, 0, 0]], np.uint8)  # 5 road, 2 car, 1 sky
    assert class_shares(label) == [["road", 62.5], ["car", 25.0], ["sky", 12.5]]


def test_the_page_shows_what_predict_writes(exported, street, tmp_path):
    app_model = load_app_model(str(exported))
    assert app_model.path == "diffusion" and app_model.method == "stage2"
    # the config's val images are reachable from here: offered as examples
    assert len(app_model.examples) == 4 and all(p.suffix == ".png" and p.is_file() for p in app_model.examples)
    result = app_model.run(str(street), app_model.default_steps, 2)
    assert main(["predict", str(street), "--checkpoint", str(exported), "--out", str(tmp_path / "pred"),
                 "--samples", "2"]) == 0
    stem = street.stem
    for name in ("color", "overlay", "uncertainty"):
        written = np.asarray(Image.open(tmp_path / "pred" / f"{stem}_{name}.png"))
        assert written.shape == (64, 128, 3) and np.array_equal(result[name], written), name
    label = np.asarray(Image.open(result["trainid"]))
    assert Path(result["trainid"]).name == f"{stem}_trainid.png"
    assert np.array_equal(label, np.asarray(Image.open(tmp_path / "pred" / f"{stem}_trainid.png")))
    assert result["shares"] == class_shares(label) and abs(sum(r[1] for r in result["shares"]) - 100) < 0.05
    assert {name for name, _ in result["shares"]} <= set(CLASSES)
    colours = {tuple(c) for c in result["color"].reshape(-1, 3)}
    assert colours <= set(PALETTE)
    assert result["status"].startswith("128x64 image, diffusion path, K=4, 2 draws")
    # one draw: no variance to show, and the status says how to get it
    one = app_model.run(str(street), 4, 1)
    assert one["uncertainty"] is None and "two or more draws" in one["status"]
    assert 1 <= app_model.default_steps <= app_model.max_steps and MAX_DRAWS >= 2


def test_a_file_that_is_not_an_image_is_one_line_in_the_status(exported, tmp_path):
    app_model = load_app_model(str(exported))
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    result = app_model.run(str(notes), 4, 2)
    assert result["status"].startswith("Error: notes.txt: cannot read image") and "\n" not in result["status"]
    assert str(tmp_path) not in result["status"]  # the upload's folder means nothing to the user
    assert result["color"] is None and result["trainid"] is None and result["shares"] == []
    assert app_model.run(None, 4, 2)["status"].startswith("Upload an image")


def test_a_direct_path_model_ignores_the_sliders(exported, street):
    app_model = load_app_model(str(exported.parents[1] / "stage1"))  # the run folder of stage 1
    assert app_model.path == "direct"
    a, b = app_model.run(str(street), 1, 1), app_model.run(str(street), 9, 5)
    assert a["uncertainty"] is None and np.array_equal(a["color"], b["color"])
    assert "direct path" in a["status"]


def test_missing_gradio_is_one_line_naming_the_extra(exported, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert main(["app", str(exported)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "iccld app: error: the web demo needs gradio, which is not installed: pip install 'iccld[app]'"


def test_a_bad_model_is_one_line(tmp_path, capsys):
    need("gradio")
    assert main(["app", str(tmp_path / "nope"), "--port", "7999"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(tmp_path / "nope") in err


def test_the_exported_app_py_serves_the_folder_as_a_space(exported, monkeypatch):
    """A Space runs ``python app.py`` with GRADIO_SERVER_NAME/PORT set: app.py builds the page on its
    own folder and leaves host and port to Gradio."""
    need("gradio")
    import gradio as gr

    calls = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: calls.append((self, kw)))
    runpy.run_path(str(exported / "app.py"), run_name="__main__")
    (blocks, kwargs), = calls
    assert kwargs["server_name"] is None and kwargs["server_port"] is None
    assert f"`{exported.name}`: stage2 model" in blocks.config["components"][0]["props"]["value"]  # names it
    assert (exported / "requirements.txt").read_text().startswith("iccld[app]==")


def test_missing_tools_skip_the_web_tests_except_on_ci(monkeypatch, tmp_path):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no_such_module_.*no-chromium"):
        need("no_such_module_", programs=(str(tmp_path / "no-chromium"),))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: not skipped"):
        need("no_such_module_")
    need("numpy", programs=(sys.executable,))  # all there: nothing happens


def test_only_the_app_imports_gradio_and_only_inside_functions():
    """The core install stays lean: importing iccld (its CLI included) never needs gradio."""
    import ast

    from test_architecture import graph, modules

    assert [m for m, targets in graph().items() if any(t.split(".")[0] == "gradio" for t in targets)] == ["iccld.app"]
    top = ast.parse(modules()["iccld.app"].read_text()).body
    names = {a.name for n in top if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert not any("gradio" in (getattr(n, "module", None) or "") for n in top) and "gradio" not in names
