"""Model and data presets as dataclasses that round-trip through JSON.

``tiny`` is what the tests run on CPU in seconds; ``small`` a laptop-sized model; ``paper`` the
sizes of the paper and of the public Ouroboros3D checkpoint (SVD img2vid UNet + LGM ``big``,
docs/OFFICIAL.md sections 4 and 9). All presets build the same code.

    >>> cfg = get_preset("tiny")
    >>> OuroConfig.from_json(cfg.to_json()) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ouro.conventions import OFFICIAL_FOV_DEG, OFFICIAL_RADIUS

__all__ = [
    "CameraConfig",
    "GeneratorConfig",
    "ReconstructorConfig",
    "DiffusionConfig",
    "OuroConfig",
    "PRESETS",
    "get_preset",
]

T = TypeVar("T")


@dataclass(frozen=True)
class CameraConfig:
    """The 8 views the models see."""

    num_views: int = 8  #: views generated per object (the first is the input view)
    fov_deg: float = OFFICIAL_FOV_DEG  #: horizontal field of view, degrees
    radius: float = OFFICIAL_RADIUS  #: camera distance from the object centre, object units
    elevation_range_deg: tuple[float, float] = (-5.0, 30.0)  #: orbit elevations drawn in training data


@dataclass(frozen=True)
class GeneratorConfig:
    """The multi-view generator F: SVD UNet + Plücker MLPs + feedback adapters."""

    image_size: int = 512  #: generated view size, pixels
    latent_channels: int = 4  #: VAE latent channels
    vae_downsample: int = 8  #: image / latent size ratio (also the adapters' PixelUnshuffle factor)
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    num_attention_heads: tuple[int, ...] = (5, 10, 20, 20)  #: the hub config's heads (OFFICIAL.md 4.2)
    cross_attention_dim: int = 1024  #: CLIP image-embedding width
    addition_time_embed_dim: int = 256
    num_frames: int = 8
    plucker_frequencies: int = 6  #: harmonic embedding 2^0..2^(n-1) of the 6-d Plücker vector
    adapter_blocks: int = 3  #: residual blocks per adapter stage
    feedback: tuple[str, ...] = ("rgb", "ccm")  #: feedback maps, in adapter order
    #: ``vae``: SVD's VAE (or a tiny random one without --init-svd); ``pixel``: the parameter-free
    #: PixelShuffleVAE, latents = pixels rearranged (``latent_channels = 3 * vae_downsample^2``)
    codec: str = "vae"


@dataclass(frozen=True)
class ReconstructorConfig:
    """The Gaussian reconstructor G: LGM's asymmetric U-Net with a noise-level embedding."""

    input_size: int = 256  #: views are resized to this before the U-Net
    input_views: tuple[int, ...] = (0, 2, 4, 6)  #: which of the generated views G reads
    down_channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 1024)
    down_attention: tuple[bool, ...] = (False, False, False, True, True, True)
    mid_attention: bool = True
    up_channels: tuple[int, ...] = (1024, 1024, 512, 256, 128)
    up_attention: tuple[bool, ...] = (True, True, True, False, False)
    splat_size: int = 128  #: Gaussians per view = splat_size^2
    output_size: int = 512  #: render size during training
    time_embed_dim: int = 128  #: sinusoidal width of c_noise; MLP out is 4x this
    layers_per_block: int = 2  #: ResnetBlocks per down block (up blocks get one more)
    attention_heads: int = 16  #: heads of every multi-view attention layer
    norm_groups: int = 32  #: GroupNorm groups; must divide every U-Net width
    #: "direct" (LGM): the U-Net's xyz channels are the positions (clamped to the unit box);
    #: "ray" (pixel-aligned, as Splatter Image): a Gaussian lies on its pixel's ray at depth
    #: ``|o| + tanh(channel 0)`` (channels 1-2 unused), a strong prior for small CPU-trained models
    positions: str = "direct"


@dataclass(frozen=True)
class DiffusionConfig:
    """EDM v-prediction as in SVD (paper supplementary 1.1)."""

    p_mean: float = 1.0  #: training log sigma ~ N(p_mean, p_std^2)
    p_std: float = 1.6
    sigma_min: float = 0.002
    sigma_max: float = 700.0
    #: data scale of the EDM preconditioning: 1 as SVD (its scaled latents); EDM uses 0.5 for
    #: pixels in [-1, 1] (ouro.diffusion.edm explains what it changes)
    sigma_data: float = 1.0
    num_steps: int = 25
    guidance_min: float = 1.0  #: classifier-free guidance of the first frame
    guidance_max: float = 3.0  #: ... rising linearly to the last frame
    #: sampling only: hold view 0 (the input's view) to the input image at every step, i.e. set its
    #: x0 estimate to the input's latent and its sample to that latent plus fixed noise at the
    #: step's sigma (the replacement method of Ho et al. 2022, "Video Diffusion Models"). F and G
    #: then read the exact input as view 0. Not in the paper; off for the paper preset.
    anchor_input: bool = False


@dataclass(frozen=True)
class OuroConfig:
    """A whole model preset. Round-trips through :meth:`to_json` / :meth:`from_json`."""

    name: str = "paper"
    camera: CameraConfig = field(default_factory=CameraConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    reconstructor: ReconstructorConfig = field(default_factory=ReconstructorConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path | None = None) -> str:
        """The config as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OuroConfig":
        return _from_dict(cls, data)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "OuroConfig":
        """Parse JSON text, or read it from a file path."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))


def _from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a (nested) dataclass from plain JSON values, turning lists back into tuples."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}")
    return cls(**{k: _coerce(hints[k], v) for k, v in data.items()})


