"""An ICCLD network as ONNX predictors, and running them with onnxruntime.

:func:`export_onnx` writes two files for one network, each a whole predictor from a normalised image
to logits, with dynamic batch, height and width:

    model.onnx          image (B, 3, H, W), noise (B, Cz, ceil(H/s), ceil(W/s)) -> logits (B, C, H, W):
                        E, the K-step DDIM loop unrolled (K fixed at export) from z_T = ``noise``, D
    model_direct.onnx   image (B, 3, H, W) -> logits (B, C, H, W): the stage-1 path D(z0), no diffusion

The initial noise z_T is an input, not drawn inside the graph, so a result is reproducible and equals
PyTorch's for the same noise (``ICCLD.predict`` draws it with :func:`iccld.diffusion.draw_noise`).
``image`` is normalised as iccld's data pipeline does it (0..255 RGB, minus
:data:`~iccld.models.backbones.normalization.PIPELINE_MEAN`, divided by ``PIPELINE_STD``). Each
file carries what a runner needs in its metadata (key ``iccld``, JSON: the path, K, Cz, s, the
classes, the normalisation).

:class:`OnnxPredictor` runs such a file with onnxruntime behind ``ICCLD.predict``'s interface, so
``iccld evaluate`` and ``iccld predict`` take a ``.onnx`` file as they take a checkpoint.

Graphs are captured with ``torch.onnx.export(dynamo=True)`` (``torch.export``), the generic
``UNet2DModel`` forward for eps_theta (its time embeddings of the K fixed timesteps are constants of
the graph, folded away by onnxruntime). ``onnx``, ``onnxscript`` and ``onnxruntime`` are the optional
extra ``iccld[onnx]``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..diffusion.sampling import ddim_loop, ddim_timesteps, draw_noise
from ..errors import CheckpointError, ConfigError, DataError, MissingExtraError
from ..models import ICCLD, Prediction
from ..models.backbones.normalization import PIPELINE_MEAN, PIPELINE_STD
from ..models.iccld import average_draws
from ..utils import atomic_write_bytes

ONNX_FILE = "model.onnx"  # the diffusion path
DIRECT_ONNX_FILE = "model_direct.onnx"  # the stage-1 path
ONNX_FILES = (ONNX_FILE, DIRECT_ONNX_FILE)
OPSET = 18
METADATA_KEY = "iccld"
FORMAT = "iccld-onnx"
FORMAT_VERSION = 1
INSTALL_HINT = "pip install 'iccld[onnx]'"
# the example batch the graphs are traced with: every dynamic size distinct (equal example sizes
# would be taken for one symbol) and none of them 0 or 1 (the tracer fixes those)
EXAMPLE_BATCH, EXAMPLE_HW = 2, (160, 224)


# ----------------------------------------------------------------------------------------------
# the traced networks


class DiffusionPath(nn.Module):
    """image (B, 3, H, W), noise z_T (B, Cz, h, w) -> logits (B, C, H, W): E, ``steps`` deterministic
    DDIM steps from z_T conditioned on z0, then D: ``ICCLD.predict`` with one draw whose noise is
    given. The loop is unrolled over the K timesteps, fixed here."""

    def __init__(self, model: ICCLD, steps: int) -> None:
        super().__init__()
        self.model = model
        self.sampler = copy.deepcopy(model.diffusion.sampler)  # its own: set_timesteps changes it
        self.timesteps = ddim_timesteps(self.sampler, steps)

    def forward(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        z0, skips = self.model.encode(image)  # (B, Cz, h, w)

        def denoise(z_t: torch.Tensor, t: int) -> torch.Tensor:
            return self.model.diffusion.denoise(z_t, z0, t)

        z0_hat = ddim_loop(denoise, self.sampler, noise, self.timesteps)  # (B, Cz, h, w)
        return self.model.decode(z0_hat, skips, (image.shape[-2], image.shape[-1]))


class DirectPath(nn.Module):
    """image (B, 3, H, W) -> logits (B, C, H, W) of the stage-1 path D(z0, skips)."""

    def __init__(self, model: ICCLD) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        z0, skips = self.model.encode(image)
        return self.model.decode(z0, skips, (image.shape[-2], image.shape[-1]))


# ----------------------------------------------------------------------------------------------
# export


@dataclass(frozen=True)
class OnnxInfo:
    """What an exported file holds (its metadata). ``path``: "diffusion" or "direct"; ``steps``: K
    (None for the direct path); ``timesteps``: the K DDIM timesteps; ``num_classes``: C."""

    path: str
    steps: int | None
    timesteps: list[int] | None
    latent_channels: int
    latent_stride: int
    num_classes: int
    pixel_mean: list[float]
    pixel_std: list[float]
    iccld_version: str
    size_multiple: int = 1  # H and W must be multiples of this (1: any size; see export_onnx)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of z0 and of the noise input for an H x W image."""
        return math.ceil(height / self.latent_stride), math.ceil(width / self.latent_stride)


