"""`build_models` and ouro checkpoint folders (safetensors only, corrupt ones refused)."""

import pytest
import torch

from conftest import make_tiny_models as tiny_models
from conftest import official_listing
from ouro.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ouro.models import build_models


def listing(name):
    return dict(official_listing(name))


def test_paper_models_on_meta_match_the_public_checkpoint():
    mv, rec = build_models("paper", device="meta")
    assert {k: tuple(v.shape) for k, v in mv.state_dict().items()} == listing("mv_model_unet.pth")
    assert {k: tuple(v.shape) for k, v in rec.state_dict().items()} == listing("recon_model.pth")
    # nothing allocated but diffusers' scalar time-mixer factors (built with the legacy torch.Tensor)
    assert sum(p.numel() for p in [*mv.parameters(), *rec.parameters()] if not p.is_meta) < 100
    mv2, rec2 = build_models("paper", device="meta", compat="official")
    assert mv2.compat == rec2.compat == "official"
    with pytest.raises(ValueError, match="compat"):
        build_models("tiny", compat="legacy")


def test_checkpoint_round_trip_is_exact(tmp_path):
    models = tiny_models()
    save_checkpoint(tmp_path / "ckpt", models)
    assert not list((tmp_path / "ckpt").rglob("*.bin")) and not list((tmp_path / "ckpt").rglob("*.pt*"))
    back = load_checkpoint(tmp_path / "ckpt")
    assert back.config == models.config and back.compat is None
    for a, b in [(models.generator, back.generator), (models.reconstructor, back.reconstructor), (models.conditioner, back.conditioner)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    # saving again over it replaces it atomically (no temp folders left)
    save_checkpoint(tmp_path / "ckpt", back)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_corrupt_or_incomplete_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not an ouro checkpoint"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path / "ckpt", tiny_models())
    weights = next((tmp_path / "ckpt" / "reconstructor").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated download
    with pytest.raises(CheckpointError, match="cannot load weights"):
        load_checkpoint(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "ouro.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable checkpoint metadata"):
        load_checkpoint(tmp_path / "ckpt")
