"""One training step of Ouroboros3D (paper Algorithm 1, public ``svd_lgm_multi_t2iadapter.py``).

:class:`JointModel` is the one module accelerate / DeepSpeed wrap: it registers the two trained
models (F = ``generator``, G = ``reconstructor``); SVD's VAE and CLIP (``conditioner``) and LPIPS are
frozen and held outside the module tree, so data-parallel wrappers never see them. Its forward is
the whole step and returns the losses:

1. targets: the 8 views -> VAE posterior sample x scaling factor (``latents [B, V, 4, h, w]``);
2. condition: view 0 in [-1, 1] noised with ``sigma_c ~ LogNormal(-3, 0.5)``; its CLIP embedding and
   its (unscaled) VAE posterior sample, both of the *noised* image as the public code computes
   them; added ids ``[6, 127, sigma_c]``;
3. classifier-free-guidance dropout, InstructPix2Pix style as the public code: ``u ~ U(0, 1)`` per
   sample; ``u < 2p`` zeroes the CLIP embedding, ``p <= u < 3p`` zeroes the condition latent, so
   with ``p = 0.1`` each of "CLIP only", "both", "latent only" has probability 0.1;
4. ``ln sigma ~ N(1.0, 1.6^2)``; ``x = latents + sigma n``; pass A: F on ``c_in x`` with zero feedback
   -> ``x0 = c_skip x + c_out F``;
5. (joint rows) ``x0`` decoded without gradient -> G at ``c_noise = 0.25 ln sigma`` -> Gaussians
   rendered at the 8 cameras (RGB + coordinate map, :func:`ouro.models.feedback.render_feedback`);
   G also reconstructs the clean views at ``c_noise = 0``; reconstruction loss
   ``(L(x0 pass) + L(clean pass)) / 2`` with ``L = MSE or L1 + lpips_weight * LPIPS`` on the 8
   rendered views against the targets;
6. with probability 0.5 (one coin per micro-step, so all ranks take the same branch) pass B: F
   again with the rendered maps as feedback, **detached** (paper Algorithm 1; ``detach_feedback``)
   or not (the public training code: pass B's diffusion loss then also reaches G through the
   renderer and the coordinate map); the diffusion loss
   ``lambda(sigma) * ||x0 - latents||^2`` (mean) is taken from the pass that was used. When pass B
   is taken, pass A runs without gradient (its loss is not used), which gives the same gradients
   for less memory;
7. ``loss = diffusion + recon_weight * recon``.

Every random number of a sample comes from a generator seeded by ``(seed, position)``, the coin
from ``(seed, micro_step)``: the step is a pure function of the weights, the data positions and
the seed (exact resume; N ranks x batch B == one process with batch N * B).

Ablations (paper Table 2): ``separate`` (G frozen and unused, no feedback, diffusion loss only),
``joint`` (G trained, no feedback), ``ccm`` / ``rgb`` (one feedback map), ``full`` (both). F is
built with ``config.generator.feedback`` = the maps of the row (no adapter for a map never fed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ouro.data.dataset import keyed_generator
from ouro.gaussians import Gaussians
from ouro.diffusion import P_MEAN, P_STD, denoised, loss_weight, precondition, sample_cond_sigmas, sample_sigmas
from ouro.models.feedback import FeedbackMaps, render_feedback
from ouro.models.svd_parts import FPS_ID, MOTION_BUCKET_ID

from .choices import ABLATIONS, RECON_LOSSES

__all__ = ["ABLATIONS", "StepSettings", "StepOutput", "JointModel", "ablation_feedback", "conditioning_dropout", "make_perceptual"]

_STEP_STREAM, _COIN_STREAM = 0x57E9, 0xC011


def ablation_feedback(ablation: str) -> tuple[str, ...]:
    """The feedback maps (adapter order) of a Table 2 row."""
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {', '.join(ABLATIONS)}, got {ablation!r}")
    return ABLATIONS[ablation][1]


@dataclass(frozen=True)
class StepSettings:
    """What one step does (the training run's config holds these)."""

    ablation: str = "full"  #: paper Table 2 row (see :data:`ABLATIONS`)
    feedback_prob: float = 0.5  #: probability of pass B (self-conditioning on the rendered maps)
    cfg_dropout: float = 0.1  #: conditioning dropout p (InstructPix2Pix scheme, see module docstring)
    recon_loss: str = "mse"  #: pixel term of the reconstruction loss: "mse" (paper) or "l1" (public code)
    detach_feedback: bool = True  #: pass B reads the maps detached (paper) or with G's graph (public code)
    lpips_weight: float = 1.0  #: weight of LPIPS in the reconstruction loss (0 = off)
    recon_weight: float = 1.0  #: weight of the reconstruction loss in the total
    p_mean: float = P_MEAN  #: ln sigma ~ N(p_mean, p_std^2)
    p_std: float = P_STD
    sigma_data: float = 1.0  #: data scale of the EDM preconditioning (ouro.diffusion.edm)
    seed: int = 0
    compat: str | None = None  #: "official" when training from the public checkpoint

    def check(self) -> None:
        ablation_feedback(self.ablation)
        if self.recon_loss not in RECON_LOSSES:
            raise ValueError(f"recon_loss must be one of {RECON_LOSSES}, got {self.recon_loss!r}")
        for name in ("feedback_prob", "cfg_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.cfg_dropout > 1 / 3:
            raise ValueError(f"cfg_dropout must be <= 1/3 (three disjoint cases of probability p), got {self.cfg_dropout}")
        if self.lpips_weight < 0 or self.recon_weight < 0:
            raise ValueError("lpips_weight and recon_weight must be >= 0")

    @property
    def joint(self) -> bool:
        return ABLATIONS[self.ablation][0]


class StepOutput(NamedTuple):
    """Losses of one micro-step (a tuple, so that DDP finds the tensors). Scalars unless noted."""

    loss: Tensor  # diffusion + recon_weight * recon (with grad)
    diffusion: Tensor  # EDM-weighted x0 MSE of the pass used
    recon: Tensor  # (recon_x0 + recon_clean) / 2; 0 without joint training
    recon_x0: Tensor  # reconstruction loss of G on the decoded x0 (c_noise = 0.25 ln sigma)
    recon_clean: Tensor  # ... on the clean target views (c_noise = 0)
    feedback: Tensor  # 1.0 when pass B (feedback) was used, else 0.0
    sigma: Tensor  # [B] noise levels


def conditioning_dropout(u: Tensor, p: float) -> tuple[Tensor, Tensor]:
    """Which conditions a sample keeps, from its uniform draw ``u [B]`` in [0, 1) (InstructPix2Pix, the
    public training code): ``u < p`` drops the CLIP embedding only, ``p <= u < 2p`` both, ``2p <= u < 3p``
    the condition latent only; each case has probability ``p``. Returns ``(keep_clip, keep_latent)``, bool ``[B]``."""
    return ~(u < 2 * p), ~((u >= p) & (u < 3 * p))


def make_perceptual(weight: float) -> nn.Module | None:
    """LPIPS (AlexNet, frozen, weights shipped with ouro) when ``weight > 0``, else None."""
    if weight <= 0:
        return None
    try:
        from ouro.metrics.lpips import LPIPS
    except ImportError as exc:  # pragma: no cover - the module ships with ouro
        raise RuntimeError(f"the LPIPS term needs ouro.metrics.lpips ({exc}); pass --lpips-weight 0 to train without it") from None
    return LPIPS("alex")


class JointModel(nn.Module):
    """F and G as one trainable module whose forward is a training step (see the module docstring).

    Args:
        generator: F (:class:`ouro.models.MultiViewUNet`); its ``config.feedback`` must be the
            ablation's maps.
        reconstructor: G (:class:`ouro.models.Reconstructor`); frozen for ``separate``.
        conditioner: SVD's frozen VAE + CLIP (:class:`ouro.models.svd_parts.SVDConditioner`).
        settings: :class:`StepSettings`.
        perceptual: a frozen LPIPS module (``[..., 3, H, W]`` pairs in [0, 1] -> ``[...]``) or None.
    """

    def __init__(self, generator: nn.Module, reconstructor: nn.Module, conditioner: nn.Module,
                 settings: StepSettings, perceptual: nn.Module | None = None) -> None:
        super().__init__()
        settings.check()
        want = ablation_feedback(settings.ablation)
        if tuple(generator.config.feedback) != want:
            raise ValueError(f"ablation {settings.ablation!r} feeds {want}, but the generator has adapters for "
                             f"{tuple(generator.config.feedback)}")
        self.generator, self.reconstructor = generator, reconstructor
        self.settings = settings
        # frozen helpers, deliberately not registered as sub-modules (DDP / DeepSpeed leave them alone)
        object.__setattr__(self, "conditioner", conditioner)
        object.__setattr__(self, "perceptual", perceptual)
        conditioner.requires_grad_(False).eval()
        if perceptual is not None:
            perceptual.requires_grad_(False).eval()
        if not settings.joint:
            reconstructor.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "JointModel":
        super().train(mode)
        if not self.settings.joint:
            self.reconstructor.eval()
        return self

    # ------------------------------------------------------------------------------------ pieces
    def _recon_loss(self, rendered: Tensor, target: Tensor) -> Tensor:  # [B, V, 3, H, W] x 2 -> []
        if self.settings.recon_loss == "mse":
            pixel = F.mse_loss(rendered, target)
        else:
            pixel = F.l1_loss(rendered, target)
        if self.perceptual is None or self.settings.lpips_weight == 0:
            return pixel
        return pixel + self.settings.lpips_weight * self.perceptual(rendered, target).mean()

    def _reconstruct(self, images: Tensor, c2w: Tensor, K_norm: Tensor, c_noise: Tensor | float) -> FeedbackMaps:
        """G on ``images [B, V, 3, H, W]`` (about [0, 1]) -> its Gaussians rendered at the V cameras, fp32."""
        G = self.reconstructor
        raw = G(images.to(G.dtype), c2w.to(G.dtype), K_norm.to(G.dtype), c_noise).raw
        with torch.autocast(images.device.type, enabled=False):
            gaussians = Gaussians.from_raw(raw.float(), self.settings.compat)
            return render_feedback(gaussians, c2w.float(), K_norm.float(), images.shape[-1], self.settings.compat)

    # ----------------------------------------------------------------------------------- forward
    def forward(
        self,
        images: Tensor,  # [B, V, 3, H, W] in [0, 1]; view 0 is the condition image
        c2w: Tensor,  # [B, V, 4, 4] relative to view 0, OpenCV
        K_norm: Tensor,  # [B, V, 3, 3]
        positions: Tensor,  # [B] int64 sample positions (seed the per-sample noise)
        micro_step: Tensor,  # [] int64 (seeds the feedback coin)
    ) -> StepOutput:
        s = self.settings
        Fm, cond = self.generator, self.conditioner
        B, V = images.shape[:2]
        dev = images.device
        assert images.shape[2] == 3 and c2w.shape == (B, V, 4, 4) and K_norm.shape == (B, V, 3, 3), (images.shape, c2w.shape)
        gens = [keyed_generator(s.seed, int(p), _STEP_STREAM) for p in positions.tolist()]
        coin = keyed_generator(s.seed, int(micro_step), _COIN_STREAM)

        def per_sample(shape: tuple[int, ...]) -> Tensor:  # [B, *shape] standard normal, one generator per sample
            return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(dev)

        # 1-2. targets and condition (frozen VAE / CLIP, fp32)
        with torch.no_grad():
            x = (images.float() * 2 - 1).to(cond.vae.dtype)  # [B, V, 3, H, W] in [-1, 1]
            latents = cond.encode(x, generator=[g for g in gens for _ in range(V)]).float()  # [B, V, 4, h, w]
            sigma_c = torch.cat([sample_cond_sigmas(1, g) for g in gens]).to(dev)  # [B]
            cond_image = x[:, 0] + sigma_c.view(B, 1, 1, 1) * per_sample(tuple(x.shape[2:])).to(x.dtype)
            clip = cond.clip_embedding(cond_image).float()  # [B, 1, D]
            scaling = cond.vae.config.scaling_factor
            cond_latent = cond.encode(cond_image[:, None], generator=gens)[:, 0].float() / scaling  # [B, 4, h, w], unscaled
            time_ids = torch.stack([torch.full_like(sigma_c, FPS_ID), torch.full_like(sigma_c, MOTION_BUCKET_ID), sigma_c], 1)

            # 3. conditioning dropout (InstructPix2Pix, as the public code)
            u = torch.cat([torch.rand(1, generator=g) for g in gens]).to(dev)
            keep_clip, keep_latent = conditioning_dropout(u, s.cfg_dropout)
            clip = clip * keep_clip.view(B, 1, 1).to(clip.dtype)
            cond_latent = cond_latent * keep_latent.view(B, 1, 1, 1).to(cond_latent.dtype)

            # 4. noise
            sigma = torch.cat([sample_sigmas(1, g, s.p_mean, s.p_std) for g in gens]).to(dev)  # [B]
            noise = per_sample(tuple(latents.shape[1:]))
            noisy = latents + sigma.view(B, 1, 1, 1, 1) * noise
            pre = precondition(sigma, s.sigma_data)
            model_in = torch.cat([noisy * pre.c_in.view(B, 1, 1, 1, 1), cond_latent[:, None].expand(-1, V, -1, -1, -1)], 2)
            c_noise = pre.c_noise  # [B]
        use_feedback = bool(s.joint and Fm.config.feedback and torch.rand(1, generator=coin).item() < s.feedback_prob)

        dtype = Fm.dtype
        cams = dict(c2w=c2w.to(dtype), K_norm=K_norm.to(dtype), compat=s.compat)

        def run_generator(feedback: list[Tensor] | None) -> Tensor:  # -> x0 estimate [B, V, 4, h, w] fp32
            out = Fm(model_in.to(dtype), c_noise.to(dtype), clip.to(dtype), time_ids.to(dtype), feedback=feedback, **cams).sample
            return denoised(noisy, out.float(), sigma, s.sigma_data)

        # pass A (zero feedback); its gradient is needed only when its loss is the one used
        with torch.set_grad_enabled(torch.is_grad_enabled() and not use_feedback):
            x0 = run_generator(None)

        zero = images.new_zeros(())
        recon_x0 = recon_clean = recon = zero
        maps: FeedbackMaps | None = None
        if s.joint:
            # 5. G on the decoded x0 (no gradient into F, as the public code) and on the clean views
            with torch.no_grad():
                x0_images = cond.decode(x0.detach().to(cond.vae.dtype)) * 0.5 + 0.5  # [B, V, 3, H, W], not clamped
            maps = self._reconstruct(x0_images, c2w, K_norm, c_noise)
            clean = self._reconstruct(images, c2w, K_norm, torch.zeros_like(c_noise))
            with torch.autocast(dev.type, enabled=False):
                target = images.float()
                recon_x0 = self._recon_loss(maps.rgb, target)
                recon_clean = self._recon_loss(clean.rgb, target)
                recon = (recon_x0 + recon_clean) / 2

        # 6. pass B with the rendered maps as feedback (detached, or carrying G's graph as the public code)
        if use_feedback:
            assert maps is not None
            fed = [getattr(maps, name) for name in Fm.config.feedback]
            x0 = run_generator([(m.detach() if s.detach_feedback else m).to(dtype) for m in fed])

        with torch.autocast(dev.type, enabled=False):
            weight = loss_weight(sigma, s.sigma_data).view(B, 1, 1, 1, 1)
            diffusion = (weight * (x0 - latents) ** 2).mean()
            loss = diffusion + s.recon_weight * recon
        flag = images.new_tensor(1.0 if use_feedback else 0.0)
        return StepOutput(loss, diffusion, recon, recon_x0, recon_clean, flag, sigma)

