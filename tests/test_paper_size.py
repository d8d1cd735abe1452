"""Paper size end to end (issue #29): the synthetic public checkpoint, the memory accounting, the GPU check.

``benchmarks/paper_size.py`` writes random weights in the public release's layout and runs
``ouro sample --model official`` on them; here the same writer and the same loader run at ``tiny``
width (the paper-size run and its figures: benchmarks/README.md). ``benchmarks/memory.py``
computes accelerator memory from tensor sizes; its tracker is checked against known allocations and
against real tensors. ``benchmarks/gpu_check.sh`` runs whole at ``tiny`` on the CPU.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ouro.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _bench(name: str):
    """``benchmarks/<name>.py`` as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"ouro_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def paper_size():
    return _bench("paper_size")


@pytest.fixture(scope="module")
def memory():
    return _bench("memory")


@pytest.fixture(scope="module")
def synthetic(paper_size, tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic") / "weights"
    paper_size.write_synthetic_official(folder, preset="tiny", log=lambda line: None)
    return folder


def test_synthetic_checkpoint_has_the_public_layout(paper_size, synthetic):
    from ouro.config import get_preset
    from ouro.models import build_models

    svd = synthetic / "stable-video-diffusion-img2vid"
    files = sorted(str(p.relative_to(synthetic)) for p in synthetic.rglob("*") if p.is_file())
    assert files == sorted([
        "mv_model_unet.pth", "recon_model.pth", "synthetic.json", "stable-video-diffusion-img2vid/model_index.json",
        "stable-video-diffusion-img2vid/vae/config.json", "stable-video-diffusion-img2vid/vae/diffusion_pytorch_model.safetensors",
        "stable-video-diffusion-img2vid/image_encoder/config.json", "stable-video-diffusion-img2vid/image_encoder/model.safetensors",
        "stable-video-diffusion-img2vid/feature_extractor/preprocessor_config.json",
        "stable-video-diffusion-img2vid/scheduler/scheduler_config.json", "stable-video-diffusion-img2vid/unet/config.json",
    ])
    # what torch.save(model.state_dict()) writes: a zip whose pickle holds a flat {name: tensor} mapping, nothing else
    assert zipfile.is_zipfile(synthetic / "mv_model_unet.pth")
    state = torch.load(synthetic / "mv_model_unet.pth", weights_only=True)
    mv, rec = build_models("tiny")
    assert list(state) == list(mv.state_dict()) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert list(torch.load(synthetic / "recon_model.pth", weights_only=True)) == list(rec.state_dict())
    # the published SVD configs, with tiny widths where the preset needs them
    paper = paper_size.svd_configs("paper")
    vae = json.loads((svd / "vae" / "config.json").read_text())
    assert vae == {**paper["vae/config.json"], "block_out_channels": [32] * 4, "layers_per_block": 1}
    assert json.loads((svd / "scheduler" / "scheduler_config.json").read_text()) == paper["scheduler/scheduler_config.json"]
    assert json.loads((svd / "model_index.json").read_text())["_class_name"] == "StableVideoDiffusionPipeline"
    unet = json.loads((svd / "unet" / "config.json").read_text())
    assert unet["block_out_channels"] == list(get_preset("tiny").generator.block_out_channels)
    assert oct((svd / "vae" / "diffusion_pytorch_model.safetensors").stat().st_mode & 0o777) != oct(0o600)  # the umask's, not 0600


def test_paper_configs_build_svds_architecture(paper_size):
    """The written paper-size SVD folder's configs build SVD's VAE and OpenCLIP ViT-H/14 (shapes on meta)."""
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    configs = paper_size.svd_configs("paper")
    assert configs["unet/config.json"]["num_attention_heads"] == [5, 10, 20, 20]  # OFFICIAL.md 4.2
    with torch.device("meta"):
        vae = AutoencoderKLTemporalDecoder.from_config(configs["vae/config.json"])
        fields = {k: v for k, v in configs["image_encoder/config.json"].items()
                  if k not in ("architectures", "model_type", "torch_dtype", "transformers_version")}
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**fields))
    assert vae.config.scaling_factor == 0.18215 and vae.config.latent_channels == 4
    assert clip.visual_projection.weight.shape == (1024, 1280)  # projection_dim = the UNet's cross_attention_dim
    assert len(clip.vision_model.encoder.layers) == 32 and clip.vision_model.embeddings.patch_embedding.weight.shape == (1280, 3, 14, 14)


