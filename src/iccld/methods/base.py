"""What every training objective shares: the trainable ``model``, its EMA copy, and the losses.

Naming: the paper calls the network that receives gradients the *teacher* and its exponential moving
average the *student*. Here they are ``model`` (gradients) and ``ema_model`` (EMA of ``model``); the
EMA model makes the pseudo-labels, as in DACS/DAFormer.

A method is one class that declares itself to the trainer, the evaluator and the config:

- ``name``: its key in the registry (:data:`iccld.methods.METHODS`) and the value of ``method.name``;
- ``Config``: the dataclass of its ``method:`` section, where its defaults live (and nowhere else);
- ``streams``: the data it trains on, from :data:`SOURCE`, :data:`TARGET` (unlabelled target) and
  :data:`LABELLED_TARGET`; the trainer builds only these;
- ``inference_path``: "direct" (D(z0)) or "diffusion" (D(sample(z0))), saved with every checkpoint;
- :meth:`from_config`: the method with its networks, from the whole config;
- :meth:`critic`: an extra network with its own optimiser (stage 2's discriminator), or None.

A step: ``training_losses(batch, step, generator)`` returns ``{name: scalar tensor}``, or a
:class:`StepOutput` that also carries the detached tensors the critic trains on and the numbers the
method wants logged. The trainer sums the losses, backpropagates and steps the optimiser; with a
critic it then calls ``critic_losses(critic_inputs)`` (losses, or a StepOutput with its own logged
numbers) and steps the critic's optimiser; last ``after_step`` (EMA update). The trainer logs every
loss and every logged number under its own name, and knows none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..data.labels import IGNORE_INDEX
from ..errors import ConfigError, one_of  # noqa: F401 (one_of: re-exported for the methods' checks)
from ..models.multires import SegOutput, predict_draws, train_forward
from ..uda.ema import copy_model, ema_update
from ..utils import switch  # noqa: F401 (re-exported: a method's fields added after runs were saved)

# ``config`` arguments are the run's iccld.config.Config: the config layer sits above the methods (it
# reads each method's own section), so it is not imported here (docs/architecture.md)

# the data streams a method may ask for; a batch holds one entry per stream, under "source" or
# "target" (both targets: a method trains on at most one of them)
SOURCE, TARGET, LABELLED_TARGET = "source", "target", "labelled_target"


CE_MEANS = ("labelled", "all")  # see :func:`cross_entropy`


@dataclass
class MethodConfig:
    """The ``method:`` section every method has; each method's ``Config`` extends it."""

    name: str = ""  # the registry key; filled in by the config loader
    ema_alpha: float = 0.999
    # the EMA's warm-up average: "first_step" starts it at the model after the first step (the first
    # update copies it); "start" includes the initial weights, DAFormer's uniform average of theta_0..t
    ema_warmup: str = switch("first_step")
    # what a cross-entropy term is averaged over: "labelled" pixels, or "all" pixels of the batch
    # (ignored ones count 0), as mmseg 0.x's CrossEntropyLoss in DAFormer, HRDA and MIC
    ce_mean: str = switch("labelled")

    def validate(self) -> None:
        """Raise ConfigError for values no run could use (called by the config loader)."""
        if not 0 <= self.ema_alpha < 1:
            raise ConfigError(f"method.ema_alpha: must be in [0, 1), got {self.ema_alpha}")
        one_of("method.ema_warmup", self.ema_warmup, ("first_step", "start"))
        one_of("method.ce_mean", self.ce_mean, CE_MEANS)


@dataclass
class Critic:
    """A network the trainer optimises apart from ``model``, with Adam at its own settings."""

    module: nn.Module
    lr: float
    betas: tuple[float, float]
    lr_power: float | None = None  # poly decay (1 - step/max_iters)^power of lr; None keeps it constant


@dataclass
class StepOutput:
    """What one ``training_losses`` (or ``critic_losses``) call hands the trainer: the losses it
    optimises, the (detached) tensors :meth:`Method.critic_losses` trains the critic on, and numbers
    to log that are not optimised (diagnostics: TensorBoard, and the last step's in results.json)."""

    losses: dict[str, torch.Tensor]
    critic_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    logged: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, result: "StepOutput | dict[str, torch.Tensor]") -> "StepOutput":
        return result if isinstance(result, StepOutput) else cls(dict(result))


