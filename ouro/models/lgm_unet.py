"""LGM's asymmetric U-Net with multi-view attention and Ouroboros3D's noise-level embedding.

Module names and shapes follow the public Ouroboros3D LGM (docs/OFFICIAL.md 9.2-9.4 and
official_recon_model_keys.txt), so its ``unet.*`` weights load strictly. Summary:

* ``conv_in`` 3x3 -> down blocks (``layers_per_block`` ResnetBlocks, optional multi-view attention
  after each, a 3x3 stride-2 conv ``downsample`` except in the last block) -> mid block (net,
  attention, net) -> up blocks (``layers_per_block + 1`` ResnetBlocks on ``cat([x, skip])``,
  optional attention, nearest x2 + 3x3 conv ``upsample`` except in the last block) -> GroupNorm ->
  SiLU -> ``conv_out`` 3x3.
* Fewer up blocks than down blocks make the output smaller than the input (256 -> 128 for ``big``).
* Every ResnetBlock adds ``emb_layers(time_embed(time_proj(c_noise)))`` after its first conv; the
  ``emb_layers`` start at zero, so a freshly built network ignores the noise level (that is how
  the public model was initialised from plain LGM weights).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from torch import Tensor, nn

__all__ = ["ResnetBlock", "MVAttention", "DownBlock", "MidBlock", "UpBlock", "LGMUNet"]

SKIP_SCALE = math.sqrt(0.5)


class ResnetBlock(nn.Module):
    """GroupNorm/SiLU/conv residual block with an additive noise-level embedding.

    ``[N, C_in, H, W], [N or 1, E] -> [N, C_out, H, W]``: norm1 -> SiLU -> conv1 -> + emb -> norm2 ->
    SiLU -> conv2 -> ``(h + shortcut(x)) * skip_scale``; ``shortcut`` (1x1) exists only when the
    channel count changes.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, groups: int = 32, eps: float = 1e-5):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.shortcut = nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        nn.init.zeros_(self.emb_layers[1].weight)
        nn.init.zeros_(self.emb_layers[1].bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (h + self.shortcut(x)) * SKIP_SCALE


class _Attention(nn.Module):
    """Multi-head self-attention on tokens ``[B, L, C] -> [B, L, C]`` (qkv without bias, proj with)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        # [B, L, 3C] -> [3, B, heads, L, C/heads]; qkv features are ordered (q|k|v, head, channel)
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # default scale = head_dim^-0.5
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class MVAttention(nn.Module):
    """Self-attention across the pixels of all ``num_frames`` views of an object.

    ``[B * V, C, H, W] -> [B * V, C, H, W]`` with rows ordered ``b * V + v``: GroupNorm, then the V views'
    tokens are concatenated view-major into one sequence of ``V * H * W`` tokens, attended, and
    added back: ``(x + attn) * skip_scale``.
    """

    def __init__(self, dim: int, num_heads: int = 16, num_frames: int = 4, groups: int = 32, eps: float = 1e-5):
        super().__init__()
        self.num_frames = num_frames
        self.norm = nn.GroupNorm(groups, dim, eps=eps)
        self.attn = _Attention(dim, num_heads)

    def forward(self, x: Tensor) -> Tensor:
        bv, c, h, w = x.shape
        v = self.num_frames
        assert bv % v == 0, (x.shape, v)
        # [B*V, C, H, W] -> [B, V*H*W, C]
        tokens = self.norm(x).reshape(bv // v, v, c, h * w).permute(0, 1, 3, 2).reshape(bv // v, v * h * w, c)
        out = self.attn(tokens)
        # [B, V*H*W, C] -> [B*V, C, H, W]
        out = out.reshape(bv // v, v, h * w, c).permute(0, 1, 3, 2).reshape(bv, c, h, w)
        return (x + out) * SKIP_SCALE


def _attention_or_identity(enabled: bool, dim: int, heads: int, num_frames: int, groups: int) -> nn.Module:
    # nn.Identity owns no parameters, so `attns.i.*` keys exist exactly where the official model has them
    return MVAttention(dim, heads, num_frames, groups) if enabled else nn.Identity()


class DownBlock(nn.Module):
    """``num_layers`` ResnetBlocks (+ attention), then an optional stride-2 3x3 conv.

    ``[N, C_in, H, W] -> [N, C_out, H/2, W/2]`` (or ``H, W`` without ``downsample``), plus the list of
    skip tensors: every layer's output and the downsampled output.
    """

    def __init__(
        self, in_channels: int, out_channels: int, num_layers: int, downsample: bool, attention: bool,
        emb_dim: int, heads: int, num_frames: int, groups: int,
    ):
        super().__init__()
        self.nets = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, emb_dim, groups) for i in range(num_layers)
        )
        self.attns = nn.ModuleList(
            _attention_or_identity(attention, out_channels, heads, num_frames, groups) for _ in range(num_layers)
        )
        self.downsample = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) if downsample else None

    def forward(self, x: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for net, attn in zip(self.nets, self.attns):
            x = attn(net(x, emb))
            skips.append(x)
        if self.downsample is not None:
            x = self.downsample(x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """ResnetBlock, then ``num_layers`` x (attention, ResnetBlock): ``[N, C, H, W] -> [N, C, H, W]``."""

    def __init__(
        self, channels: int, attention: bool, emb_dim: int, heads: int, num_frames: int, groups: int, num_layers: int = 1
    ):
        super().__init__()
        self.nets = nn.ModuleList(ResnetBlock(channels, channels, emb_dim, groups) for _ in range(num_layers + 1))
        self.attns = nn.ModuleList(
            _attention_or_identity(attention, channels, heads, num_frames, groups) for _ in range(num_layers)
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.nets[0](x, emb)
        for attn, net in zip(self.attns, self.nets[1:]):
            x = net(attn(x), emb)
        return x


class UpBlock(nn.Module):
    """``num_layers`` ResnetBlocks on ``cat([x, skip])`` (+ attention), then optional nearest x2 + 3x3 conv.

    ``[N, C_in, H, W]`` and ``num_layers`` skips (consumed last first) -> ``[N, C_out, 2H, 2W]`` (or
    ``H, W`` without ``upsample``). All skips but the last consumed have ``C_out`` channels; that
    one has ``skip_channels``.
    """

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, num_layers: int, upsample: bool,
        attention: bool, emb_dim: int, heads: int, num_frames: int, groups: int,
    ):
        super().__init__()
        nets = []
        for i in range(num_layers):
            c_in = in_channels if i == 0 else out_channels
            c_skip = skip_channels if i == num_layers - 1 else out_channels
            nets.append(ResnetBlock(c_in + c_skip, out_channels, emb_dim, groups))
        self.nets = nn.ModuleList(nets)
        self.attns = nn.ModuleList(
            _attention_or_identity(attention, out_channels, heads, num_frames, groups) for _ in range(num_layers)
        )
        self.upsample = nn.Conv2d(out_channels, out_channels, 3, padding=1) if upsample else None

    def forward(self, x: Tensor, skips: list[Tensor], emb: Tensor) -> Tensor:
        for net, attn, skip in zip(self.nets, self.attns, reversed(skips)):
            x = attn(net(torch.cat([x, skip], dim=1), emb))
        if self.upsample is not None:
            x = self.upsample(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class TimestepProjection(nn.Module):
    """Sinusoidal features ``[cos | sin]`` of a scalar per sample: ``[N] -> [N, dim]`` (float32).

    Same as diffusers ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)``: frequencies
    ``10000^(-i / (dim/2))``, ``i = 0 .. dim/2 - 1``.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        return get_timestep_embedding(t, self.dim, flip_sin_to_cos=True, downscale_freq_shift=0)


