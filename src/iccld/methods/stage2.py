"""Stage 2: adversarial latent alignment on the denoiser eps_theta (paper Fig. 1, right).

E is frozen; D is frozen by default. Per iteration, with z0 = E(x) for the source, mixed and target
images and z0_hat(t) the denoiser's one-step estimate of the clean latent from concat(z_t, z0):
1. diffusion loss on the source and mixed latents (not the target: pulling target outputs back onto
   their own latents would fight the alignment);
2. segmentation loss through D on z0_hat(t): y_s on the source, weighted pseudo-labels on the mix;
3. adversarial loss: a patch discriminator tells source from target z0_hat(t) (or, with
   ``adversarial_input="fused"``, D's fused features of z0_hat(t) and the skips); eps_theta (and D
   when trained) learn to make target inputs look like source ones (least-squares GAN). The
   discriminator's weights are constants in this term;
4. (trainer) the discriminator's own step, on the detached inputs ``training_losses`` returns with
   the losses (:class:`~iccld.methods.base.StepOutput`), with its own optimiser (:meth:`Stage2.critic`);
5. (trainer) EMA update of the trainable parts.

Optional, off by default (docs/method.md, "MIC and FD" and "The mixed domain in the adversarial game"):
- MIC (``mic_weight`` > 0): the masked target image takes the same path as the segmentation loss,
  frozen E, eps_theta's one-step z0_hat(t), then D, so it trains eps_theta (and D when D trains);
- ``adversarial_mixed``: the mixed inputs in the game, so eps_theta aligns source, mixed and target
  (paper v1): ``target`` counts them as target-like, for the critic and in the generator term;
  ``third`` gives the critic three outputs, one least-squares code per domain, and eps_theta makes
  target and mixed inputs score the source code;
- FD is refused: E is frozen in stage 2, and FD only constrains E.

The adversarial weight (docs/method.md, "A scale-free adversarial weight"): ``fixed`` multiplies the
adversarial loss by ``adversarial_weight``; ``adaptive`` (in the manner of VQGAN) scales it each step so
that its gradient on eps_theta's last layer is ``adversarial_weight`` times the segmentation loss's,
lambda = ||grad L_seg|| / (||grad L_adv|| + delta), detached and clamped, a ratio that means the same at
any model size, crop or batch.

Diagnostics (the ``logged`` numbers of its :class:`~iccld.methods.base.StepOutput`, in TensorBoard; the last step's in ``results.json``): the relative
latent change ||z0_hat - z0|| / ||z0|| on source and target rows, the gradient norm each weighted term
puts on eps_theta's last layer, the effective adversarial weight and the critic's accuracy. At the end
of a run, :meth:`Stage2.end_of_run` measures on validation images how far the sampled latents moved
and whether the diffusion path still predicts what the direct path does, and says so in one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..sections import ARCHITECTURE_FIELDS
from ..uda.ema import ema_update
from ..models.multires import SegOutput, fuse, predict_draws, resize_logits
from ..uda.mic import masked_consistency_loss
from .base import SOURCE, TARGET, Critic, Method, Parts, StepOutput, one_of, switch
from .self_training import MICConfig, SelfTraining, SelfTrainingConfig

# ``config`` arguments are the run's iccld.config.Config: the config layer sits above the methods (it
# reads each method's own section), so it is not imported here (docs/architecture.md)

CRITIC_SOURCE, CRITIC_TARGET = 1.0, 0.0  # the discriminator's least-squares targets for each domain
ADAPTIVE_DELTA = 1e-8  # adaptive weight: added to ||grad L_adv|| (VQGAN's 1e-4 is too large for the
ADAPTIVE_MAX = 1e4     # ~1e-5 gradient norms of a small denoiser's last layer) and the clamp on lambda
# end of run: below both, stage 2 did not move the latents (relative change) and the diffusion path
# predicts what the direct path does (pixel agreement)
STILL_LATENT, STILL_AGREEMENT = 1e-3, 0.999
# adversarial_mixed="third": the critic's output channel of each domain; its least-squares target is
# that domain's one-hot code (B, 3, h, w)
DOMAIN_CHANNELS = {"source": 0, "mixed": 1, "target": 2}

@dataclass
class Stage2Config(MICConfig, SelfTrainingConfig):
    """Stage 2's own fields after the self-training ones it shares with stage 1 (pseudo-labels, mix,
    augmentation, MIC); no FD: E is frozen in stage 2, and FD only constrains E."""

    stage1_checkpoint: str = ""  # run folder, last.ckpt, save_pretrained folder or Hub repo id of stage 1
    stage1_weights: str = "ema"  # which stage-1 weights stage 2 starts from: ema | model
    diffusion_weight: float = 1.0
    seg_weight: float = 1.0
    adversarial_weight: float = 1e-3  # 0 gives the "without adversarial term" ablation
    # fixed: the adversarial loss times adversarial_weight | adaptive: its gradient on eps_theta's last
    # layer is adversarial_weight times the segmentation loss's (see the module docstring)
    adversarial_weighting: str = switch("fixed")
    freeze_decoder: bool = True
    decoder_lr_mult: float = 1.0  # with freeze_decoder=false: D's lr is the heads' lr x this
    pseudo_label_path: str = "direct"  # direct: D(z0) | diffusion: D(sample(z0))
    # what the discriminator sees: latent = z0_hat (the paper) | fused = D's fused features of z0_hat
    # and the inter-coder skips, so the alignment also covers what the skip path brings into D
    adversarial_input: str = "latent"
    disc_channels: int = 64
    disc_lr: float = 1e-4
    disc_betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    # the critic's lr: constant, or AdvSeg's poly decay (1 - step/max_iters)^0.9 like eps_theta's
    disc_lr_schedule: str = switch("constant")
    # the mixed latents in the adversarial game: none (the critic sees source vs target) | target
    # (they count as target-like: the critic tells source from target and mixed, and eps_theta makes
    # both look like source) | third (a three-way critic, source / mixed / target)
    adversarial_mixed: str = switch("none")

    def validate(self) -> None:
        super().validate()
        one_of("method.stage1_weights", self.stage1_weights, ("ema", "model"))
        one_of("method.pseudo_label_path", self.pseudo_label_path, ("direct", "diffusion"))
        one_of("method.adversarial_input", self.adversarial_input, ("latent", "fused"))
        one_of("method.adversarial_mixed", self.adversarial_mixed, ("none", "target", "third"))
        one_of("method.adversarial_weighting", self.adversarial_weighting, ("fixed", "adaptive"))
        one_of("method.disc_lr_schedule", self.disc_lr_schedule, ("constant", "poly"))
        if not self.stage1_checkpoint:
            raise ConfigError("method.stage1_checkpoint: stage 2 starts from a stage-1 run; set it to that "
                              "run's folder, its last.ckpt or its final/ folder")


class Stage2(Method):
    name = "stage2"
    Config = Stage2Config
    streams = (SOURCE, TARGET)
    inference_path = "diffusion"

    def __init__(self, model: nn.Module, cfg: Stage2Config, discriminator: nn.Module | None = None):
        """``discriminator``: the critic (see :meth:`build_critic`); None trains without the adversarial term."""
        super().__init__(model, cfg)
        self.self_training = SelfTraining.from_config(cfg)
        self.discriminator = discriminator
        self.weights = dict(diffusion=cfg.diffusion_weight, seg=cfg.seg_weight, adv=cfg.adversarial_weight)
        self.pseudo_label_path = cfg.pseudo_label_path
        self.decoder_lr_mult = cfg.decoder_lr_mult
        self.adversarial_input = cfg.adversarial_input
        self.adversarial_mixed = cfg.adversarial_mixed
        self.adaptive = cfg.adversarial_weighting == "adaptive"
        self.disc_optim = dict(lr=cfg.disc_lr, betas=tuple(cfg.disc_betas),
                               lr_power=0.9 if cfg.disc_lr_schedule == "poly" else None)
        # names, not modules: the frozen parts stay registered once, under ``model``; the scale
        # attention of multi-resolution belongs to D (HRDA's head holds both) and freezes with it
        head = ("decoder",) + (("multires",) if getattr(model, "multires", None) is not None else ())
        self.frozen = ("encoder", "latent_head") + (head if cfg.freeze_decoder else ())
        for part in self.frozen:
            getattr(model, part).requires_grad_(False)

    @staticmethod
    def build_critic(cfg: Stage2Config, model_cfg) -> nn.Module | None:
        """The patch discriminator for ``cfg.adversarial_input``: it reads z0_hat (Cz channels) or D's
        fused features (decoder_channels), with one output, or three for ``adversarial_mixed="third"``;
        None without the adversarial term."""
        from ..models import PatchDiscriminator

        if cfg.adversarial_weight <= 0:
            return None
        width = model_cfg.latent_channels if cfg.adversarial_input == "latent" else model_cfg.decoder_channels
        if cfg.adversarial_mixed == "third":
            return PatchDiscriminator(width, cfg.disc_channels, out_channels=len(DOMAIN_CHANNELS))
        return PatchDiscriminator(width, cfg.disc_channels)

    @classmethod
    def from_config(cls, config: Any) -> "Stage2":
        from ..io import build_model_from_config

        model = build_model_from_config(config.model)
        model.load_state_dict(stage1_weights(config, cls.name))
        return cls(model, config.method, cls.build_critic(config.method, config.model))

    def train(self, mode: bool = True) -> "Stage2":
        super().train(mode)
        for part in self.frozen:  # frozen parts keep their dropout off and normalisation statistics fixed
            getattr(self.model, part).eval()
        return self

    def lr_scale(self, group: str) -> float:
        # the scale attention of multi-resolution is part of D (HRDA's head): D's lr
        return self.decoder_lr_mult if group in ("decoder", "scale_attention") else 1.0

    def critic(self) -> Critic | None:
        return None if self.discriminator is None else Critic(self.discriminator, **self.disc_optim)

    @torch.no_grad()
    def target_logits(self, x_t: torch.Tensor) -> torch.Tensor:
        """The EMA model's logits (B, C, H, W) of the target images x_t, which the pseudo-labels come
        from: D(z0) (``pseudo_label_path="direct"``) or D(sample(z0)) ("diffusion")."""
        if self.pseudo_label_path == "direct":
            return self.segment(self.ema_model, x_t)
        if self.ema_model.multires is not None:  # both scales, each through the diffusion path, fused
            return next(predict_draws(self.ema_model, x_t, diffusion=True))
        z0, skips = self.ema_model.encode(x_t)
        return self.ema_model.decode(self.ema_model.sample(z0), skips, x_t.shape[-2:])

    def training_losses(self, batch: dict, step: int, generator: torch.Generator) -> StepOutput:
        model, st = self.model, self.self_training
        x_s, y_s = batch["source"]["image"], batch["source"]["label"]
        x_t = batch["target"]["image"]
        with st.teacher(self.ema_model, model):
            target = st.pseudo_labels(self.target_logits(x_t), batch["target"].get("pl_valid"))
        mixed = st.mixed(x_s, y_s, x_t, target, generator)

        # one pass of the frozen encoder over the source, mixed and target images (and, with MIC, the
        # masked target image), stacked in this order: ``parts`` says which rows are which
        images = {"source": x_s, "mixed": mixed.image, "target": x_t}
        if st.mic:
            images["masked"] = st.masked_target(x_t, generator)
        parts, stacked = Parts.stack(images)
        labelled = ("source", "mixed")
        if model.multires is not None:  # E -> z0 -> eps_theta -> D at both scales, fused
            loss_diff, z0, z0_hat, out, out_k, critic_in = self.multires_pass(stacked, parts, generator)
        else:
            with torch.no_grad():
                z0, skips = model.encode(stacked)  # z0 (3B or 4B, Cz, H/s, W/s)
            z0, skips = z0.detach(), [f.detach() for f in skips]

            # every latent noised at its own random timestep, one denoiser pass; the diffusion loss on the
            # labelled parts (source and mixed) only, z0_hat (3B or 4B, Cz, h, w) for all
            loss_diff, z0_hat = model.diffusion.loss(z0, z0, generator, rows=parts.rows(*labelled))

            size = x_s.shape[-2:]
            if self.discriminator is not None and self.adversarial_input == "fused":
                # D's fused features of every part; the discriminator sees source vs target (and mixed) ones
                feats = model.decode_features(z0_hat, skips, size)  # (3B or 4B, C_D, H/4, W/4)
                logits = model.decoder.classify(parts.take(feats, *labelled), size)
                logits_k = model.decoder.classify(parts.take(feats, "masked"), size) if st.mic else None
                critic_in = feats
            else:
                logits = model.decode(parts.take(z0_hat, *labelled), [parts.take(f, *labelled) for f in skips], size)
                logits_k = (model.decode(parts.take(z0_hat, "masked"), [parts.take(f, "masked") for f in skips], size)
                            if st.mic else None)
                critic_in = z0_hat
            out, out_k = SegOutput(logits), (SegOutput(logits_k) if st.mic else None)
        split = parts.only(*labelled)
        loss_seg = (self.seg_loss(out.rows(split.rows("source")), y_s)
                    + self.seg_loss(out.rows(split.rows("mixed")), mixed.label, mixed.weight)) / 2

        losses = {"diffusion": self.weights["diffusion"] * loss_diff, "seg": self.weights["seg"] * loss_seg}
        if st.mic:
            losses["mic"] = st.mic_weight * self.seg_loss(out_k, target.label, target.weight,
                                                          loss=masked_consistency_loss)
        logged = {"pl_weight": target.confidence(),
                  **{f"latent_change_{k}": relative_change(parts.take(z0_hat, k), parts.take(z0, k))
                     for k in ("source", "target")}}
        last = last_layer(model.denoiser)  # eps_theta's last layer: where the terms' gradients are compared
        grads = {k: grad_norm(v, last) for k, v in losses.items()}
        logged.update({f"grad_{k}": v for k, v in grads.items()})
        if self.discriminator is None:
            return StepOutput(losses, logged=logged)
        domains = ("source", "target") + (("mixed",) if self.adversarial_mixed != "none" else ())
        groups = {k: parts.take(critic_in, k) for k in domains}  # the critic's inputs by domain
        # the generator term: the critic's weights enter as constants, so its gradient reaches
        # eps_theta (and D) but never the critic, which trains only in critic_losses
        fixed = {k: p.detach() for k, p in self.discriminator.named_parameters()}
        fooled = [groups[k] for k in ("target", "mixed") if k in groups]  # to look like source
        score = torch.func.functional_call(self.discriminator, fixed, (torch.cat(fooled),))
        loss_adv = F.mse_loss(score, self._label_of(score, "source"))
        adv_grad = grad_norm(loss_adv, last)
        weight_adv = self.weights["adv"]
        if self.adaptive:  # the adversarial gradient on the last layer = adversarial_weight x the seg one
            weight_adv *= min(grads["seg"] / (adv_grad + ADAPTIVE_DELTA), ADAPTIVE_MAX)
        losses["adv"] = weight_adv * loss_adv
        logged.update(grad_adv=weight_adv * adv_grad, adv_weight=weight_adv)
        return StepOutput(losses, {k: v.detach() for k, v in groups.items()}, logged)

    def multires_pass(self, x: torch.Tensor, parts: Parts, generator: torch.Generator):
        """The latent path of a step at both scales (docs/method.md, "HRDA multi-resolution").

        x (3B or 4B, 3, H, W): the stacked images, laid out by ``parts`` (source, mixed, target and,
        with MIC, masked). The frozen E encodes the context of each (x resized by ``context_scale``)
        and one random detail crop (the same box for all rows); each scale's latents go through their own ``diffusion.loss`` (source and mixed
        rows count; the two losses averaged), D decodes each scale's z0_hat, and the scale attention
        of the context's z0_hat fuses them. The critic sees the context scale's inputs (z0_hat, or D's
        fused features with ``adversarial_input=fused``): it covers the whole crop at the one size
        every image has. Returns (diffusion loss, the context's z0 and z0_hat, the output of the
        source and mixed rows, that of the masked rows or None, the critic's inputs of all rows).
        """
        model, mr = self.model, self.model.multires
        size, n = tuple(x.shape[-2:]), x.shape[0]
        box = mr.draw_box(size, generator)
        x_c, x_d = mr.context_image(x), box.crop(x)
        ctx_size = tuple(x_c.shape[-2:])
        with torch.no_grad():
            (z_c, skips_c), (z_d, skips_d) = model.encode(x_c), model.encode(x_d)
        rows = parts.rows("source", "mixed")
        loss_c, zh_c = model.diffusion.loss(z_c, z_c, generator, rows=rows)  # zh_c (n, Cz, h_c, w_c)
        loss_d, zh_d = model.diffusion.loss(z_d, z_d, generator, rows=rows)
        # the rows D decodes: source and mixed, and the masked target with MIC (not the target rows)
        mic = "masked" in parts.names
        keep = torch.cat([torch.arange(n)[rows]] + ([torch.arange(n)[parts.rows("masked")]] if mic else []))

        def pick(skips):
            return [f[keep] for f in skips]

        if self.discriminator is not None and self.adversarial_input == "fused":
            feats = model.decode_features(zh_c, skips_c, ctx_size)  # (n, C_D, h_c/4, w_c/4)
            context, critic_in = model.decoder.classify(feats[keep], ctx_size), feats
        else:
            context, critic_in = model.decode(zh_c[keep], pick(skips_c), ctx_size), zh_c
        share = mr.context_share(zh_c[keep], pick(skips_c), ctx_size, size)
        detail = model.decode(zh_d[keep], pick(skips_d), tuple(x_d.shape[-2:]))
        out = SegOutput(fuse(resize_logits(context, size), detail, share, box), detail, box)
        labelled = rows.stop - rows.start  # source and mixed come first in ``keep``
        masked = out.rows(slice(labelled, None)) if mic else None
        return (loss_c + loss_d) / 2, z_c, zh_c, out.rows(slice(0, labelled)), masked, critic_in

    def critic_losses(self, critic_inputs: dict[str, torch.Tensor]) -> "dict[str, torch.Tensor] | StepOutput":
        """LS-GAN critic loss on this step's detached inputs (B, C, h, w): "source" labelled 1,
        "target" (and "mixed", with ``adversarial_mixed="target"``) labelled 0; with "third", the mean
        over the three domains of the squared error to that domain's one-hot code."""
        if self.discriminator is None or not critic_inputs:
            return {}
        if self.adversarial_mixed == "third":
            scores = {k: self.discriminator(critic_inputs[k]) for k in DOMAIN_CHANNELS}
            terms = [F.mse_loss(s, self._label_of(s, k)) for k, s in scores.items()]
            # accuracy: the patches whose largest output is their own domain's channel
            accuracy = float(sum((s.detach().argmax(1) == DOMAIN_CHANNELS[k]).float().mean()
                                 for k, s in scores.items()) / len(scores))
            return StepOutput({"disc": sum(terms) / len(terms)}, logged={"critic_acc": accuracy})
        s_src = self.discriminator(critic_inputs["source"])
        targets = [critic_inputs[k] for k in ("target", "mixed") if k in critic_inputs]
        s_tgt = self.discriminator(torch.cat(targets))  # (B or 2B, 1, h', w')
        loss = 0.5 * (F.mse_loss(s_src, torch.full_like(s_src, CRITIC_SOURCE))
                      + F.mse_loss(s_tgt, torch.full_like(s_tgt, CRITIC_TARGET)))
        # accuracy: the patches on the right side of the labels' midpoint, source and target alike
        middle = (CRITIC_SOURCE + CRITIC_TARGET) / 2
        accuracy = float(((s_src.detach() > middle).float().mean() + (s_tgt.detach() < middle).float().mean()) / 2)
        return StepOutput({"disc": loss}, logged={"critic_acc": accuracy})

    def _label_of(self, score: torch.Tensor, domain: str) -> torch.Tensor:
        """The critic's least-squares target for ``domain`` at the shape of ``score`` (B, 1 or 3, h, w)."""
        if self.adversarial_mixed == "third":
            code = torch.zeros(score.shape[1], dtype=score.dtype, device=score.device)
            code[DOMAIN_CHANNELS[domain]] = 1.0
            return code.view(1, -1, 1, 1).expand_as(score)
        return torch.full_like(score, CRITIC_SOURCE if domain == "source" else CRITIC_TARGET)

    @torch.no_grad()
    def end_of_run(self, images: list[torch.Tensor]) -> dict:
        """On validation ``images`` with the EMA model: ||sample(z0) - z0|| / ||z0|| (K steps, one noise
        draw seeded per image) and the share of pixels where D(sample(z0)) and D(z0) give the same
        class. Below both thresholds with D frozen, stage 2 is its stage-1 model again: the summary
        line says so (a no-op is never silent)."""
        if not images:
            return {}
        model = self.ema_model
        moved = norm = agree = pixels = 0.0
        for i, x in enumerate(images):
            z0, skips = model.encode(x)
            z0_hat = model.sample(z0, generator=torch.Generator().manual_seed(i))
            moved += float((z0_hat - z0).float().pow(2).sum())
            norm += float(z0.float().pow(2).sum())
            size = x.shape[-2:]
            same = model.decode(z0_hat, skips, size).argmax(1) == model.decode(z0, skips, size).argmax(1)
            agree += float(same.sum())
            pixels += same.numel()
        change, agreement = (moved / max(norm, 1e-12)) ** 0.5, agree / pixels
        frozen = "decoder" in self.frozen
        still = change < STILL_LATENT and agreement > STILL_AGREEMENT
        where = (f"on {len(images)} val images the sampled latents moved {100 * change:.3g}% of their norm "
                 f"and the diffusion path agrees with the direct path on {100 * agreement:.2f}% of pixels")
        if still and frozen:
            summary = (f"stage 2 changed nothing: {where}, and D was frozen, so this model predicts what its "
                       "stage-1 model does (raise method.adversarial_weight, or use the recipe in "
                       "configs/stage2_recipe.yaml)")
        elif still:
            summary = (f"stage 2 did not move the latents: {where}; only D's fine-tuning changed the "
                       "predictions")
        else:
            summary = f"stage 2 moved the latents: {where}"
        return {"latent_change": change, "path_agreement": agreement, "decoder_frozen": frozen,
                "changed_latents": not still, "summary": summary}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        # only the trainable parts move; frozen ones stay bit-identical to the stage-1 weights
        ema_update(self.ema_model.denoiser, self.model.denoiser, self.ema_alpha, step + self.ema_offset)
        if any(p.requires_grad for p in self.model.decoder.parameters()):
            ema_update(self.ema_model.decoder, self.model.decoder, self.ema_alpha, step + self.ema_offset)
        if self.model.multires is not None and any(p.requires_grad for p in self.model.multires.parameters()):
            ema_update(self.ema_model.multires, self.model.multires, self.ema_alpha, step + self.ema_offset)


def relative_change(z0_hat: torch.Tensor, z0: torch.Tensor) -> float:
    """||z0_hat - z0|| / ||z0|| over a batch of latents (B, Cz, h, w)."""
    with torch.no_grad():
        return float((z0_hat - z0).float().norm() / z0.float().norm().clamp_min(1e-12))


def last_layer(denoiser: nn.Module) -> nn.Parameter:
    """The weight of eps_theta's output convolution (the U-Net's ``conv_out``; for another denoiser,
    its last weight with more than one dimension)."""
    conv_out = getattr(denoiser, "conv_out", None)
    if isinstance(conv_out, nn.Conv2d):
        return conv_out.weight
    return [p for p in denoiser.parameters() if p.ndim > 1][-1]


def grad_norm(loss: torch.Tensor, param: nn.Parameter) -> float:
    """||d loss / d param||, the graph kept for the step's own backward (0 when ``loss`` does not
    reach ``param``). Not an accumulation: the step's gradients are left untouched."""
    if not loss.requires_grad or not param.requires_grad:
        return 0.0
    (grad,) = torch.autograd.grad(loss, param, retain_graph=True, allow_unused=True)
    return 0.0 if grad is None else float(grad.float().norm())


def stage1_weights(config: Any, stage2_name: str) -> dict:
    """State dict of the stage-1 model stage 2 starts from, after checking the architecture."""
    from ..io import load_source

    where = config.method.stage1_checkpoint
    try:
        source = load_source(where)
    except CheckpointError as exc:
        raise ConfigError(f"method.stage1_checkpoint: {exc}") from None
    unfinished = source.unfinished()
    if Path(where).is_dir() and unfinished is not None:
        raise ConfigError(f"method.stage1_checkpoint: the stage-1 run {where} is not finished (iteration "
                          f"{unfinished[0]} of {unfinished[1]}); resume it with `iccld train --resume`, or name "
                          f"{source.path} itself to start stage 2 from this intermediate checkpoint")
    model_cfg, weights = source.model_config(), source.weights(config.method.stage1_weights)
    if source.provenance.method == stage2_name:
        raise ConfigError(f"method.stage1_checkpoint: {source.path} is a stage-2 run; name a stage-1 run")
    current = dataclasses.asdict(config.model)
    defaults = dataclasses.asdict(type(config.model)())  # a field added since the stage-1 run had its default
    diff = [f"{k}: {model_cfg.get(k, defaults[k])} vs {current[k]}" for k in ARCHITECTURE_FIELDS
            if model_cfg.get(k, defaults[k]) != current[k]]
    if diff:
        raise ConfigError(f"method.stage1_checkpoint: {source.path} has a different architecture "
                          f"({'; '.join(diff)}); use the same model settings as stage 1")
    return weights
