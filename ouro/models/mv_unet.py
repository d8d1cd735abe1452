"""The multi-view generator F: SVD's spatio-temporal UNet + Plücker camera MLPs + feedback adapters.

``MultiViewUNet`` owns, in this order (so its ``state_dict`` is exactly the public
``mv_model_unet.pth`` key list for the ``paper`` preset, ouro/assets/official/mv_model_unet_keys.txt):

* ``unet``: a stock :class:`diffusers.UNetSpatioTemporalConditionModel` (in 8 = noisy + condition
  latents, out 4; SVD img2vid sizes for ``paper``, heads ``(5, 10, 20, 20)`` as the hub config);
* ``cond_encoder``: one :class:`~ouro.models.adapter.FeedbackAdapter` per feedback map
  (``0`` = rendered RGB, ``1`` = coordinate map, as ``feedback`` in the config orders them);
* ``down_plucker`` (one per down block), ``up_plucker`` (one per up block), ``mid_plucker``:
  :class:`~ouro.models.plucker_embedding.PluckerEmbedding` MLPs.

Its forward drives the diffusers blocks itself, because the adapter features enter *inside* a
down block (after its body, before its downsampler), where diffusers has no hook
(OFFICIAL.md 6.8, 7.5):

1. time embedding of ``timestep`` plus the added-ids embedding, repeated per frame;
2. ``conv_in``; then for each down block: ``+ down_plucker[i](rays)``, its resnets/attentions,
   ``+ adapter feature i`` (both adapters summed; CrossAttn blocks only), its downsampler;
3. ``+ mid_plucker(rays)``, the mid block, ``+ the last adapter feature``;
4. for each up block: ``+ up_plucker[i](rays)``, the block with its skips;
5. ``conv_norm_out`` -> SiLU -> ``conv_out``.

``compat="official"`` reproduces the public model's numerics (OFFICIAL.md 6.2-6.4, 6.9): its
transposed, un-translated ray grid, and the side effect of its in-place adds, through which the
camera term of each block also lands in the skip tensor that is the same object as that block's
input (the ``conv_in`` output, the downsampler outputs of down blocks 0-2, and the last resnet
output of the last down block); and, at batch > 1, diffusers 0.25's temporal cross-attention
context order, under which the two classifier-free-guidance halves read each other's image
embedding at alternate pixels (:mod:`ouro.models.temporal_context`). ``compat=None`` (default) uses
true rays, leaves skips alone and keeps the batch items independent (current diffusers' order).

    >>> model = MultiViewUNet.from_preset("tiny")
    >>> out = model(sample, t, clip_emb, added_time_ids, c2w, K_norm, feedback=[rgb, ccm]).sample
    >>> out.shape                                               # [B, F, 4, h, w]
"""

from __future__ import annotations

from dataclasses import dataclass
from contextlib import nullcontext
from typing import Sequence

import torch
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import Tensor, nn

from ouro.config import PRESETS, GeneratorConfig
from ouro.gaussians.gaussians import Compat
from ouro.models.adapter import FeedbackAdapter
from ouro.models.plucker_embedding import PluckerEmbedding, harmonic_embedding, unet_plucker_rays
from ouro.models.temporal_context import mixed_time_context

__all__ = ["MultiViewUNet", "MultiViewUNetOutput", "AdapterFeatures"]

#: Adapter features per UNet level, already summed over the adapters: ``[b', f', C_k, h_k, w_k]``
#: with ``b'`` in ``{1, B}`` and ``f'`` in ``{1, F}`` (size-1 axes broadcast over the batch/frames).
AdapterFeatures = list[Tensor]


@dataclass
class MultiViewUNetOutput(BaseOutput):
    """Output of :class:`MultiViewUNet`.

    Attributes:
        sample: ``[B, F, 4, h, w]`` raw UNet output (SVD's EDM v-prediction), ``h, w`` the latent size.
    """

    sample: Tensor


def _add(x: Tensor, term: Tensor, batch: int, frames: int) -> Tensor:
    """``x [B*F, C, h, w] + term [b', f', C, h, w]`` (b' in {1, B}, f' in {1, F}), broadcasting; out of place."""
    # [B*F, C, h, w] -> [B, F, C, h, w] -> (+ term) -> [B*F, C, h, w]
    return (x.unflatten(0, (batch, frames)) + term).flatten(0, 1)