class LGMUNet(nn.Module):
    """LGM U-Net: ``[B * V, in_channels, S, S], c_noise [B * V] or [1] -> [B * V, out_channels, S', S']``.

    ``S' = S * 2^(len(up_channels) - len(down_channels))``. Rows are ordered ``b * V + v`` with
    ``V = num_frames``; multi-view attention mixes the V rows of each object. ``up_channels[i]``
    must equal ``down_channels[-1 - i]`` (the skips are taken from the mirrored down blocks).

    Args:
        in_channels / out_channels: 9 (RGB + Plücker) and 14 (Gaussian channels) in LGM.
        down_channels, down_attention: width and attention flag of each down block.
        mid_attention: attention in the middle block.
        up_channels, up_attention: width and attention flag of each up block.
        layers_per_block: ResnetBlocks per down block (up blocks get one more).
        num_frames: views per object seen by the multi-view attention.
        attention_heads: heads of every attention layer.
        norm_groups: GroupNorm groups (32 in LGM; must divide every width, including the up blocks'
            concatenated inputs).
        time_embed_dim: width of the sinusoidal noise-level features; the MLP maps it to 4x.
    """

    def __init__(
        self,
        in_channels: int = 9,
        out_channels: int = 14,
        down_channels: Sequence[int] = (64, 128, 256, 512, 1024, 1024),
        down_attention: Sequence[bool] = (False, False, False, True, True, True),
        mid_attention: bool = True,
        up_channels: Sequence[int] = (1024, 1024, 512, 256, 128),
        up_attention: Sequence[bool] = (True, True, True, False, False),
        layers_per_block: int = 2,
        num_frames: int = 4,
        attention_heads: int = 16,
        norm_groups: int = 32,
        time_embed_dim: int = 128,
    ):
        super().__init__()
        down_channels, up_channels = tuple(down_channels), tuple(up_channels)
        if len(down_attention) != len(down_channels) or len(up_attention) != len(up_channels):
            raise ValueError("down_attention/up_attention need one flag per down/up block")
        if not 0 < len(up_channels) <= len(down_channels):
            raise ValueError(f"need 1..{len(down_channels)} up blocks, got {len(up_channels)}")
        mirrored = tuple(reversed(down_channels))[: len(up_channels)]
        if up_channels != mirrored:
            raise ValueError(f"up_channels {up_channels} must mirror down_channels: expected {mirrored}")
        emb_dim = 4 * time_embed_dim
        common = dict(emb_dim=emb_dim, heads=attention_heads, num_frames=num_frames, groups=norm_groups)

        self.conv_in = nn.Conv2d(in_channels, down_channels[0], 3, padding=1)
        blocks, c_out = [], down_channels[0]
        for i, c in enumerate(down_channels):
            c_in, c_out = c_out, c
            last = i == len(down_channels) - 1
            blocks.append(DownBlock(c_in, c_out, layers_per_block, not last, down_attention[i], **common))
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(down_channels[-1], mid_attention, **common)
        blocks, c_out = [], up_channels[0]
        for i, c in enumerate(up_channels):
            c_in, c_out = c_out, c
            c_skip = down_channels[max(-2 - i, -len(down_channels))]
            last = i == len(up_channels) - 1
            blocks.append(UpBlock(c_in, c_skip, c_out, layers_per_block + 1, not last, up_attention[i], **common))
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = nn.GroupNorm(norm_groups, up_channels[-1], eps=1e-5)
        self.conv_out = nn.Conv2d(up_channels[-1], out_channels, 3, padding=1)
        self.time_proj = TimestepProjection(time_embed_dim)
        self.time_embed = nn.Sequential(nn.Linear(time_embed_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def embed_noise_level(self, c_noise: Tensor, dtype: torch.dtype) -> Tensor:  # [N] -> [N, 4 * time_embed_dim]
        """The embedding every ResnetBlock adds (through its own ``emb_layers``)."""
        # sinusoids in float32 for precision, then the MLP in the weights' dtype
        return self.time_embed(self.time_proj(c_noise.float()).to(dtype))

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        """``x [B * V, C_in, S, S]``, ``c_noise [B * V]`` or ``[1]`` -> ``[B * V, C_out, S', S']``."""
        assert c_noise.ndim == 1 and c_noise.shape[0] in (1, x.shape[0]), (c_noise.shape, x.shape)
        emb = self.embed_noise_level(c_noise.to(x.device), x.dtype)
        x = self.conv_in(x)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, emb)
            skips.extend(block_skips)
        x = self.mid_block(x, emb)
        for block in self.up_blocks:
            n = len(block.nets)
            x, skips = block(x, skips[-n:], emb), skips[:-n]
        return self.conv_out(F.silu(self.norm_out(x)))
