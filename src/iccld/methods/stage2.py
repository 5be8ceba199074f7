"""Stage 2: adversarial latent alignment on the denoiser eps_theta (paper Fig. 1, right).

E is frozen; D is frozen by default. Per iteration, with z0 = E(x) for the source, mixed and target
images and z0_hat(t) the denoiser's one-step estimate of the clean latent from concat(z_t, z0):
1. diffusion loss on the source and mixed latents (not the target: pulling target outputs back onto
   their own latents would fight the alignment);
2. segmentation loss through D on z0_hat(t): y_s on the source, weighted pseudo-labels on the mix;
3. adversarial loss: a patch discriminator tells source from target z0_hat(t) (or, with
   ``adversarial_input="fused"``, D's fused features of z0_hat(t) and the skips); eps_theta (and D
   when trained) learn to make target inputs look like source ones (least-squares GAN). The
   discriminator has its own optimiser and sees detached inputs;
4. (trainer) EMA update of the trainable parts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..uda.ema import ema_update
from ..uda.pseudo_label import pseudo_labels
from .base import cross_entropy
from .stage1 import Stage1

SOURCE, TARGET = 1.0, 0.0  # least-squares GAN labels of the discriminator


class Stage2(Stage1):
    inference_path = "diffusion"

    def __init__(self, model: nn.Module, discriminator: nn.Module | None, *, diffusion_weight: float = 1.0,
                 seg_weight: float = 1.0, adversarial_weight: float = 1e-3, freeze_decoder: bool = True,
                 pseudo_label_path: str = "direct", decoder_lr_mult: float = 1.0,
                 adversarial_input: str = "latent", **stage1_kwargs):
        super().__init__(model, **stage1_kwargs)
        self.discriminator = discriminator
        self.weights = dict(diffusion=diffusion_weight, seg=seg_weight, adv=adversarial_weight)
        self.pseudo_label_path = pseudo_label_path
        self.decoder_lr_mult = decoder_lr_mult
        self.adversarial_input = adversarial_input
        frozen = [model.encoder, model.latent_head] + ([model.decoder] if freeze_decoder else [])
        for module in frozen:
            module.requires_grad_(False)
        self.frozen = nn.ModuleList(frozen)
        self._detached: tuple[torch.Tensor, torch.Tensor] | None = None

    def train(self, mode: bool = True) -> "Stage2":
        super().train(mode)
        self.frozen.eval()  # frozen parts keep their dropout off and normalisation statistics fixed
        return self

    def lr_scale(self, group: str) -> float:
        return self.decoder_lr_mult if group == "decoder" else 1.0

    def discriminator_parameters(self):
        return [] if self.discriminator is None else list(self.discriminator.parameters())

    @torch.no_grad()
    def target_pseudo_labels(self, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pseudo_label_path == "direct":
            return super().target_pseudo_labels(x_t)
        z0, skips = self.ema_model.encode(x_t)
        logits = self.ema_model.decode(self.ema_model.sample(z0), skips, x_t.shape[-2:])
        return pseudo_labels(logits, self.pseudo_threshold, *self.pl_crop)

    def training_losses(self, batch: dict, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        model = self.model
        x_s, y_s = batch["source"]["image"], batch["source"]["label"]
        x_t = batch["target"]["image"]
        b = x_s.shape[0]
        pl, weight = self.target_pseudo_labels(x_t)
        x_m, y_m, w_m = self.mixed_batch(x_s, y_s, x_t, pl, weight, generator)

        # one pass of the frozen encoder over source, mixed and target images
        images = torch.cat([x_s, x_m, x_t])  # (3B, 3, H, W)
        with torch.no_grad():
            z0, skips = model.encode(images)  # z0 (3B, Cz, H/s, W/s)
        z0, skips = z0.detach(), [f.detach() for f in skips]

        # every latent noised at its own random timestep, one denoiser pass; the diffusion loss on the
        # source and mixed latents only, z0_hat (3B, Cz, h, w) for all three
        loss_diff, z0_hat = model.diffusion.loss(z0, z0, generator, rows=slice(0, 2 * b))

        size = x_s.shape[-2:]
        if self.discriminator is not None and self.adversarial_input == "fused":
            # D's fused features of all three batches; the discriminator sees source vs target ones
            feats = model.decode_features(z0_hat, skips, size)  # (3B, C_D, H/4, W/4)
            logits = model.decoder.classify(feats[: 2 * b], size)
            z_src, z_tgt = feats[:b], feats[2 * b:]
        else:
            logits = model.decode(z0_hat[: 2 * b], [f[: 2 * b] for f in skips], size)
            z_src, z_tgt = z0_hat[:b], z0_hat[2 * b:]
        loss_seg = (cross_entropy(logits[:b], y_s) + cross_entropy(logits[b:], y_m, w_m)) / 2

        losses = {"diffusion": self.weights["diffusion"] * loss_diff, "seg": self.weights["seg"] * loss_seg}
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)  # the generator term must not train the critic
            score = self.discriminator(z_tgt)
            losses["adv"] = self.weights["adv"] * F.mse_loss(score, torch.full_like(score, SOURCE))
            self.discriminator.requires_grad_(True)
        self._detached = (z_src.detach(), z_tgt.detach())
        self.stats = {"pl_weight": float(weight.amax(dim=(1, 2)).mean())}
        return losses

    def discriminator_losses(self) -> dict[str, torch.Tensor]:
        """LS-GAN critic loss on the latents of the last ``training_losses`` call (detached)."""
        if self.discriminator is None or self._detached is None:
            return {}
        z_src, z_tgt = self._detached
        s_src, s_tgt = self.discriminator(z_src), self.discriminator(z_tgt)
        loss = 0.5 * (F.mse_loss(s_src, torch.full_like(s_src, SOURCE))
                      + F.mse_loss(s_tgt, torch.full_like(s_tgt, TARGET)))
        return {"disc": loss}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        # only the trainable parts move; frozen ones stay bit-identical to the stage-1 weights
        ema_update(self.ema_model.denoiser, self.model.denoiser, self.ema_alpha, step)
        if any(p.requires_grad for p in self.model.decoder.parameters()):
            ema_update(self.ema_model.decoder, self.model.decoder, self.ema_alpha, step)