class MultiViewUNet(ModelMixin, ConfigMixin):
    """SVD UNet with per-block Plücker camera MLPs and RGB / coordinate-map feedback adapters.

    Constructor arguments are the fields of :class:`ouro.config.GeneratorConfig` (see there); the
    UNet gets ``in_channels = 2 * latent_channels``, ``out_channels = latent_channels``,
    ``projection_class_embeddings_input_dim = 3 * addition_time_embed_dim`` (fps id, motion bucket,
    noise augmentation), ``transformer_layers_per_block = 1`` and ``len(block_out_channels) - 1``
    CrossAttn down/up blocks plus one plain block, as SVD. ``image_size`` fixes the UNet's
    ``sample_size`` (``image_size / vae_downsample``), which is only recorded: any image size that
    is a multiple of ``vae_downsample * 2^(levels - 1)`` runs (64 px for ``tiny``/``paper``).
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        image_size: int = 512,
        latent_channels: int = 4,
        vae_downsample: int = 8,
        block_out_channels: Sequence[int] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        num_attention_heads: Sequence[int] = (5, 10, 20, 20),
        cross_attention_dim: int = 1024,
        addition_time_embed_dim: int = 256,
        num_frames: int = 8,
        plucker_frequencies: int = 6,
        adapter_blocks: int = 3,
        feedback: Sequence[str] = ("rgb", "ccm"),
        codec: str = "vae",  # which latent codec the model was trained with; recorded, not used here
    ):
        super().__init__()
        channels = tuple(block_out_channels)
        levels = len(channels)
        if levels < 2:
            raise ValueError(f"block_out_channels needs at least 2 levels, got {channels}")
        if len(set(feedback)) != len(feedback):
            raise ValueError(f"feedback names must be unique, got {tuple(feedback)}")
        # registration order = the public state-dict order: unet, cond_encoder, down/up/mid_plucker
        self.unet = UNetSpatioTemporalConditionModel(
            sample_size=image_size // vae_downsample,
            in_channels=2 * latent_channels,
            out_channels=latent_channels,
            down_block_types=("CrossAttnDownBlockSpatioTemporal",) * (levels - 1) + ("DownBlockSpatioTemporal",),
            up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * (levels - 1),
            block_out_channels=channels,
            addition_time_embed_dim=addition_time_embed_dim,
            projection_class_embeddings_input_dim=3 * addition_time_embed_dim,
            layers_per_block=layers_per_block,
            cross_attention_dim=cross_attention_dim,
            transformer_layers_per_block=1,
            num_attention_heads=tuple(num_attention_heads),
            num_frames=num_frames,
        )
        self.cond_encoder = nn.ModuleList(
            FeedbackAdapter(channels, blocks_per_stage=adapter_blocks, downscale=vae_downsample) for _ in feedback
        )
        # each MLP's width is that of its block's input (OFFICIAL.md 6.7)
        down_in = (channels[0],) + channels[:-1]
        up_in = (channels[-1],) + tuple(reversed(channels))[:-1]
        self.down_plucker = nn.ModuleList(PluckerEmbedding(c, plucker_frequencies) for c in down_in)
        self.up_plucker = nn.ModuleList(PluckerEmbedding(c, plucker_frequencies) for c in up_in)
        self.mid_plucker = PluckerEmbedding(channels[-1], plucker_frequencies)

    # ----------------------------------------------------------------------------------- builders
    @classmethod
    def from_ouro_config(cls, cfg: GeneratorConfig) -> "MultiViewUNet":
        """A freshly initialised model with the sizes of ``cfg`` (UNet weights random, not SVD's)."""
        return cls(**{f: getattr(cfg, f) for f in GeneratorConfig.__dataclass_fields__})

    @classmethod
    def from_preset(cls, name: str) -> "MultiViewUNet":
        """A freshly initialised ``tiny``, ``small`` or ``paper`` (the public checkpoint's sizes) model."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls.from_ouro_config(PRESETS[name].generator)

    def to_ouro_config(self) -> GeneratorConfig:
        """This model's sizes as a :class:`GeneratorConfig` (lists from JSON become tuples)."""
        fields = GeneratorConfig.__dataclass_fields__
        return GeneratorConfig(**{f: tuple(v) if isinstance(v, list) else v for f, v in self.config.items() if f in fields})

    # ---------------------------------------------------------------------------------- feedback
    def encode_feedback(
        self,
        feedback: Sequence[Tensor | None] | None,
        num_frames: int,
        latent_size: tuple[int, int],
        device: torch.device | str | None = None,
    ) -> AdapterFeatures | None:
        """Run the adapters and sum their features per level.

        Args:
            feedback: one map per adapter (``config.feedback`` order), each ``[B or 1, F, 3, H, W]``
                in ``[0, 1]`` with ``H, W = latent_size * vae_downsample``; ``None`` (all, or one
                entry) means an all-zero map, as the paper feeds when there is no feedback yet.
                A zero map gives the same features for every frame, so it is encoded once at
                ``[1, 1]`` and broadcast; a batch-1 map (both classifier-free-guidance halves get
                the same feedback) is likewise broadcast over the batch by :meth:`forward`.
            num_frames: F, the frames of the sample.
            latent_size: ``(h, w)`` of the latents.

        Returns:
            One ``[b', f', C_k, h / 2^k, w / 2^k]`` tensor per level (``b'`` in ``{1, B}``, ``f'`` in
            ``{1, F}``), or ``None`` when the model has no adapters. Pass it to :meth:`forward` as
            ``adapter_features`` to reuse it (e.g. across the steps that have no feedback).
        """
        n = len(self.cond_encoder)
        if n == 0:
            if feedback is not None and any(m is not None for m in feedback):
                raise ValueError("this model has no feedback adapters (config.feedback is empty), but feedback was given")
            return None
        if feedback is None:
            feedback = [None] * n
        if len(feedback) != n:
            raise ValueError(f"feedback must hold {n} maps {tuple(self.config.feedback)}, got {len(feedback)}")
        step = 2 ** (len(self.config.block_out_channels) - 1)
        if latent_size[0] % step or latent_size[1] % step:
            # the adapters pool by flooring, the UNet's strided convs by rounding up: sizes agree only here
            raise ValueError(
                f"with feedback adapters the latent size must be a multiple of {step}, got {tuple(latent_size)}"
            )
        s = self.config.vae_downsample
        size = (latent_size[0] * s, latent_size[1] * s)
        total: AdapterFeatures | None = None
        for name, encoder, maps in zip(self.config.feedback, self.cond_encoder, feedback):
            if maps is None:
                maps = torch.zeros(1, 1, 3, *size, device=device if device is not None else self.device)
            elif maps.ndim != 5 or maps.shape[1] != num_frames or maps.shape[2] != 3 or tuple(maps.shape[-2:]) != size:
                raise ValueError(
                    f"feedback {name!r} must have shape [B or 1, {num_frames}, 3, {size[0]}, {size[1]}], "
                    f"got {tuple(maps.shape)}"
                )
            b, f = maps.shape[:2]
            # [b, f, 3, H, W] -> [b * f, 3, H, W] -> features [b * f, C_k, h_k, w_k] -> [b, f, C_k, h_k, w_k]
            feats = [t.unflatten(0, (b, f)) for t in encoder(maps.flatten(0, 1))]
            total = feats if total is None else [a + t for a, t in zip(total, feats)]
        return total

    # ------------------------------------------------------------------------------------ forward
    def forward(
        self,
        sample: Tensor,  # [B, F, 8, h, w] noisy latents (scaled by c_in) | condition latents
        timestep: Tensor | float,  # [] or [B]; c_noise = 0.25 ln(sigma)
        encoder_hidden_states: Tensor,  # [B, 1, D] CLIP image embedding
        added_time_ids: Tensor,  # [B, 3] fps id, motion bucket id, noise augmentation
        c2w: Tensor,  # [B or 1, F, 4, 4] camera-to-world, OpenCV
        K_norm: Tensor,  # [B or 1, F, 3, 3] normalised intrinsics
        feedback: Sequence[Tensor | None] | None = None,  # per adapter [B or 1, F, 3, H, W] in [0, 1]
        *,
        adapter_features: AdapterFeatures | None = None,
        compat: Compat = None,
        return_dict: bool = True,
    ) -> MultiViewUNetOutput | tuple[Tensor]:
        """One denoiser evaluation of F.

        Args:
            sample: ``[B, F, 2 * latent_channels, h, w]``: the noisy latents already multiplied by
                ``c_in = 1/sqrt(sigma^2 + 1)``, then the condition-image latents.
            timestep: ``c_noise``, a float, a ``[]`` or a ``[B]`` tensor.
            encoder_hidden_states: ``[B, L, cross_attention_dim]`` (``L = 1``: the CLIP image embedding).
            added_time_ids: ``[B, 3]``.
            c2w: ``[B or 1, F, 4, 4]`` camera-to-world poses (OpenCV axes, object units); batch 1 is
                broadcast (both guidance halves share cameras).
            K_norm: ``[B or 1, F, 3, 3]`` intrinsics normalised by the image size.
            feedback: one map per adapter, ``[B or 1, F, 3, H, W]`` in ``[0, 1]`` with
                ``H = h * vae_downsample``; ``None`` = all-zero maps (see :meth:`encode_feedback`).
                Pass batch 1 when every batch item gets the same maps (classifier-free guidance):
                the adapters then run once and their features are broadcast.
            adapter_features: features from :meth:`encode_feedback`, to skip the adapters; then
                ``feedback`` must be ``None``.
            compat: ``None`` (default) or ``"official"`` to reproduce the public checkpoint's ray
                grid, skip side effect, timestep cast and (batch > 1) temporal context order
                (module docstring).
            return_dict: return a :class:`MultiViewUNetOutput` (default) or the tuple ``(sample,)``.

        Returns:
            ``sample`` ``[B, F, latent_channels, h, w]``.
        """
        if compat not in (None, "official"):
            raise ValueError(f"compat must be None or 'official', got {compat!r}")
        official = compat == "official"
        # the public code's temporal cross-attention context order (diffusers 0.25), see ouro.models.temporal_context
        order = mixed_time_context(self.unet) if official and sample.shape[0] > 1 else nullcontext()
        with order:
            return self._forward(
                sample, timestep, encoder_hidden_states, added_time_ids, c2w, K_norm, feedback,
                adapter_features=adapter_features, compat=compat, return_dict=return_dict,
            )

    def _forward(
        self,
        sample: Tensor,
        timestep: Tensor | float,
        encoder_hidden_states: Tensor,
        added_time_ids: Tensor,
        c2w: Tensor,
        K_norm: Tensor,
        feedback: Sequence[Tensor | None] | None,
        *,
        adapter_features: AdapterFeatures | None,
        compat: Compat,
        return_dict: bool,
    ) -> MultiViewUNetOutput | tuple[Tensor]:
        """:meth:`forward` without the choice of context order."""
        official = compat == "official"
        unet = self.unet
        b, f, c, h, w = sample.shape
        assert c == unet.config.in_channels, sample.shape
        assert encoder_hidden_states.ndim == 3 and encoder_hidden_states.shape[0] == b, encoder_hidden_states.shape
        assert added_time_ids.shape[0] == b, added_time_ids.shape
        assert c2w.shape[-3:] == (f, 4, 4) and c2w.shape[0] in (1, b), c2w.shape
        assert K_norm.shape[-3:] == (f, 3, 3) and K_norm.shape[0] in (1, b), K_norm.shape
        if adapter_features is not None and feedback is not None:
            raise ValueError("pass either feedback or adapter_features, not both")

        # 1. time embedding (as diffusers' UNetSpatioTemporalConditionModel.forward)
        timesteps = torch.as_tensor(timestep, device=sample.device)
        timesteps = timesteps.reshape(-1).expand(b)
        if official:
            timesteps = timesteps.to(sample.dtype)  # the public forward casts before the sinusoids
        t_emb = unet.time_proj(timesteps).to(dtype=sample.dtype)  # Timesteps returns float32
        emb = unet.time_embedding(t_emb)
        time_embeds = unet.add_time_proj(added_time_ids.flatten()).reshape(b, -1).to(emb.dtype)
        emb = emb + unet.add_embedding(time_embeds)
        # [B, C] -> [B * F, C]; [B, L, D] -> [B * F, L, D] (row index = b * F + f)
        emb = emb.repeat_interleave(f, dim=0)
        encoder_hidden_states = encoder_hidden_states.repeat_interleave(f, dim=0)

        # 2. feedback features and camera terms
        if adapter_features is None:
            adapter_features = self.encode_feedback(feedback, f, (h, w), device=sample.device)
        shapes = [tuple(t.shape) for t in adapter_features or []]
        if any(shape[0] not in (1, b) or shape[1] not in (1, f) for shape in shapes):
            raise ValueError(f"feedback / adapter features must have batch 1 or {b} and 1 or {f} frames, got {shapes}")
        embedded_rays: dict[tuple[int, int], Tensor] = {}

        def camera_term(mlp: PluckerEmbedding, x: Tensor) -> Tensor:  # -> [b', F, C, hh, ww]
            size = (x.shape[-2], x.shape[-1])
            if size not in embedded_rays:  # the rays of one resolution feed a down, an up (and the mid) MLP
                rays = unet_plucker_rays(c2w, K_norm, *size, compat=compat)  # [b', F, 6, hh, ww] float32
                embedded_rays[size] = harmonic_embedding(rays.movedim(-3, -1), self.config.plucker_frequencies)
            out = mlp(embedded_rays[size].to(x.dtype))  # [b', F, hh, ww, C]
            return out.permute(0, 1, 4, 2, 3)

        # 3. conv_in and the down blocks
        x = unet.conv_in(sample.flatten(0, 1))  # [B, F, 8, h, w] -> [B * F, 8, h, w] -> [B * F, C0, h, w]
        image_only_indicator = torch.zeros(b, f, dtype=x.dtype, device=x.device)
        skips: list[Tensor] = [x]
        level = 0
        for i, block in enumerate(unet.down_blocks):
            x = _add(x, camera_term(self.down_plucker[i], x), b, f)
            if official:
                skips[-1] = x  # the in-place add of the public model also changed this skip (OFFICIAL.md 6.9)
            feature = None
            if getattr(block, "has_cross_attention", False):
                feature = adapter_features[level] if adapter_features is not None else None
                level += 1
            x, states = self._down_block(block, x, emb, encoder_hidden_states, image_only_indicator, feature, b, f)
            skips.extend(states)

        # 4. mid block
        x = _add(x, camera_term(self.mid_plucker, x), b, f)
        if official:
            skips[-1] = x
        x = unet.mid_block(
            hidden_states=x,
            temb=emb,
            encoder_hidden_states=encoder_hidden_states,
            image_only_indicator=image_only_indicator,
        )
        if adapter_features is not None:
            x = _add(x, adapter_features[-1], b, f)

        # 5. up blocks (upsample sizes forwarded for latents that are not a multiple of 2^levels, as diffusers)
        forward_upsample_size = any(s % 2**unet.num_upsamplers for s in (h, w))
        for i, block in enumerate(unet.up_blocks):
            x = _add(x, camera_term(self.up_plucker[i], x), b, f)
            n_res = len(block.resnets)
            res_samples, skips = tuple(skips[-n_res:]), skips[:-n_res]
            upsample_size = skips[-1].shape[2:] if forward_upsample_size and i < len(unet.up_blocks) - 1 else None
            kwargs = {}
            if getattr(block, "has_cross_attention", False):
                kwargs["encoder_hidden_states"] = encoder_hidden_states
            x = block(
                hidden_states=x,
                temb=emb,
                res_hidden_states_tuple=res_samples,
                upsample_size=upsample_size,
                image_only_indicator=image_only_indicator,
                **kwargs,
            )

        # 6. post-process; [B * F, 4, h, w] -> [B, F, 4, h, w]
        x = unet.conv_out(unet.conv_act(unet.conv_norm_out(x)))
        out = x.reshape(b, f, *x.shape[1:])
        if not return_dict:
            return (out,)
        return MultiViewUNetOutput(sample=out)

    @staticmethod
    def _down_block(
        block: nn.Module,
        x: Tensor,  # [B * F, C, h, w]
        emb: Tensor,  # [B * F, E]
        encoder_hidden_states: Tensor,  # [B * F, L, D]
        image_only_indicator: Tensor,  # [B, F]
        feature: Tensor | None,  # [b', f', C, h, w] adapter feature, or None
        b: int,
        f: int,
    ) -> tuple[Tensor, list[Tensor]]:
        """A diffusers (CrossAttn)DownBlockSpatioTemporal with the adapter feature added after its
        body and before its downsampler (OFFICIAL.md 7.5). Returns the output and the skips."""
        states: list[Tensor] = []
        attentions = getattr(block, "attentions", None)
        for k, resnet in enumerate(block.resnets):
            if torch.is_grad_enabled() and block.gradient_checkpointing:
                x = block._gradient_checkpointing_func(resnet, x, emb, image_only_indicator)
            else:
                x = resnet(x, emb, image_only_indicator=image_only_indicator)
            if attentions is not None:
                x = attentions[k](
                    x,
                    encoder_hidden_states=encoder_hidden_states,
                    image_only_indicator=image_only_indicator,
                    return_dict=False,
                )[0]
            states.append(x)
        if feature is not None:
            x = _add(x, feature, b, f)  # the skips above do not contain it; the downsampled output does
        if block.downsamplers is not None:
            for downsampler in block.downsamplers:
                x = downsampler(x)
            states.append(x)
        return x, states
