"""``iccld app``: a local web demo of a trained model (Gradio), also what an exported folder runs as a
Hugging Face Space (its ``app.py``, written by ``iccld export``, calls :func:`launch`).

The page takes an image (an upload, or one of a few val images when the model's config points at a
reachable val set) and shows, side by side, what ``iccld predict`` writes: the colour map, the
overlay and, with two or more noise draws, the uncertainty map; sliders set the DDIM steps K and the
draws; a table gives each class's share of the pixels; the train-id PNG is offered for download.
A file that is not an image gives one line in the page's status box and the server keeps running.

Gradio is an optional extra (``pip install 'iccld[app]'``), imported only here, inside functions:
the core install never needs it. The page is made of plain functions (:class:`AppModel`), so
everything but the Gradio wiring is testable without a browser.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data.io import read_image, write_png
from .data.labels import CLASSES
from .errors import ICCLDError, MissingExtraError
from .evaluation.loading import load_models, pick_device
from .evaluation.predict import segment

EXTRA = "pip install 'iccld[app]'"
MAX_EXAMPLES = 4  # val images offered as examples
MAX_DRAWS = 8  # the draws slider's top
IMAGE_HEIGHT = 240  # pixels of each output image on the page
# the output images fill their boxes (a 128x64 image is scaled up, its pixels kept sharp); the files
# behind them stay at the input's size
CSS = """#color img, #overlay img, #uncertainty img {
    width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"""


def require_gradio():
    """The ``gradio`` module, or a one-line MissingExtraError naming the extra to install."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo
    try:
        import gradio
    except ImportError:
        raise MissingExtraError(f"the web demo needs gradio, which is not installed: {EXTRA}") from None
    return gradio


@dataclass
class AppModel:
    """A loaded model and what the page needs to know about it."""

    source: str  # what the user named: run folder, exported folder or Hub id
    model: torch.nn.Module
    path: str  # "diffusion" or "direct"
    method: str
    resize: tuple[int, int] | None  # (W, H) the model sees, as `iccld predict` does; None: native
    keep_ratio: bool = True  # fit into ``resize`` keeping the aspect ratio (data.val.keep_ratio)
    examples: list[Path] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="iccld-app-")))

    @property
    def name(self) -> str:
        """The folder's name for a local model, the repo id for one from the Hub."""
        return Path(self.source).name if Path(self.source).exists() else self.source

    @property
    def diffusion(self) -> bool:
        return self.path == "diffusion"

    @property
    def default_steps(self) -> int:
        return int(self.model.sampling_steps)

    @property
    def max_steps(self) -> int:
        return int(min(self.model.diffusion.num_train_timesteps, max(50, self.default_steps)))

    def run(self, image: str | None, steps: int, draws: int) -> dict:
        """Segment the file ``image`` with K = ``steps`` and ``draws`` noise draws (ignored on the direct
        path). Returns the page's outputs: color, overlay, uncertainty ((H, W, 3) uint8 or None),
        shares (rows [class, percent]), trainid (path of the written PNG) and status (one line)."""
        if not image:
            return _empty("Upload an image or pick an example.")
        start = time.perf_counter()
        try:
            rgb = read_image(image)
            steps, draws = int(steps), int(draws)
            if self.diffusion:
                result = segment(self.model, rgb, path=self.path, steps=steps, samples=draws,
                                 generator=torch.Generator().manual_seed(0), resize=self.resize,
                                 keep_ratio=self.keep_ratio)
            else:
                result = segment(self.model, rgb, path=self.path, resize=self.resize,
                                 keep_ratio=self.keep_ratio)
        except ICCLDError as exc:  # an unreadable file, an image too small for the encoder
            # the upload's path is a folder of Gradio's cache: its name is what the user knows
            message = " ".join(str(exc).split()).replace(str(image), Path(image).name)
            return _empty(f"Error: {message}")
        out = Path(tempfile.mkdtemp(dir=self.workdir)) / f"{Path(image).stem}_trainid.png"
        write_png(out, result.label)
        how = (f"diffusion path, K={steps}, {draws} draw{'s' if draws > 1 else ''}" if self.diffusion
               else "direct path D(z0)")
        status = (f"{rgb.shape[1]}x{rgb.shape[0]} image, {how}, {time.perf_counter() - start:.2f} s"
                  + ("" if result.uncertainty is not None or not self.diffusion
                     else "; two or more draws give the uncertainty map"))
        return {"color": result.color, "overlay": result.overlay, "uncertainty": result.uncertainty,
                "shares": class_shares(result.label), "trainid": str(out), "status": status}


def _empty(status: str) -> dict:
    return {"color": None, "overlay": None, "uncertainty": None, "shares": [], "trainid": None,
            "status": status}


