"""``iccld app`` in a real browser: its server (:func:`iccld.app.launch`) serves a tiny exported model on
127.0.0.1, headless
Chromium (Debian's chromium + chromium-driver, driven by selenium through /usr/bin/chromedriver; no
browser is downloaded) uploads a street image of the benchmark, the outputs are fetched from the page
and checked, then a text file is uploaded and the page says why it is not an image.

Skipped with the reason when chromium, chromedriver, selenium or gradio is missing, except under
CI=true, where that fails (.ci/run installs the Debian packages). ICCLD_SCREENSHOT=1 also writes the
page's screenshot to docs/images/app.png (the README's), which is otherwise kept under the test's
tmp folder so that a test run leaves the checkout as it was.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_support import need, tiny_stage2_export
from conftest import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOT = REPO / "docs" / "images" / "app.png"
WAIT = 30  # seconds any one thing may take to appear in the page
# Gradio's own run monitoring (gradio/queueing.py) uses pandas options that pandas 3 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:.*no_silent_downcasting:DeprecationWarning",
                                        "ignore:The copy keyword is deprecated:DeprecationWarning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def server(tiny_benchmark, tmp_path_factory, monkeypatch_module):
    """What `iccld app EXPORTED --host 127.0.0.1 --port N` runs, serving from a thread of this process
    (a process of its own would spend seconds importing torch again); yields (url, Blocks)."""
    need("gradio", "selenium", programs=(CHROMIUM, CHROMEDRIVER))
    from iccld.app import launch

    root = tmp_path_factory.mktemp("appserver")
    exported = tiny_stage2_export(tiny_benchmark, root)
    monkeypatch_module.setenv("GRADIO_TEMP_DIR", str(root / "gradio"))  # Gradio's uploads and outputs
    port = free_port()
    blocks = launch(str(exported), host="127.0.0.1", port=port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/", blocks
    finally:
        blocks.close()


@pytest.fixture(scope="module")
def browser():
    need("selenium", programs=(CHROMIUM, CHROMEDRIVER))
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_an_image_then_a_text_file(server, browser, tiny_benchmark, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from iccld.data.labels import CLASSES, PALETTE, colorize

    url, blocks = server
    wait = WebDriverWait(browser, WAIT)
    status = lambda: browser.find_element(By.ID, "status").text  # noqa: E731
    images = lambda: {e.get_attribute("id"): e.find_element(By.TAG_NAME, "img").get_attribute("src")  # noqa: E731
                      for e in browser.find_elements(By.CSS_SELECTOR, "#color, #overlay, #uncertainty")
                      if e.find_elements(By.TAG_NAME, "img")}
    browser.get(url)
    upload = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#image input[type=file]"))
    street = sorted((tiny_benchmark / "target" / "leftImg8bit" / "val").rglob("*.png"))[0]
    # the exported config's val images are reachable here: offered as examples
    assert street.name in browser.find_element(By.TAG_NAME, "body").text
    upload.send_keys(str(street))
    wait.until(lambda b: "draws" in status() and len(images()) == 3)
    assert status().startswith("128x64 image, diffusion path, K=4, 2 draws")
    shown = {name: np.asarray(Image.open(io.BytesIO(fetch(src))).convert("RGB")) for name, src in images().items()}
    for name, array in shown.items():
        assert array.shape == (64, 128, 3), name  # the input's size
    colours, counts = np.unique(shown["color"].reshape(-1, 3), axis=0, return_counts=True)
    assert {tuple(int(v) for v in c) for c in colours} <= set(PALETTE)
    # the download is the train-id PNG behind the colour map
    href = wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#trainid a").get_attribute("href"))
    label = np.asarray(Image.open(io.BytesIO(fetch(href))))
    assert label.shape == (64, 128) and label.max() < len(CLASSES)
    assert np.array_equal(colorize(label), shown["color"])
    # the table: a row per colour of the map, the first its commonest colour's class and share
    top = PALETTE.index(tuple(int(v) for v in colours[counts.argmax()]))
    grid = browser.find_element(By.CSS_SELECTOR, "#shares [role=grid]")
    assert int(grid.get_attribute("aria-rowcount")) == 1 + len(colours)  # the header + a row per class
    cell = lambda col: browser.find_element(By.CSS_SELECTOR, f"#shares [data-testid=cell-0-{col}]").text  # noqa: E731
    wait.until(lambda b: cell(0) and cell(1))
    assert cell(0) == CLASSES[top] and float(cell(1)) == round(100 * counts.max() / label.size, 2)

    browser.set_window_size(1400, max(1000, browser.execute_script("return document.body.scrollHeight")))
    browser.save_screenshot(str(tmp_path / "app.png"))
    assert Image.open(tmp_path / "app.png").size[0] == 1400
    if os.environ.get("ICCLD_SCREENSHOT") == "1":
        shutil.copyfile(tmp_path / "app.png", SCREENSHOT)

    # one noise draw, typed into the slider's box: no variance, so no uncertainty map
    draws = browser.find_element(By.CSS_SELECTOR, "#draws input[type=number]")
    draws.send_keys(Keys.CONTROL, "a", Keys.NULL, "1", Keys.ENTER)
    wait.until(lambda b: "1 draw" in status())
    assert set(images()) == {"color", "overlay"}

    # a text file: one line in the status box, no outputs, and the server goes on serving
    browser.find_element(By.CSS_SELECTOR, "#image button[aria-label=Clear]").click()
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#image input[type=file]")).send_keys(str(notes))
    wait.until(lambda b: status().startswith("Error"))
    assert status().startswith("Error: notes.txt: cannot read image") and images() == {}
    assert blocks.is_running and fetch(url)