@dataclass(frozen=True)
class Parts:
    """Where the named parts of a batch sit when they are stacked along dim 0 for one forward pass:
    ``names`` in order, ``size`` rows each (e.g. stage 2's source, mixed, target and masked images).

    ``rows(*names)`` is the slice of consecutive parts, ``take(x, *names)`` those rows of a stacked
    tensor ``x``, ``split(x)`` every part of ``x`` by name, ``only(*names)`` the layout of a tensor
    that holds just those parts."""

    names: tuple[str, ...]
    size: int

    @classmethod
    def stack(cls, parts: dict[str, torch.Tensor]) -> tuple["Parts", torch.Tensor]:
        """The layout of ``parts`` (equal first dimensions) and the tensors stacked in their order."""
        sizes = {x.shape[0] for x in parts.values()}
        if len(sizes) != 1:
            raise ValueError(f"parts of different sizes: { {k: x.shape[0] for k, x in parts.items()} }")
        return cls(tuple(parts), sizes.pop()), torch.cat(list(parts.values()))

    def rows(self, *names: str) -> slice:
        first = self.names.index(names[0])
        if self.names[first: first + len(names)] != names:
            raise ValueError(f"parts {names} are not consecutive in {self.names}")
        return slice(first * self.size, (first + len(names)) * self.size)

    def take(self, x: torch.Tensor, *names: str) -> torch.Tensor:
        return x[self.rows(*names)]

    def split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: self.take(x, name) for name in self.names}

    def only(self, *names: str) -> "Parts":
        self.rows(*names)  # consecutive
        return Parts(names, self.size)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                  weight: torch.Tensor | None = None, over: str = "labelled") -> torch.Tensor:
    """Pixel-wise cross-entropy, ignore index 255, optionally weighted per pixel.

    logits (B, C, H, W), labels (B, H, W), weight (B, H, W). ``over="labelled"`` divides the sum by
    the number of labelled pixels, ``"all"`` by every pixel (mmseg 0.x: an ignored pixel counts 0 and
    a batch with many ignored pixels weighs less). Either way a weight below 1 scales the loss down
    (DAFormer's confidence weighting) instead of renormalising.
    """
    ce = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")
    if weight is not None:
        ce = ce * weight
    return ce.sum() / pixel_count(labels, over)


def pixel_count(labels: torch.Tensor, over: str) -> torch.Tensor:
    """The denominator of a mean cross-entropy: labelled pixels (at least 1), or all of them."""
    if over == "all":
        return torch.tensor(float(labels.numel()), device=labels.device)
    return (labels != IGNORE_INDEX).float().sum().clamp_min(1.0)


