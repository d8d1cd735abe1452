"""Feedback adapter: a T2I-Adapter-style encoder of a rendered map (RGB or coordinate map).

The structure is the public checkpoint's ``Adapter_XL(cin=192, sk=True, use_conv=False, ksize=1)``
(OFFICIAL.md 7.1-7.4), with the same parameter names (``conv_in``, ``body.N.in_conv``,
``body.N.block1``, ``body.N.block2``) so the released ``cond_encoder.{0,1}.*`` weights load strictly:

* ``PixelUnshuffle(s)`` (``s`` = the VAE downsampling, 8): ``[N, 3, H, W] -> [N, 3 s^2, H/s, W/s]``
  (torch channel order ``c * s^2 + i * s + j``), then ``conv_in`` 3x3 to ``channels[0]``.
* ``body``: ``len(channels)`` stages of ``blocks_per_stage`` residual blocks. The first block of every
  stage after the first halves the resolution with ``AvgPool2d(2)`` and, when the width changes,
  applies a 1x1 ``in_conv``; every block is ``x + block2(relu(block1(x)))`` with ``block1`` 3x3 and
  ``block2`` 1x1 **zero-initialised**, so a fresh adapter passes ``conv_in``'s output through.
* The features after each stage, ``[N, channels[k], H/(s 2^k), W/(s 2^k)]``, are what the UNet adds
  to its encoder (see :class:`ouro.models.mv_unet.MultiViewUNet`).

    >>> enc = FeedbackAdapter(channels=(320, 640, 1280, 1280))
    >>> [f.shape for f in enc(torch.rand(8, 3, 512, 512))]
    [(8, 320, 64, 64), (8, 640, 32, 32), (8, 1280, 16, 16), (8, 1280, 8, 8)]
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

__all__ = ["AdapterBlock", "FeedbackAdapter"]


class AdapterBlock(nn.Module):
    """``[N, C_in, H, W] -> [N, C_out, H', W']``: optional AvgPool2d(2), optional 1x1 ``in_conv``, then
    ``x + block2(relu(block1(x)))`` with ``block2`` zero-initialised (identity at init)."""

    def __init__(self, in_channels: int, out_channels: int, down: bool = False):
        super().__init__()
        # registration order = the public state-dict order: in_conv, block1, block2
        self.in_conv = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.block1 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.act = nn.ReLU()
        self.block2 = nn.Conv2d(out_channels, out_channels, 1)
        nn.init.zeros_(self.block2.weight)
        nn.init.zeros_(self.block2.bias)
        self.down = nn.AvgPool2d(2, stride=2) if down else None

    def forward(self, x: Tensor) -> Tensor:
        if self.down is not None:
            x = self.down(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return x + self.block2(self.act(self.block1(x)))


class FeedbackAdapter(nn.Module):
    """Encoder of one feedback map into one feature per UNet level.

    Args:
        channels: widths of the stages, the UNet's ``block_out_channels`` (paper: 320, 640, 1280, 1280).
        blocks_per_stage: residual blocks per stage (3).
        downscale: PixelUnshuffle factor, the VAE's downsampling (8); the input needs
            ``3 * downscale^2`` channels after unshuffling (192).
        in_channels: channels of the map (3: RGB or XYZ).
    """

    def __init__(
        self,
        channels: Sequence[int] = (320, 640, 1280, 1280),
        blocks_per_stage: int = 3,
        downscale: int = 8,
        in_channels: int = 3,
    ):
        super().__init__()
        self.channels = tuple(channels)
        self.blocks_per_stage = blocks_per_stage
        self.unshuffle = nn.PixelUnshuffle(downscale)
        blocks = []
        for i, ch in enumerate(self.channels):
            for j in range(blocks_per_stage):
                first_of_later_stage = i > 0 and j == 0
                c_in = self.channels[i - 1] if first_of_later_stage else ch
                blocks.append(AdapterBlock(c_in, ch, down=first_of_later_stage))
        # registration order = the public state-dict order: body before conv_in
        self.body = nn.ModuleList(blocks)
        self.conv_in = nn.Conv2d(in_channels * downscale**2, self.channels[0], 3, padding=1)

    def forward(self, maps: Tensor) -> list[Tensor]:  # [N, 3, H, W] -> [[N, C_k, H/(s 2^k), W/(s 2^k)]]
        """Features after each stage for maps in ``[0, 1]`` (``N`` = batch * frames, flattened)."""
        x = self.conv_in(self.unshuffle(maps.to(self.conv_in.weight.dtype)))
        features = []
        for i in range(len(self.channels)):
            for j in range(self.blocks_per_stage):
                x = self.body[i * self.blocks_per_stage + j](x)
            features.append(x)
        return features
