"""The models a training run starts from: fresh, the public weights, SVD's and LGM's releases, or a checkpoint.

:func:`build_models_for` gives ``(F, G, conditioner, model_config, notes)`` for a
:class:`~ouro.pipelines.train_config.TrainConfig`; :func:`models_with` rebuilds F and G around a
state dict without a second random initialisation (resuming, exporting EMA weights).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import Tensor, nn

from ouro.config import OuroConfig
from ouro.io.checkpoint import CheckpointError, is_checkpoint, load_checkpoint

from .train_config import TrainConfig

__all__ = ["NEW_LGM_KEYS", "build_models_for", "load_lgm_weights", "models_with"]

#: The keys of LGM's release that Ouroboros3D added (noise-level embedding): absent from an LGM file.
NEW_LGM_KEYS = ("unet.time_embed.", ".emb_layers.")


# ---------------------------------------------------------------------------------------- models
def _remap_adapters(state: dict[str, Tensor], have: tuple[str, ...], want: tuple[str, ...]) -> dict[str, Tensor]:
    """Keep the feedback adapters of ``want`` (renumbered) out of a state dict with adapters ``have``."""
    out = {}
    for key, value in state.items():
        if key.startswith("cond_encoder."):
            _, idx, rest = key.split(".", 2)
            name = have[int(idx)]
            if name not in want:
                continue
            key = f"cond_encoder.{want.index(name)}.{rest}"
        out[key] = value
    return out


def load_lgm_weights(reconstructor: nn.Module, path: str | Path) -> list[str]:
    """LGM's released safetensors into G (``strict=False`` only for Ouroboros3D's new time-embedding keys)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: --init-lgm reads safetensors only (never pickle); convert the file first")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors ({exc})") from None
    state = {k: v for k, v in state.items() if not k.startswith("lpips_loss.")}
    own = reconstructor.state_dict()
    bad = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{path}: shape mismatch for {bad[:3]} (is this LGM 'big' for the paper preset?)")
    state = {k: v.to(own[k].dtype) for k, v in state.items() if k in own}
    missing, unexpected = reconstructor.load_state_dict(state, strict=False)
    not_new = [k for k in missing if not any(tag in k for tag in NEW_LGM_KEYS)]
    if not_new or len(state) == 0:
        raise CheckpointError(f"{path}: {len(not_new)} LGM tensors missing (e.g. {not_new[:3]}); not an LGM checkpoint of this size")
    return [f"{path}: {len(state)} tensors loaded; {len(missing)} new tensors (noise-level embedding) start fresh"]


