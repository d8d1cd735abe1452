"""Stable Video Diffusion's other parts: VAE, CLIP image encoder and the conditioning they make.

Loaded from a diffusers-format SVD img2vid folder (``vae/``, ``image_encoder/``,
``feature_extractor/``, ``scheduler/``), or built tiny and random for tests. The conditioning
follows SVD's pipeline and the public Ouroboros3D inference (docs/OFFICIAL.md 11.5-11.6):

* CLIP embedding of the **clean** condition image: antialiased bicubic resize to 224, CLIP
  normalisation, ``image_embeds`` -> ``[B, 1, D]``;
* condition latent: ``vae.encode(image + noise_aug * n).latent_dist.mode()`` with **no** scaling
  factor (training samples the posterior instead), repeated over the frames by the caller;
* added time ids ``[fps_id, motion_bucket_id, noise_aug]`` = ``[6, 127, 0.02]`` at inference.

Images here are ``[-1, 1]`` (the diffusion code's range); the rest of the library uses ``[0, 1]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder
from torch import Tensor, nn
from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection
from transformers.utils import logging as hf_logging

# diffusers' SVD pipeline module imports transformers' CLIPImageProcessor, which warns on the core
# install (no torchvision) about a backend ouro never uses; only this resize is taken from it.
_verbosity = hf_logging.get_verbosity()
hf_logging.set_verbosity_error()
try:
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
finally:
    hf_logging.set_verbosity(_verbosity)

__all__ = ["SVDConditioner", "FPS_ID", "MOTION_BUCKET_ID", "NOISE_AUG"]

FPS_ID = 6  #: SVD's fps conditioning as the public inference passes it (7 fps - 1)
MOTION_BUCKET_ID = 127
NOISE_AUG = 0.02  #: condition-image noise at inference
CLIP_SIZE = 224


class SVDConditioner(nn.Module):
    """The frozen VAE and CLIP image encoder of SVD, with the conditioning maths around them.

    Attributes:
        vae: ``AutoencoderKLTemporalDecoder``; latents are ``image_size / 8`` with 4 channels.
        image_encoder: ``CLIPVisionModelWithProjection``; ``projection_dim`` = the UNet's
            ``cross_attention_dim``.
        feature_extractor: the CLIP image processor, read for its mean and std only: the PIL
            variant, which needs no torchvision (the core install has none) and reads and writes
            the same ``preprocessor_config.json`` (``image_processor_type`` stays ``CLIPImageProcessor``).
        scheduler_config: the folder's ``scheduler/scheduler_config.json`` (``{}`` if absent).
    """

    def __init__(
        self,
        vae: AutoencoderKLTemporalDecoder,
        image_encoder: CLIPVisionModelWithProjection,
        feature_extractor: CLIPImageProcessorPil,
        scheduler_config: dict | None = None,
    ) -> None:
        super().__init__()
        self.vae, self.image_encoder = vae, image_encoder
        self.feature_extractor, self.scheduler_config = feature_extractor, dict(scheduler_config or {})
        self.register_buffer("clip_mean", torch.tensor(self.feature_extractor.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(self.feature_extractor.image_std).view(1, 3, 1, 1), persistent=False)

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, folder: str | Path, torch_dtype: torch.dtype | None = None) -> "SVDConditioner":
        """Load from a diffusers-format SVD img2vid folder (safetensors weights)."""
        folder = Path(folder)
        for sub in ("vae", "image_encoder", "feature_extractor"):
            if not (folder / sub).is_dir():
                raise FileNotFoundError(f"{folder}: no '{sub}/' sub-folder; expected a diffusers-format SVD img2vid folder")
        kwargs = {"torch_dtype": torch_dtype} if torch_dtype is not None else {}
        vae_class = json.loads((folder / "vae" / "config.json").read_text()).get("_class_name") if (folder / "vae" / "config.json").is_file() else None
        if vae_class == "PixelShuffleVAE":
            from ouro.models.pixel_codec import PixelShuffleVAE

            vae = PixelShuffleVAE.from_pretrained(folder / "vae", use_safetensors=True, **kwargs)
        else:
            vae = AutoencoderKLTemporalDecoder.from_pretrained(folder / "vae", use_safetensors=True, **kwargs)
        enc = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder", use_safetensors=True, **kwargs)
        fe = CLIPImageProcessorPil.from_pretrained(folder / "feature_extractor")
        sched = folder / "scheduler" / "scheduler_config.json"
        return cls(vae, enc, fe, json.loads(sched.read_text()) if sched.is_file() else {})

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``vae/``, ``image_encoder/``, ``feature_extractor/`` (and ``scheduler/``) as safetensors + JSON."""
        folder = Path(folder)
        self.vae.save_pretrained(folder / "vae", safe_serialization=True)
        self.image_encoder.save_pretrained(folder / "image_encoder", safe_serialization=True)
        self.feature_extractor.save_pretrained(folder / "feature_extractor")
        if self.scheduler_config:
            (folder / "scheduler").mkdir(parents=True, exist_ok=True)
            (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(self.scheduler_config, indent=2))

    @classmethod
    def tiny(cls, cross_attention_dim: int = 32, latent_channels: int = 4, seed: int = 0) -> "SVDConditioner":
        """Random tiny parts for tests: a narrow 4-level VAE (SVD's /8 latents) and a 2-layer CLIP."""
        torch.manual_seed(seed)
        vae = AutoencoderKLTemporalDecoder(
            block_out_channels=(32, 32, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4,
            latent_channels=latent_channels,
            layers_per_block=1,
        )
        enc = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                image_size=CLIP_SIZE, patch_size=32, projection_dim=cross_attention_dim,
            )
        )
        return cls(vae.eval(), enc.eval(), CLIPImageProcessorPil(), {})

    @classmethod
    def pixel(cls, factor: int, cross_attention_dim: int = 32, seed: int = 0) -> "SVDConditioner":
        """VAE-free parts: :class:`~ouro.models.pixel_codec.PixelShuffleVAE` latents and a tiny CLIP.

        For models trained from scratch on a CPU (the embedded demo): latents are the pixels
        rearranged (``3 factor^2`` channels), exactly invertible; the tiny random CLIP gives a fixed
        image embedding the UNet's cross-attention can learn to read.
        """
        from ouro.models.pixel_codec import PixelShuffleVAE

        parts = cls.tiny(cross_attention_dim, seed=seed)
        parts.vae = PixelShuffleVAE(factor).eval()
        return parts

    # ------------------------------------------------------------------------------ conditioning
    @torch.no_grad()
    def clip_embedding(self, image: Tensor) -> Tensor:  # [B, 3, H, W] in [-1, 1] -> [B, 1, D]
        """CLIP image embedding of the clean condition image, as SVD's pipeline computes it."""
        x = _resize_with_antialiasing(image.float(), (CLIP_SIZE, CLIP_SIZE))
        x = ((x + 1.0) / 2.0 - self.clip_mean) / self.clip_std
        x = x.to(dtype=self.image_encoder.dtype)
        return self.image_encoder(x).image_embeds.unsqueeze(1)

    def condition_latent(
        self,
        image: Tensor,  # [B, 3, H, W] in [-1, 1]
        noise_aug: float | Tensor = NOISE_AUG,  # scalar or [B]
        generator: torch.Generator | None = None,
        sample_posterior: bool = False,
    ) -> Tensor:  # [B, 4, H/8, W/8]
        """Latent of the noise-augmented condition image; the posterior mode (inference) or a sample (training).

        No scaling factor is applied, as in SVD (the UNet was trained on unscaled condition latents).
        """
        noise_aug = torch.as_tensor(noise_aug, device=image.device, dtype=image.dtype).reshape(-1, 1, 1, 1)
        noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
        dist = self.vae.encode((image + noise_aug * noise).to(self.vae.dtype)).latent_dist
        return dist.sample(generator) if sample_posterior else dist.mode()

    def encode(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Training targets: ``[..., 3, H, W]`` in [-1, 1] -> scaled latents ``[..., 4, H/8, W/8]`` (posterior sample)."""
        lead = images.shape[:-3]
        dist = self.vae.encode(images.flatten(0, -4).to(self.vae.dtype)).latent_dist
        latents = dist.sample(generator) * self.vae.config.scaling_factor
        return latents.reshape(lead + latents.shape[1:])

    def decode(self, latents: Tensor, chunk_frames: int | None = None) -> Tensor:
        """Scaled latents ``[B, F, 4, h, w]`` -> images ``[B, F, 3, 8h, 8w]`` in about [-1, 1] (float32, not clamped).

        ``chunk_frames``: frames per VAE call, as SVD's ``decode_chunk_size`` (None: all ``F`` frames
        of an object in one call, as SVD decodes by default). Chunks never mix objects; the last
        chunk of an object may be shorter. **Chunking changes the frames**: the temporal decoder
        mixes the frames of one call (3-tap temporal convolutions, and GroupNorm statistics taken
        over all frames of the call), so a frame decoded beside 1 other frame differs from the
        same frame decoded beside 7 (SVD's pipeline: "higher chunk size leads to better temporal
        consistency"). A chunk of ``F`` or more is exactly one decode. Decoding a subset of views
        (e.g. the 4 the reconstructor reads) passes ``[B, 4, ...]``.
        """
        b, f = latents.shape[:2]
        chunk_frames = min(chunk_frames or f, f)
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        scaled = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        out = [
            self.vae.decode(scaled[i, j : j + chunk_frames], num_frames=scaled[i, j : j + chunk_frames].shape[0]).sample
            for i in range(b)
            for j in range(0, f, chunk_frames)
        ]
        return torch.cat(out).float().reshape(b, f, *out[0].shape[1:])

    @staticmethod
    def added_time_ids(
        batch: int,
        fps_id: int = FPS_ID,
        motion_bucket_id: int = MOTION_BUCKET_ID,
        noise_aug: float = NOISE_AUG,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:  # [B, 3]
        """``[fps_id, motion_bucket_id, noise_aug]`` per batch row, as SVD's added conditioning."""
        return torch.tensor([[fps_id, motion_bucket_id, noise_aug]], device=device, dtype=dtype).repeat(batch, 1)