def _coerce(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        return tuple(_coerce(a, v) for a, v in zip(args, value))
    return value


PRESETS: dict[str, OuroConfig] = {
    "paper": OuroConfig(name="paper"),
    "small": OuroConfig(
        name="small",
        generator=GeneratorConfig(
            image_size=256,
            block_out_channels=(64, 128, 256, 256),
            layers_per_block=1,
            num_attention_heads=(2, 4, 8, 8),
            cross_attention_dim=256,
            addition_time_embed_dim=64,
        ),
        reconstructor=ReconstructorConfig(
            input_size=128,
            down_channels=(32, 64, 128, 256, 256),
            down_attention=(False, False, False, True, True),
            up_channels=(256, 256, 128, 64),  # up_channels[i] mirrors down_channels[-1 - i]
            up_attention=(True, True, False, False),
            splat_size=64,
            output_size=256,
            time_embed_dim=64,
            attention_heads=8,
        ),
    ),
    # The embedded demo model (ouro/assets/demo/): trainable on a 2-core CPU in about 80 minutes,
    # in pixel space (PixelShuffleVAE: 4x4 patches -> 48 latent channels on a 16^2 grid) at 64 px.
    # G reads the views at 32 px and places 4 x 16^2 Gaussians (LGM's 256 -> 128 for 512 px views).
    "demo": OuroConfig(
        name="demo",
        generator=GeneratorConfig(
            image_size=64,
            latent_channels=48,
            vae_downsample=4,
            # the first width must exceed the 2 x 48 input channels (noisy | condition latent): at 32 the
            # 4x4 pixel patches could not pass conv_in, F could neither denoise nor copy the condition
            block_out_channels=(96, 64, 64),
            layers_per_block=1,
            num_attention_heads=(2, 2, 2),
            cross_attention_dim=64,
            addition_time_embed_dim=16,
            adapter_blocks=2,
            codec="pixel",
        ),
        reconstructor=ReconstructorConfig(
            input_size=32,
            down_channels=(32, 64, 96, 96),
            down_attention=(False, False, True, True),
            up_channels=(96, 96, 64),  # up_channels[i] mirrors down_channels[-1 - i]
            up_attention=(True, False, False),
            splat_size=16,
            output_size=64,
            time_embed_dim=32,
            attention_heads=4,
            norm_groups=16,
            positions="ray",
        ),
        # Training noise levels: SVD's N(1.0, 1.6^2), matched to sampling, which runs from 80 to 1.5
        # (below): 48 % of the samples above sigma 3, 36 % below 1.5. The runs before trained under
        # N(-0.4, 1.6^2), chosen while sampling still went down to 0.002 (EDM's N(-1.2, 1.2^2) had
        # left sigma > 3, where 10 of the 20 steps set the views' layout, to 3 % of the samples and F
        # barely used its condition image there); with sampling stopped at 1.5, 69 % of its samples
        # trained levels sampling never visits. Moving to N(1.0, 1.6^2) (tenth run, 1,200 steps) took
        # F's one-step error at sigma 80 from 0.068 to 0.062 (the run before: 0.0682 -> 0.0681 in
        # 1,600 steps), lower at every level, and raised all six held-out means (benchmarks/README.md).
        # sigma_data 0.5 (EDM's pixel value): at SVD's 1, c_skip passes up to half the noise into D
        # at sigma ~ 1, which this small F could not cancel: every demo-v4 sample kept visible noise.
        # sigma_min 1.5 (sampling only): the last Euler step goes from 1.5 straight to F's x0 estimate.
        # Below ~3 this F adds colour speckle it cannot remove (x0 views' SSIM 0.77 at sigma 7, 0.51
        # at the end of a schedule down to 0.002). Stopping at 1.5 on 35 held-out objects: views' SSIM
        # 0.59 -> 0.71, PSNR +0.3 dB, LPIPS +0.009 (worse), splats unchanged (benchmarks/README.md).
        # Guidance 2 on every view and view 0 anchored to the input (sampling only): on the first 8
        # held-out objects, against SVD's 1-3 unanchored, better on all six view and splat scores
        # (eighth run's weights; benchmarks/README.md, sampling sweep).
        diffusion=DiffusionConfig(p_mean=1.0, p_std=1.6, sigma_min=1.5, sigma_max=80.0, sigma_data=0.5, num_steps=20,
                                  guidance_min=2.0, guidance_max=2.0, anchor_input=True),
    ),
    "tiny": OuroConfig(
        name="tiny",
        generator=GeneratorConfig(
            image_size=64,
            block_out_channels=(32, 32, 64, 64),
            layers_per_block=1,
            num_attention_heads=(2, 2, 4, 4),
            cross_attention_dim=32,
            addition_time_embed_dim=8,
        ),
        reconstructor=ReconstructorConfig(
            input_size=32,
            down_channels=(32, 32, 64),
            down_attention=(False, False, True),
            up_channels=(64, 32),  # up_channels[i] mirrors down_channels[-1 - i]
            up_attention=(True, False),
            splat_size=16,
            output_size=64,
            time_embed_dim=32,
            attention_heads=4,
            norm_groups=8,
        ),
        diffusion=DiffusionConfig(num_steps=4),
    ),
}


def get_preset(name: str) -> OuroConfig:
    """The named preset (``tiny``, ``demo``, ``small`` or ``paper``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}") from None