def _need(module: str, what: str):
    try:
        return __import__(module)
    except ImportError:
        raise MissingExtraError(f"{what} needs the package {module}, not installed: {INSTALL_HINT}") from None


def require_export_packages() -> None:
    """MissingExtraError naming the extra when a package that writing and checking ONNX files needs is missing."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        _need(module, "--onnx (writing and checking ONNX files)")


def export_onnx(model: ICCLD, folder: str | Path, steps: int | None = None) -> dict[str, Path]:
    """Write :data:`ONNX_FILE` (K = ``steps`` DDIM steps, default ``model.sampling_steps``) and
    :data:`DIRECT_ONNX_FILE` of ``model`` into ``folder``, each atomically; returns {path: file}.

    The network is traced on the CPU in fp32, in eval mode (its mode is restored afterwards). Each
    graph is then run with onnxruntime at an odd size (97x131) against the network: a graph the trace
    fixed to its example's sizes (MobileNetV2's TensorFlow-style padding is computed from Python
    ints) is tried at 128x96 too and, when it holds there, marked as taking sides that are multiples
    of 32 (``size_multiple``; the example's sides are). Raises MissingExtraError when the ``onnx`` extra is
    missing, CheckpointError when a graph cannot be captured or holds at neither size.
    """
    if getattr(model, "multires", None) is not None:  # its context + sliding detail inference is not a graph here
        raise CheckpointError("this network uses HRDA multi-resolution (model.multires), whose inference (a "
                              "context branch and sliding detail windows) the ONNX export does not capture; "
                              "evaluate or predict it with PyTorch")
    require_export_packages()
    steps = model.sampling_steps if steps is None else steps
    folder = Path(folder)
    was_training, device = model.training, next(model.parameters()).device
    model.eval().to("cpu")
    try:
        image = torch.randn(EXAMPLE_BATCH, 3, *EXAMPLE_HW, generator=torch.Generator().manual_seed(0))
        direct, diffusion = DirectPath(model), DiffusionPath(model, steps)
        with torch.no_grad():  # Cz and C as the network gives them
            z0, _ = model.encode(image)
            num_classes = direct(image).shape[1]
        info = OnnxInfo(path="diffusion", steps=steps, timesteps=diffusion.timesteps,
                        latent_channels=z0.shape[1], latent_stride=int(model.latent_stride),
                        num_classes=num_classes, pixel_mean=list(PIPELINE_MEAN), pixel_std=list(PIPELINE_STD),
                        iccld_version=__version__)
        if tuple(z0.shape[-2:]) != info.latent_size(*EXAMPLE_HW):
            raise CheckpointError(f"the network's latent is {tuple(z0.shape[-2:])} for a {EXAMPLE_HW} image, not "
                                  f"ceil(size / {info.latent_stride}); cannot describe its noise input")
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(1))
        image_axes = {0: "batch", 2: "height", 3: "width"}
        graphs = {
            "diffusion": (diffusion, (image, noise), {"image": image_axes,
                          "noise": {0: "batch", 2: "latent_height", 3: "latent_width"}}, info),
            "direct": (direct, (image,), {"image": image_axes},
                       replace(info, path="direct", steps=None, timesteps=None)),
        }
        written = {}
        for path, (module, args, axes, meta) in graphs.items():
            out = folder / (ONNX_FILE if path == "diffusion" else DIRECT_ONNX_FILE)
            proto = _trace(module, args, axes, meta)
            meta = replace(meta, size_multiple=_size_multiple(module, proto.SerializeToString(), meta, out.name))
            entry = proto.metadata_props.add()
            entry.key, entry.value = METADATA_KEY, json.dumps(asdict(meta))
            atomic_write_bytes(out, proto.SerializeToString())
            written[path] = out
        return written
    finally:
        model.train(was_training).to(device)


def _trace(module: nn.Module, args: tuple, axes: dict, info: OnnxInfo):
    """The ONNX model (an ``onnx.ModelProto``) of ``module`` on ``args``, its ``axes`` dynamic."""
    names = list(axes)
    chatter = io.StringIO()  # torch.onnx prints its progress and logs warnings about absent torchvision ops
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    try:
        logger.setLevel(logging.ERROR)
        with torch.no_grad(), contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, opset_version=OPSET, input_names=names,
                                        output_names=["logits"], dynamic_shapes=axes, optimize=True,
                                        verbose=False)
    except Exception as exc:  # torch.export raises many kinds of errors for code it cannot capture
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"the {info.path} path could not be captured as an ONNX graph ({first})") from None
    finally:
        logger.setLevel(level)
    proto = program.model_proto
    proto.producer_name, proto.producer_version = "iccld", __version__
    return proto


# (H, W) a traced graph is tried at: odd sides, then multiples of 32
PROBES = ((1, (97, 131)), (32, (96, 128)))


def _size_multiple(module: nn.Module, data: bytes, info: OnnxInfo, name: str) -> int:
    """1 when the serialised graph gives ``module``'s logits at odd sides, 32 when only at multiples
    of 32; CheckpointError when at neither (see :func:`export_onnx`)."""
    import onnxruntime as ort

    options = _session_options(ort, None)
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(2)
    for multiple, (h, w) in PROBES:
        feed = {"image": torch.randn(1, 3, h, w, generator=generator)}
        if info.path == "diffusion":
            feed["noise"] = torch.randn(1, info.latent_channels, *info.latent_size(h, w), generator=generator)
        with torch.no_grad():
            expected = module(*feed.values())
        try:
            (got,) = session.run(["logits"], {k: v.numpy() for k, v in feed.items()})
        except Exception:  # onnxruntime's own error types: a shape the graph does not take
            continue
        if torch.allclose(torch.from_numpy(got), expected, atol=1e-3, rtol=1e-3):
            return multiple
    raise CheckpointError(f"{name}: the traced {info.path} path gives the network's logits neither at "
                          f"{PROBES[0][1][1]}x{PROBES[0][1][0]} nor at {PROBES[1][1][1]}x{PROBES[1][1][0]} (WxH); "
                          "this network does not export to ONNX")


# ----------------------------------------------------------------------------------------------
# running


def _session_options(ort, threads: int | None):
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # idle threads sleep instead of spinning, as the CLI's OMP_WAIT_POLICY=PASSIVE asks of torch's
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 4  # its errors reach the user as iccld's one-line errors, not its log
    return options


class OnnxPredictor:
    """An exported ``.onnx`` file run by onnxruntime (CPU) behind ``ICCLD.predict``'s interface.

    ``eval``, ``train`` and ``to`` are accepted and do nothing (the graph is in eval mode and runs on
    the CPU; inputs on another device are copied and the logits returned to it). ``config`` is the
    file's :class:`OnnxInfo` (``config.num_classes`` as on a network's config).
    """

    training = False

    def __init__(self, file: Path, session, info: OnnxInfo) -> None:
        self.file, self.session, self.config = Path(file), session, info
        self.device = torch.device("cpu")

    @property
    def path(self) -> str:
        """"diffusion" or "direct": which path the file holds."""
        return self.config.path

    def eval(self) -> "OnnxPredictor":
        return self

    def train(self, mode: bool = True) -> "OnnxPredictor":
        return self

    def to(self, *args, **kwargs) -> "OnnxPredictor":
        return self

    def run(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, C, H, W) of one call of the graph, on ``image``'s device."""
        feed = {"image": image.detach().to("cpu", torch.float32).contiguous().numpy()}
        if noise is not None:
            feed["noise"] = noise.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            (logits,) = self.session.run(["logits"], feed)
        except Exception as exc:  # onnxruntime's own error types
            first = str(exc).strip().splitlines()[0][:200]
            raise DataError(f"{self.file}: onnxruntime failed on a {image.shape[-1]}x{image.shape[-2]} (WxH) "
                            f"input ({first})") from None
        return torch.from_numpy(logits).to(image.device)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, steps: int | None = None, samples: int = 1,
                generator: torch.Generator | None = None, diffusion: bool = True) -> Prediction:
        """As :meth:`iccld.models.ICCLD.predict`: the same noise draws from ``generator`` (the i-th
        (B, Cz, h, w) draw for draw i), so the same logits up to float rounding. E runs once per
        draw here (the graph takes one draw)."""
        if diffusion != (self.path == "diffusion"):
            other = DIRECT_ONNX_FILE if diffusion is False else ONNX_FILE
            raise ConfigError(f"{self.file}: holds the {self.path} path; the {'direct' if not diffusion else 'diffusion'} "
                              f"path is in {other} beside it (`iccld export --onnx` writes both)")
        m = self.config.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise DataError(f"{self.file}: takes images whose sides are multiples of {m} (the network's padding "
                            f"was fixed when it was traced), got {x.shape[-1]}x{x.shape[-2]} (WxH); resize them")
        if not diffusion:
            return Prediction(self.run(x), None)
        if steps is not None and steps != self.config.steps:
            raise ConfigError(f"{self.file}: its DDIM loop is unrolled for K={self.config.steps} steps, not "
                              f"{steps}; export again with `iccld export RUN --onnx --steps {steps}`")
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples: the number of noise draws must be an integer >= 1, got {samples!r}")
        like = torch.empty(x.shape[0], self.config.latent_channels, *self.config.latent_size(*x.shape[-2:]))
        return average_draws(self.run(x, draw_noise(like, generator)) for _ in range(samples))


def read_onnx_info(session, file: Path) -> OnnxInfo:
    """The :class:`OnnxInfo` in an onnxruntime session's metadata; CheckpointError when it has none."""
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(f"{file}: an ONNX model without iccld's metadata; export it with `iccld export RUN --onnx`")
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"format version {data['format_version']}, newer than this iccld reads")
        return OnnxInfo(**data)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{file}: unreadable iccld metadata ({exc})") from None


def load_onnx(file: str | Path, threads: int | None = None) -> OnnxPredictor:
    """An :class:`OnnxPredictor` of ``file`` on ``threads`` intra-op threads (default: torch's
    thread count). One-line CheckpointError for a missing, damaged or foreign file; MissingExtraError
    when onnxruntime is not installed."""
    file = Path(file)
    if not file.is_file():
        raise CheckpointError(f"{file}: no such ONNX file")
    ort = _need("onnxruntime", f"{file}: running an ONNX model")
    options = _session_options(ort, threads if threads is not None else torch.get_num_threads())
    try:
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises InvalidProtobuf, Fail, ... for a damaged file
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{file}: not a readable ONNX model ({first})") from None
    return OnnxPredictor(file, session, read_onnx_info(session, file))
