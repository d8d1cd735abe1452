"""Loading the public Ouroboros3D weights (`ouro.io.official`) from a fake official layout at `tiny` size.

The layout mirrors the release: `mv_model_unet.pth` / `recon_model.pth` written with `torch.save`
(here of tiny random models), next to a diffusers-format SVD img2vid folder.
"""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

import ouro

from ouro.config import get_preset
from ouro.io.checkpoint import CheckpointError, load_checkpoint
from ouro.io.official import (
    MV_MODEL_FILE,
    RECON_MODEL_FILE,
    OfficialPaths,
    convert_official,
    find_official_weights,
    load_official,
    load_official_state_dicts,
    locate_official,
    official_listing,
    read_official_state_dict,
)
from ouro.models import build_models
from ouro.models.svd_parts import SVDConditioner

TINY = get_preset("tiny")


def _touch(path):  # what the malicious pickle below would run if it were ever unpickled unsafely
    Path(path).touch()


class Payload:
    """A pickled object that would create a file on unpickling."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


class Plain:  # a custom class instance without any side effect
    pass


@pytest.fixture(scope="module")
def originals():
    torch.manual_seed(0)
    mv, rec = build_models("tiny")
    return mv.state_dict(), rec.state_dict(), mv


@pytest.fixture(scope="module")
def svd_folder(tmp_path_factory, originals):
    folder = tmp_path_factory.mktemp("svd") / "stable-video-diffusion-img2vid"
    cond = SVDConditioner.tiny(TINY.generator.cross_attention_dim)
    cond.save_pretrained(folder)
    originals[2].unet.save_pretrained(folder / "unet", safe_serialization=True)
    return folder, cond.state_dict()


def write_official(folder, mv_state, recon_state):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(mv_state, folder / MV_MODEL_FILE)
    torch.save(recon_state, folder / RECON_MODEL_FILE)
    return folder


def assert_same(model, state):
    got = model.state_dict()
    assert got.keys() == state.keys()
    for k in state:
        assert got[k].dtype == state[k].dtype and torch.equal(got[k], state[k]), k


def test_strict_load_is_bit_identical(tmp_path, originals, svd_folder):
    mv_sd, rec_sd, _ = originals
    root = write_official(tmp_path / "ckpt", mv_sd, rec_sd)
    paths = OfficialPaths(root / MV_MODEL_FILE, root / RECON_MODEL_FILE, svd_folder[0])
    models = load_official(paths, preset="tiny")
    assert models.compat == models.generator.compat == models.reconstructor.compat == "official"
    assert models.config == TINY
    assert_same(models.generator, mv_sd)
    assert_same(models.reconstructor, rec_sd)
    assert_same(models.conditioner, svd_folder[1])
    assert not any(t.is_meta for t in [*models.generator.parameters(), *models.reconstructor.parameters()])
    assert not models.generator.training and not models.reconstructor.training


def test_wrapped_and_fp16_files_load(tmp_path, originals, svd_folder):
    mv_sd, rec_sd, _ = originals
    # DDP-style prefix on F; a Lightning-style {"state_dict": {"recon_model.*": ...}, "epoch": 3} for G
    root = write_official(
        tmp_path / "wrapped",
        {f"module.{k}": v for k, v in mv_sd.items()},
        {"state_dict": {f"recon_model.{k}": v for k, v in rec_sd.items()}, "epoch": 3},
    )
    state, notes = read_official_state_dict(root / MV_MODEL_FILE)
    assert state.keys() == mv_sd.keys() and any("'module.'" in n for n in notes)
    state, notes = read_official_state_dict(root / RECON_MODEL_FILE)
    assert state.keys() == rec_sd.keys() and len(notes) == 2 and "state_dict" in notes[0] and "recon_model." in notes[1]
    models = load_official(OfficialPaths(root / MV_MODEL_FILE, root / RECON_MODEL_FILE, svd_folder[0]), preset="tiny")
    assert_same(models.generator, mv_sd)
    assert_same(models.reconstructor, rec_sd)

    half = write_official(tmp_path / "fp16", {k: v.half() for k, v in mv_sd.items()}, {k: v.half() for k, v in rec_sd.items()})
    paths = OfficialPaths(half / MV_MODEL_FILE, half / RECON_MODEL_FILE, svd_folder[0])
    kept = load_official(paths, preset="tiny")  # dtype None keeps the files' fp16
    assert_same(kept.generator, {k: v.half() for k, v in mv_sd.items()})
    cast = load_official(paths, preset="tiny", dtype=torch.float32)
    assert_same(cast.reconstructor, {k: v.half().float() for k, v in rec_sd.items()})
    assert cast.conditioner.vae.dtype == torch.float32


@pytest.mark.parametrize("damage", ["missing", "shape", "extra"])
def test_mismatching_files_are_refused_naming_file_and_key(tmp_path, originals, svd_folder, damage):
    mv_sd, rec_sd, _ = originals
    bad = dict(mv_sd)
    key = "cond_encoder.1.body.4.block1.weight"
    if damage == "missing":
        del bad[key]
    elif damage == "shape":
        bad[key] = torch.zeros(3, 3)
    else:
        key = "harm_embed._frequencies"
        bad[key] = torch.ones(6)
    root = write_official(tmp_path / damage, bad, rec_sd)
    paths = OfficialPaths(root / MV_MODEL_FILE, root / RECON_MODEL_FILE, svd_folder[0])
    with pytest.raises(CheckpointError) as info:
        load_official(paths, preset="tiny")
    message = str(info.value)
    assert str(root / MV_MODEL_FILE) in message and key in message
    assert {"missing": "1 missing key", "shape": "[3, 3] in the file", "extra": "1 unexpected key"}[damage] in message


@pytest.mark.parametrize("payload", ["reduce", "instance", "not-a-mapping"])
def test_pickled_objects_are_refused_by_weights_only(tmp_path, originals, payload):
    marker = tmp_path / "executed"
    path = tmp_path / MV_MODEL_FILE
    value = {"reduce": Payload(marker), "instance": Plain(), "not-a-mapping": None}[payload]
    obj = [torch.zeros(1)] if payload == "not-a-mapping" else {"unet.conv_in.weight": value}
    torch.save(obj, path)
    with pytest.raises(CheckpointError) as info:
        read_official_state_dict(path)
    assert str(path) in str(info.value)
    if payload != "not-a-mapping":
        assert "weights_only" in str(info.value)
        assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()  # nothing in the file ran


def _isolate(monkeypatch, tmp_path):
    for var in ("OURO_WEIGHTS", "OURO_SVD", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


def test_find_via_ouro_weights(tmp_path, monkeypatch, originals, svd_folder):
    _isolate(monkeypatch, tmp_path)
    assert find_official_weights() is None
    with pytest.raises(FileNotFoundError, match="OURO_WEIGHTS"):
        locate_official()
    # files in the repo's sub-folder (OFFICIAL.md 1.1), SVD beside them
    root = tmp_path / "weights"
    write_official(root / "Ouroboros3D-SVD-LGM", originals[0], originals[1])
    monkeypatch.setenv("OURO_WEIGHTS", str(root))
    with pytest.raises(FileNotFoundError, match="SVD img2vid"):
        locate_official()
    os.symlink(svd_folder[0], root / "stable-video-diffusion-img2vid")
    found = find_official_weights()
    sub = root / "Ouroboros3D-SVD-LGM"
    assert found == OfficialPaths(sub / MV_MODEL_FILE, sub / RECON_MODEL_FILE, root / "stable-video-diffusion-img2vid")
    # an explicit root wins over the environment; an explicit SVD folder too
    other = write_official(tmp_path / "other", originals[0], originals[1])
    assert find_official_weights(other, svd=svd_folder[0]).mv_model == other / MV_MODEL_FILE
    assert find_official_weights(tmp_path / "nowhere") is None


def test_find_via_hf_cache_layout(tmp_path, monkeypatch, originals, svd_folder):
    _isolate(monkeypatch, tmp_path)
    hub = tmp_path / "hf_home" / "hub"
    repo = hub / "models--huanngzh--Ouroboros3D-SVD-LGM"
    blobs = write_official(repo / "blobs", originals[0], originals[1])
    snap = repo / "snapshots" / "0123abcd" / "Ouroboros3D-SVD-LGM"
    snap.mkdir(parents=True)
    for name in (MV_MODEL_FILE, RECON_MODEL_FILE):  # the cache stores symlinks into blobs/
        os.symlink(blobs / name, snap / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "old0000").mkdir()  # an incomplete older snapshot is skipped
    svd_snap = hub / "models--stabilityai--stable-video-diffusion-img2vid" / "snapshots" / "fedcba98"
    svd_snap.parent.mkdir(parents=True)
    os.symlink(svd_folder[0], svd_snap)
    found = find_official_weights()
    assert found == OfficialPaths(snap / MV_MODEL_FILE, snap / RECON_MODEL_FILE, svd_snap)
    models = load_official(found, preset="tiny")
    assert_same(models.generator, originals[0])


def test_convert_then_load_checkpoint_round_trips(tmp_path, originals, svd_folder):
    root = write_official(tmp_path / "ckpt", originals[0], originals[1])
    paths = OfficialPaths(root / MV_MODEL_FILE, root / RECON_MODEL_FILE, svd_folder[0])
    out = convert_official(paths, tmp_path / "converted", preset="tiny")
    assert not [p for p in out.rglob("*") if p.suffix in (".pth", ".bin", ".pt", ".pkl")]
    assert json.loads((out / "official_source.json").read_text())["files"]["mv_model"] == str(paths.mv_model.resolve())
    back = load_checkpoint(out)
    assert back.compat == "official" and back.config == TINY
    assert_same(back.generator, originals[0])
    assert_same(back.reconstructor, originals[1])
    assert_same(back.conditioner, svd_folder[1])
    with pytest.raises(FileExistsError):
        convert_official(paths, out, preset="tiny")


def test_svd_unet_config_decides_heads_and_must_fit(tmp_path, originals, svd_folder):
    root = write_official(tmp_path / "ckpt", originals[0], originals[1])
    svd = tmp_path / "svd"
    svd.mkdir()
    for sub in ("vae", "image_encoder", "feature_extractor"):
        os.symlink(svd_folder[0] / sub, svd / sub)
    (svd / "unet").mkdir()
    config = json.loads((svd_folder[0] / "unet" / "config.json").read_text())
    config["num_attention_heads"] = [4, 4, 8, 8]  # same shapes, other head split: the folder's wins
    (svd / "unet" / "config.json").write_text(json.dumps(config))
    paths = OfficialPaths(root / MV_MODEL_FILE, root / RECON_MODEL_FILE, svd)
    models = load_official(paths, preset="tiny")
    assert models.config.generator.num_attention_heads == (4, 4, 8, 8)
    assert tuple(models.generator.config.num_attention_heads) == (4, 4, 8, 8)
    assert_same(models.generator, originals[0])
    config["cross_attention_dim"] = 1024
    (svd / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="cross_attention_dim"):
        load_official(paths, preset="tiny")


def listing(name):
    return dict(official_listing(name))


def test_paper_listing_loads_through_the_same_path_on_meta():
    meta = lambda rows: {k: torch.empty(shape, device="meta", dtype=torch.float16) for k, shape in rows.items()}  # noqa: E731
    mv_state, recon_state = meta(listing("mv_model_unet.pth")), meta(listing("recon_model.pth"))
    mv, rec = load_official_state_dicts(mv_state, recon_state, "paper")
    assert mv.compat == rec.compat == "official"
    assert all(p.is_meta and p.dtype == torch.float16 for p in [*mv.parameters(), *rec.parameters()])
    assert sum(p.numel() for p in mv.parameters()) == 1_765_033_322  # OFFICIAL.md section 2
    assert sum(p.numel() for p in rec.parameters()) == 424_039_200
    mv_state["down_plucker.0.embed.0.weight"] = torch.empty(320, 77, device="meta")
    with pytest.raises(CheckpointError, match=r"down_plucker\.0\.embed\.0\.weight is \[320, 77\] in the file"):
        load_official_state_dicts(mv_state, recon_state, "paper")


def test_a_damaged_release_file_is_named_against_the_shipped_listing():
    """A truncated download (tensors missing) or another fine-tune (extra keys, other shapes) is refused in one
    line that names the file, the first offending keys and the listing shipped in the package (nothing outside the repository)."""
    from ouro.io.official import LISTING_DIR, check_official_file

    assert LISTING_DIR.is_relative_to(Path(ouro.__file__).parent)
    rows = list(official_listing(MV_MODEL_FILE).items())
    assert len(rows) == 1572 and rows[0] == ("unet.conv_in.weight", (320, 8, 3, 3))
    assert len(official_listing(RECON_MODEL_FILE)) == 438
    full = {k: torch.empty(shape, device="meta") for k, shape in rows}
    check_official_file(full, MV_MODEL_FILE)  # the release itself passes
    truncated = dict(list(full.items())[:1000])
    with pytest.raises(CheckpointError) as err:
        load_official_state_dicts(truncated, {}, "paper", sources=("dl/mv_model_unet.pth", "dl/recon_model.pth"))
    message = str(err.value)
    assert "\n" not in message and message.startswith("dl/mv_model_unet.pth: ")
    assert "572 missing key(s) (first: " + rows[1000][0] in message and "mv_model_unet_keys.txt" in message
    assert "download complete" in message
    other = {**full, "extra.lora_A.weight": torch.empty(4, 4, device="meta"), "unet.conv_in.weight": torch.empty(320, 12, 3, 3, device="meta")}
    with pytest.raises(CheckpointError, match=r"1 unexpected key\(s\) \(first: extra\.lora_A\.weight\); 1 shape mismatch\(es\) "
                                              r"\(first: unet\.conv_in\.weight is \[320, 12, 3, 3\] in the file, \[320, 8, 3, 3\]"):
        check_official_file(other, MV_MODEL_FILE, "x.pth")


def test_svd_folder_with_only_variant_files_loads_and_pickle_is_refused(tmp_path, originals, svd_folder):
    # what `from_pretrained(..., variant="fp16")` leaves in a cache: only *.fp16.safetensors
    root = write_official(tmp_path / "ckpt", originals[0], originals[1])
    cond = SVDConditioner.tiny(TINY.generator.cross_attention_dim)
    svd = tmp_path / "svd_fp16"
    cond.vae.save_pretrained(svd / "vae", variant="fp16")
    cond.image_encoder.save_pretrained(svd / "image_encoder", variant="fp16")
    cond.feature_extractor.save_pretrained(svd / "feature_extractor")
    models = load_official(OfficialPaths(root / MV_MODEL_FILE, root / RECON_MODEL_FILE, svd), preset="tiny")
    assert_same(models.conditioner, cond.state_dict())
    for f in (svd / "vae").glob("*.safetensors"):
        f.rename(f.with_name("diffusion_pytorch_model.bin"))  # pickle-format weights are never read
    with pytest.raises(CheckpointError, match="never pickle"):
        load_official(OfficialPaths(root / MV_MODEL_FILE, root / RECON_MODEL_FILE, svd), preset="tiny")


def test_model_auto_takes_public_weights_when_found_else_the_demo(tmp_path, monkeypatch, originals, svd_folder):
    """`ouro sample --model auto`: the public weights on disk win; without them, the embedded demo."""
    import functools

    import ouro.io.official as official
    from ouro.pipelines.sample import DEMO_DESCRIPTION, ModelNotFound, load_pipeline

    _isolate(monkeypatch, tmp_path)
    pipe, description = load_pipeline("auto")
    assert description == DEMO_DESCRIPTION and pipe.config.name == "demo"
    with pytest.raises(ModelNotFound, match="OURO_WEIGHTS"):
        load_pipeline("official")
    root = tmp_path / "weights"
    write_official(root, originals[0], originals[1])
    os.symlink(svd_folder[0], root / "stable-video-diffusion-img2vid")
    monkeypatch.setenv("OURO_WEIGHTS", str(root))
    # the fake public files are tiny-sized; the loader is told so (it reads the paper's sizes otherwise)
    monkeypatch.setattr(official, "load_official", functools.partial(official.load_official, preset="tiny"))
    pipe, description = load_pipeline("auto")
    assert description == "the public Ouroboros3D weights" and pipe.config.name == "tiny"
    assert_same(pipe.models.generator, originals[0])