class Method(nn.Module):
    """Owns ``model`` and ``ema_model``; subclasses define the losses and declare themselves."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    streams: ClassVar[tuple[str, ...]] = (SOURCE,)
    #: which path evaluation uses by default: "direct" = D(z0), "diffusion" = D(sample(z0))
    inference_path: ClassVar[str] = "direct"

    def __init__(self, model: nn.Module, cfg: MethodConfig):
        super().__init__()
        self.model = model
        self.ema_model = copy_model(model)
        self.ema_alpha = cfg.ema_alpha
        # what ema_update's step counts from: with "start", the EMA (a copy of the initial weights)
        # averages them in, alpha_t = 1 - 1/(step + 2) after step 0
        self.ema_offset = 1 if cfg.ema_warmup == "start" else 0
        self.ce_mean = cfg.ce_mean  # what every cross-entropy term is averaged over (cross_entropy's over)
        # set by the trainer with trainer.backward=per_term: back-propagates one finished loss now
        self.backward_now: Callable[[torch.Tensor], None] | None = None

    @classmethod
    def from_config(cls, config: Any) -> "Method":
        """The method and its networks; ``config.method`` is a ``cls.Config``."""
        from ..io import build_model_from_config

        return cls(build_model_from_config(config.model), config.method)

    @classmethod
    def describe(cls) -> dict:
        """What a checkpoint records about the method that made it."""
        return {"name": cls.name, "inference_path": cls.inference_path}

    # what the trainer optimises ------------------------------------------------------------
    def trainable_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups of ``model`` that receive gradients, by name (see ICCLD.parameter_groups)."""
        groups = self.model.parameter_groups()
        return {k: [p for p in v if p.requires_grad] for k, v in groups.items()
                if any(p.requires_grad for p in v)}

    def lr_scale(self, group: str) -> float:
        """Extra factor on the learning rate of one parameter group (1 unless a method says otherwise)."""
        return 1.0

    def critic(self) -> Critic | None:
        """The extra network trained by :meth:`critic_losses` with its own optimiser, if any."""
        return None

    # the step ----------------------------------------------------------------------------------
    def training_losses(self, batch: dict, step: int,
                        generator: torch.Generator) -> "dict[str, torch.Tensor] | StepOutput":
        """Named scalar losses; the trainer optimises their sum. Numbers to log besides them go in a
        :class:`StepOutput`'s ``logged``."""
        raise NotImplementedError

    def release(self, losses: dict[str, torch.Tensor], *names: str) -> None:
        """Back-propagate the finished terms ``names`` of ``losses`` now, when the trainer asks for it
        (``trainer.backward=per_term``), and keep them detached: their graph is freed before the next
        forward pass. A method calls it after the terms that share one forward pass; terms it never
        releases are back-propagated together by the trainer. Without per-term backward: nothing."""
        if self.backward_now is None:
            return
        names = tuple(n for n in names if n in losses and losses[n].requires_grad)
        if names:
            self.backward_now(sum(losses[n] for n in names))
            for n in names:
                losses[n] = losses[n].detach()

    def critic_losses(self, critic_inputs: dict[str, torch.Tensor]) -> "dict[str, torch.Tensor] | StepOutput":
        """The critic's losses from the ``critic_inputs`` of this step's :class:`StepOutput`."""
        return {}

    @torch.no_grad()
    def end_of_run(self, images: list[torch.Tensor]) -> dict:
        """What the finished run changed, measured on a few validation ``images`` (1, 3, H, W): a
        dict for ``results.json`` whose "summary" (if any) the trainer prints as one line."""
        return {}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        ema_update(self.ema_model, self.model, self.ema_alpha, step + self.ema_offset)

    def train(self, mode: bool = True) -> "Method":
        super().train(mode)
        self.ema_model.eval()  # the EMA model only ever predicts
        return self

    # direct segmentation path, shared by the baselines -------------------------------------------
    def segment(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """D(E(x)) at input resolution: (B, 3, H, W) -> logits (B, C, H, W). With multi-resolution
        (``model.multires``), the fused prediction of inference: the context of the whole image and
        the sliding detail windows (what pseudo-labels come from, as in HRDA)."""
        if getattr(model, "multires", None) is not None:
            return next(predict_draws(model, images, diffusion=False))
        z0, skips = model.encode(images)
        return model.decode(z0, skips, images.shape[-2:])

    def forward_train(self, model: nn.Module, images: torch.Tensor,
                      generator: torch.Generator | None = None) -> SegOutput:
        """The direct path as a training loss sees it: D(E(x)) (B, C, H, W); with multi-resolution,
        the fused logits of the context and a random detail crop (drawn from ``generator``), with the
        detail's own logits and box (:func:`iccld.models.multires.train_forward`)."""
        if getattr(model, "multires", None) is not None:
            return train_forward(model, images, generator)
        return SegOutput(self.segment(model, images))

    def seg_loss(self, out: SegOutput, labels: torch.Tensor, weight: torch.Tensor | None = None,
                 loss: Callable[..., torch.Tensor] = cross_entropy) -> torch.Tensor:
        """``loss(logits, labels, weight, over=ce_mean)``; with a detail crop (multi-resolution),
        (1 - lambda_d) x that of the fused logits + lambda_d x that of the detail logits against the
        labels (and weights) of its box, lambda_d = ``model.multires.detail_loss_weight`` (HRDA's)."""
        term = loss(out.logits, labels, weight, over=self.ce_mean)
        if out.detail is None:
            return term
        box, lam = out.box, self.model.multires.detail_loss_weight
        detail = loss(out.detail, box.crop(labels), None if weight is None else box.crop(weight), over=self.ce_mean)
        return (1 - lam) * term + lam * detail