def class_shares(label: np.ndarray) -> list[list]:
    """(H, W) train ids -> rows [class name, percent of the pixels (2 decimals)] of the classes
    present, largest first."""
    counts = np.bincount(label.ravel(), minlength=len(CLASSES))[:len(CLASSES)]
    order = sorted((i for i in range(len(CLASSES)) if counts[i]), key=lambda i: (-counts[i], i))
    return [[CLASSES[i], round(100.0 * counts[i] / label.size, 2)] for i in order]


def val_examples(config, limit: int = MAX_EXAMPLES) -> list[Path]:
    """Up to ``limit`` images of the config's val set, when it is reachable from here; [] otherwise
    (a model from the Hub names the trainer's folders)."""
    if config is None:
        return []
    from .data.build import build_dataset

    try:
        dataset = build_dataset(config.data.val, train=False, labelled=False)
    except (ICCLDError, OSError):
        return []
    return [s.image for s in dataset.samples[:limit] if Path(s.image).is_file()]


def load_app_model(source: str) -> AppModel:
    """Load ``source`` (run folder, exported folder, last.ckpt or Hub id) as ``iccld predict`` does:
    the EMA weights, the method's inference path, the training config's val resize."""
    loaded = load_models(source, "ema")
    model = loaded.models["ema"].to(pick_device())
    resize = tuple(loaded.val_resize) if loaded.val_resize else None
    app_model = AppModel(source, model, loaded.inference_path, loaded.method, resize, loaded.val_keep_ratio,
                         val_examples(loaded.config))
    atexit.register(shutil.rmtree, app_model.workdir, ignore_errors=True)
    return app_model


def build_app(app_model: AppModel):
    """The Gradio Blocks of the page."""
    gr = require_gradio()
    outputs_order = ("color", "overlay", "uncertainty", "shares", "trainid", "status")
    with gr.Blocks(title="iccld web demo", analytics_enabled=False) as blocks:
        gr.Markdown(f"## iccld: semantic segmentation\n`{app_model.name}`: {app_model.method} model, "
                    f"{'diffusion path D(sample(z0))' if app_model.diffusion else 'direct path D(z0)'}")
        with gr.Row():
            image = gr.File(label="Image (PNG, JPEG, ...)", type="filepath", elem_id="image")
            with gr.Column():
                steps = gr.Slider(1, app_model.max_steps, value=app_model.default_steps, step=1,
                                  label="Sampling steps K", interactive=app_model.diffusion, elem_id="steps",
                                  info=None if app_model.diffusion else "the direct path draws no noise")
                draws = gr.Slider(1, MAX_DRAWS, value=2 if app_model.diffusion else 1, step=1,
                                  label="Noise draws (2+: uncertainty map)", interactive=app_model.diffusion,
                                  elem_id="draws")
                status = gr.Markdown("Upload an image or pick an example.", elem_id="status")
        if app_model.examples:
            gr.Examples([[str(p)] for p in app_model.examples], inputs=[image], label="Val images")
        with gr.Row():
            color = gr.Image(label="Colour map", type="numpy", format="png", height=IMAGE_HEIGHT,
                             interactive=False, elem_id="color")
            overlay = gr.Image(label="Overlay", type="numpy", format="png", height=IMAGE_HEIGHT,
                               interactive=False, elem_id="overlay")
            uncertainty = gr.Image(label="Uncertainty", type="numpy", format="png", height=IMAGE_HEIGHT,
                                   interactive=False, elem_id="uncertainty")
        with gr.Row():
            shares = gr.Dataframe(headers=["class", "pixels (%)"], datatype=["str", "number"],
                                  label="Classes", interactive=False, elem_id="shares")
            trainid = gr.File(label="Train-id PNG (values 0-18)", interactive=False, elem_id="trainid")

        def run(path, k, n):
            result = app_model.run(path, k, n)
            return [result[name] for name in outputs_order]

        outs = [color, overlay, uncertainty, shares, trainid, status]
        image.change(run, [image, steps, draws], outs)
        for slider in (steps, draws):  # a drag or a typed number; while a run is pending, only the last
            slider.input(run, [image, steps, draws], outs, trigger_mode="always_last")
    return blocks


def launch(source: str, host: str | None = None, port: int | None = None, *, block: bool = True):
    """Load ``source`` and serve its page on ``host``:``port`` (None: Gradio's defaults, which read
    GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, as a Space sets them). With ``block`` this returns when
    the server stops (Ctrl-C); without, it returns the running Blocks (``.close()`` stops it)."""
    gr = require_gradio()  # before loading a model: the missing extra is the first thing said
    app_model = load_app_model(source)
    blocks = build_app(app_model)
    # system fonts: the default theme fetches its web font, which an offline machine cannot
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])
    blocks.launch(server_name=host, server_port=port, prevent_thread_lock=not block, theme=theme, css=CSS,
                  allowed_paths=[str(p) for p in app_model.examples], show_error=True)
    return blocks


def app_command(args) -> int:
    launch(args.model, host=args.host, port=args.port)
    return 0