def build_models_for(config: TrainConfig) -> tuple[nn.Module, nn.Module, nn.Module, OuroConfig, list[str]]:
    """``(F, G, conditioner, model_config, notes)`` for a run: fresh, or from public weights.

    * ``init_official``: an ouro checkpoint folder, or the public ``.pth`` pair (read with
      ``weights_only=True``); adapters not fed by the ablation are dropped, adapters the weights
      lack (a ``separate`` run's checkpoint fine-tuned with feedback) start fresh.
    * ``init_svd``: F's UNet, the VAE and CLIP from a diffusers SVD img2vid folder (safetensors).
    * ``init_lgm``: G from LGM's safetensors.
    * neither: random F and G; the VAE / CLIP are random tiny parts (``tiny`` / ``small`` only).
    """
    from ouro.models import build_models
    from ouro.models.svd_parts import SVDConditioner

    notes: list[str] = []
    model_cfg = config.model
    want = tuple(model_cfg.generator.feedback)
    if config.init_official:
        src = Path(config.init_official)
        if is_checkpoint(src):
            loaded = load_checkpoint(src)
        else:
            from ouro.io.official import load_official

            full = dataclasses.replace(model_cfg, generator=dataclasses.replace(model_cfg.generator, feedback=("rgb", "ccm")))
            loaded = load_official(src, preset=full)
        have = tuple(loaded.config.generator.feedback)
        # the architecture is the weights'; of the same preset, the diffusion settings (noise levels,
        # preconditioning: no weights) are the run's, so a checkpoint can be fine-tuned under new ones
        diffusion = config.model.diffusion if config.model.name == loaded.config.name else loaded.config.diffusion
        model_cfg = dataclasses.replace(
            loaded.config, generator=dataclasses.replace(loaded.config.generator, feedback=want), diffusion=diffusion
        )
        if config.model.name != loaded.config.name:
            notes.append(f"{src}: preset {loaded.config.name!r} (the weights') used instead of {config.model.name!r}")
        state = {f"generator.{k}": v for k, v in _remap_adapters(loaded.generator.state_dict(), have, want).items()}
        state |= {f"reconstructor.{k}": v for k, v in loaded.reconstructor.state_dict().items()}
        fresh = tuple(name for name in want if name not in have)
        if fresh:  # e.g. a `separate` checkpoint (no adapters) fine-tuned jointly with feedback
            generator, reconstructor = _models_with_fresh_adapters(model_cfg, state, fresh)
            notes.append(f"{src}: no feedback adapter for {', '.join(fresh)} in the weights; it starts fresh")
        else:
            generator, reconstructor = models_with(model_cfg, state)  # no second random initialisation
        conditioner = loaded.conditioner.float()
        notes.append(f"{src}: F, G, VAE and CLIP loaded (compat={loaded.compat!r})")
        return generator, reconstructor, conditioner, model_cfg, notes
    if config.init_svd:
        from diffusers import UNetSpatioTemporalConditionModel

        from ouro.io.official import _load_conditioner, _svd_unet_heads, _svd_variant

        svd = Path(config.init_svd)
        if not (svd / "unet").is_dir():
            raise CheckpointError(f"{svd}: no unet/ sub-folder; expected a diffusers-format SVD img2vid folder")
        model_cfg, head_notes = _svd_unet_heads(svd, model_cfg)
        notes += head_notes
        generator, reconstructor = build_models(model_cfg)
        variant = _svd_variant(svd / "unet", "diffusion_pytorch_model")
        try:
            unet = UNetSpatioTemporalConditionModel.from_pretrained(svd / "unet", variant=variant, use_safetensors=True)
            generator.unet.load_state_dict({k: v.float() for k, v in unet.state_dict().items()}, strict=True)
        except (OSError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{svd}/unet: cannot load into F's UNet ({first})") from None
        del unet
        conditioner = _load_conditioner(svd, None).float()
        notes.append(f"{svd}: F's UNet, VAE and CLIP loaded; adapters and Plücker MLPs start fresh")
    else:
        if model_cfg.name == "paper":
            raise ValueError("the paper preset needs SVD's VAE and CLIP: pass --init-svd DIR or --init-official DIR")
        generator, reconstructor = build_models(model_cfg)
        gen_cfg = model_cfg.generator
        if gen_cfg.codec == "pixel":
            conditioner = SVDConditioner.pixel(gen_cfg.vae_downsample, gen_cfg.cross_attention_dim, seed=config.seed)
            notes.append("random F and G; pixel-space codec (no VAE) and a random tiny CLIP (frozen)")
        else:
            conditioner = SVDConditioner.tiny(gen_cfg.cross_attention_dim, gen_cfg.latent_channels, seed=config.seed)
            notes.append("random F and G; random tiny VAE / CLIP (frozen; for tests and smoke runs)")
    if config.init_lgm:
        notes += load_lgm_weights(reconstructor, config.init_lgm)
    return generator, reconstructor, conditioner, model_cfg, notes


def _models_with_fresh_adapters(model_cfg: OuroConfig, state: dict[str, Tensor],
                                fresh: tuple[str, ...]) -> tuple[nn.Module, nn.Module]:
    """F and G initialised at random (the run's seed), then holding ``state``; only the adapters of
    the ``fresh`` maps may be absent from it (they keep their initialisation)."""
    from ouro.models import build_models

    generator, reconstructor = build_models(model_cfg)
    feedback = tuple(model_cfg.generator.feedback)
    allowed = {"generator": tuple(f"cond_encoder.{feedback.index(name)}." for name in fresh), "reconstructor": ()}
    for name, module in (("generator", generator), ("reconstructor", reconstructor)):
        part = {k[len(name) + 1:]: v.float() for k, v in state.items() if k.startswith(name + ".")}
        missing, unexpected = module.load_state_dict(part, strict=False)
        wrong = [k for k in missing if not k.startswith(allowed[name])] + list(unexpected)
        if wrong:
            raise CheckpointError(f"{name}: {len(wrong)} tensors missing or unexpected (e.g. {wrong[:3]}); "
                                  "the weights do not match this preset")
    return generator, reconstructor


def models_with(model_cfg: OuroConfig, state: dict[str, Tensor]) -> tuple[nn.Module, nn.Module]:
    """Fresh F and G (built on ``meta``, so nothing is initialised) holding the CPU tensors of ``state`` (fp32)."""
    from ouro.models import build_models

    generator, reconstructor = build_models(model_cfg, device="meta")
    for name, module in (("generator", generator), ("reconstructor", reconstructor)):
        part = {k[len(name) + 1:]: v.float() for k, v in state.items() if k.startswith(name + ".")}
        module.load_state_dict(part, strict=True, assign=True)
        left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if left:  # e.g. a non-persistent buffer added to a model later: build it for real instead
            raise RuntimeError(f"{name}: {left[:3]} not in its state dict; cannot rebuild it from weights alone")
    return generator, reconstructor