def test_sample_model_official_runs_through_the_normal_loader(synthetic, tmp_path, monkeypatch):
    """`OURO_WEIGHTS=<synthetic> ouro sample examples/chair.png --model official --steps 2`, at tiny width."""
    import functools

    import ouro.io.official as official

    monkeypatch.setenv("OURO_WEIGHTS", str(synthetic))
    monkeypatch.delenv("OURO_SVD", raising=False)
    # the public files are paper-sized, so the loader reads the paper preset; these are tiny
    monkeypatch.setattr(official, "load_official", functools.partial(official.load_official, preset="tiny"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["sample", str(ROOT / "examples" / "chair.png"), "--model", "official", "--steps", "2",
                                 "-o", str(out), "--video-frames", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "sampling with the public Ouroboros3D weights" in result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["compat"] == "official" and meta["preset"] == "tiny" and meta["settings"]["num_steps"] == 2
    assert set(meta["timings"]) >= {"condition", "unet", "decode", "reconstruct", "render", "video"}
    assert len(list((out / "views").iterdir())) == 8 and (out / "gaussians.ply").stat().st_size > 0


def test_measured_sample_reports_stages_and_peak_memory(paper_size, synthetic, tmp_path):
    """The measurement the paper-size run used (`paper_size.py sample`): a fresh `ouro` process, its
    load time, stage times and peak RSS; at tiny width."""
    run = paper_size.measure_sample(synthetic, tmp_path / "out", steps=1, extra=["--video-frames", "2", "--device", "cpu"])
    assert run.returncode == 0, run.stderr_tail
    assert run.command[:3] == [f"OURO_WEIGHTS={synthetic}", "ouro", "sample"]
    assert 0 < run.load_s < run.wall_s and run.peak_rss_gb >= run.rss_after_load_gb > 0.2 and run.cpu_s > 1
    assert set(run.timings) >= {"condition", "unet", "decode", "reconstruct", "video"} and run.cuda == {}
    assert run.row("tiny").startswith("| tiny | ")


def test_live_bytes_counts_what_is_alive(memory):
    def blocks(n: int) -> int:  # the CUDA caching allocator's 512-byte granularity
        return -(-n // 512) * 512

    tracker = memory.LiveBytes()
    with tracker:
        a = torch.empty(1000, 1000)  # 4,000,000 bytes
        b = a.view(-1)  # a view: no new storage
        c = torch.empty(250, 1000)  # 1,000,000 bytes
        del a, b
        d = torch.empty(100)  # 400 bytes
    assert tracker.peak == blocks(4_000_000) + blocks(1_000_000) == 5_000_704
    assert tracker.current == blocks(1_000_000) + 512
    del c, d
    assert tracker.current == 0


def test_meta_accounting_equals_real_tensors_and_chunks_cut_the_decode(memory):
    """The VAE decode stage tracked on the meta device (how the paper-size table is computed) equals
    the same stage on real CPU tensors; decoding 2 frames at a time allocates about a quarter."""
    from ouro.models.svd_parts import SVDConditioner

    parts = SVDConditioner.tiny()
    z = torch.randn(1, 8, 4, 16, 16)

    def peak(cond, latents, chunk=None) -> int:
        tracker = memory.LiveBytes()
        with torch.no_grad(), memory.FlashAttentionSizes(), tracker:
            cond.decode(latents, chunk_frames=chunk)
        return tracker.peak

    real = peak(parts, z)
    meta = peak(parts.to("meta"), z.to("meta"))
    assert meta == real > 8 * 3 * 128 * 128 * 4  # at least the float32 output
    assert 0.2 < peak(parts, z.to("meta"), 2) / meta < 0.4


def test_memory_table_at_tiny(memory):
    table = memory.compute("tiny", torch.float32, chunks=(2,), render=True, log=lambda line: None)
    assert set(table.stages) == {"condition", "unet", "decode", "decode_chunk2", "reconstruct"}
    assert table.render_cpu > 0 and table.stages["decode_chunk2"] < table.stages["decode"]
    default, _ = table.total(offload=False, decode_chunk=None)
    low, _ = table.total(offload=True, decode_chunk=2)
    peaks = [table.stages[s] for s in ("condition", "unet", "decode", "reconstruct")] + [table.render_cpu]
    assert default == sum(table.params.values()) + table.loop_state + max(peaks) and low < default
    assert "| --decode-chunk 2 --offload |" in memory.markdown(table)


@pytest.mark.slow
def test_gpu_check_script_runs_whole_at_tiny_on_cpu(tmp_path):
    """benchmarks/gpu_check.sh with OURO_CHECK_PRESET=tiny: every step of the GPU check, on the CPU."""
    env = {**os.environ, "OURO_CHECK_PRESET": "tiny", "OURO_CHECK_STEPS": "2", "OURO_CHECK_TESTS": "0", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "check")], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    summary = (tmp_path / "check" / "summary.md").read_text()
    assert "| default (exit 0) |" in summary and "| --decode-chunk 2 --offload (exit 0) |" in summary
    assert "training (3 steps, batch 1, bf16, gradient checkpointing)" in summary
    low = json.loads((tmp_path / "check" / "sample-low.json").read_text())
    assert "--decode-chunk" in low["command"] and json.loads((tmp_path / "check" / "sample-low" / "meta.json").read_text())["offload"]
