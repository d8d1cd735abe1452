"""Shared test setup: one torch thread (fastest for tiny models on this 2-core machine), no hub access."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

import pytest  # noqa: E402


def make_tiny_models(seed: int = 0):
    """Random `tiny` F, G and SVD parts (the test stand-in for a trained checkpoint)."""
    from ouro.config import get_preset
    from ouro.io.checkpoint import OuroModels
    from ouro.models import build_models
    from ouro.models.svd_parts import SVDConditioner

    torch.manual_seed(seed)
    config = get_preset("tiny")
    mv, rec = build_models(config)
    return OuroModels(mv, rec, SVDConditioner.tiny(config.generator.cross_attention_dim, seed=seed), config)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A `tiny` checkpoint folder with random weights, in our format."""
    from ouro.io.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", make_tiny_models())


def official_listing(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, shape)`` rows of a public file's listing (``mv_model_unet.pth`` or ``recon_model.pth``), shipped in ouro."""
    from ouro.io.official import official_listing as listing

    return list(listing(name).items())
