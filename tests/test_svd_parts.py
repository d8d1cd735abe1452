"""SVD's VAE/CLIP parts: our conditioning equals diffusers' SVD pipeline, and folders round-trip."""

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel
from PIL import Image

from ouro.models.svd_parts import SVDConditioner


@pytest.fixture(scope="module")
def parts():
    return SVDConditioner.tiny(cross_attention_dim=32)


@pytest.fixture(scope="module")
def pipe(parts):
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"), cross_attention_dim=32,
        num_attention_heads=(2, 4), addition_time_embed_dim=8, projection_class_embeddings_input_dim=24, layers_per_block=1,
    )
    return StableVideoDiffusionPipeline(
        vae=parts.vae, image_encoder=parts.image_encoder, unet=unet,
        scheduler=EulerDiscreteScheduler(), feature_extractor=parts.feature_extractor,
    )


def test_clip_embedding_equals_the_svd_pipeline(parts, pipe):
    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8))
    expected = pipe._encode_image(pil, "cpu", 1, False)
    ours = parts.clip_embedding(torch.from_numpy(np.array(pil)).permute(2, 0, 1)[None].float() / 255 * 2 - 1)
    assert ours.shape == (1, 1, 32)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_condition_latent_is_the_vae_mode_of_the_noised_image(parts, pipe):
    img = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        clean = parts.condition_latent(img, noise_aug=0.0)
        torch.testing.assert_close(clean, pipe._encode_vae_image(img, "cpu", 1, False))
        noisy = parts.condition_latent(img, noise_aug=0.02, generator=torch.Generator().manual_seed(3))
        noise = torch.randn(img.shape, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(noisy, parts.vae.encode(img + 0.02 * noise).latent_dist.mode())
    assert clean.shape == (2, 4, 8, 8)
    assert not torch.allclose(noisy, clean)


def test_added_time_ids_and_decode_equal_the_svd_pipeline(parts, pipe):
    ours = SVDConditioner.added_time_ids(2)
    expected = pipe._get_add_time_ids(6, 127, 0.02, torch.float32, 2, 1, False)
    torch.testing.assert_close(ours, expected)
    assert ours[0].tolist() == pytest.approx([6, 127, 0.02])
    latents = torch.randn(1, 8, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = parts.decode(latents)
        expected = pipe.decode_latents(latents, num_frames=8, decode_chunk_size=8).permute(0, 2, 1, 3, 4)
    assert ours.shape == (1, 8, 3, 64, 64)
    torch.testing.assert_close(ours, expected)


def test_chunked_decode_is_svds_decode_chunk_size_and_changes_the_frames(parts, pipe):
    """`ouro sample --decode-chunk N` decodes as SVD's `decode_chunk_size=N`; a chunk of all frames is one decode.

    Chunking is **not** invariant for SVD's temporal decoder: its temporal 3-tap convolutions and the
    GroupNorm of its temporal blocks (statistics over all frames of one call) mix the frames of a
    call, so a frame decoded beside 1 neighbour differs from the same frame decoded beside 7. The
    difference is measured here (tiny VAE, random weights; benchmarks/README.md has the figures):
    it shrinks as chunks grow and is exactly 0 for one chunk.
    """
    latents = torch.randn(2, 8, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = parts.decode(latents)
        assert torch.equal(parts.decode(latents, chunk_frames=8), whole)
        assert torch.equal(parts.decode(latents, chunk_frames=50), whole)
        chunked = {n: parts.decode(latents, chunk_frames=n) for n in (1, 2, 3, 4)}
        for n, ours in chunked.items():  # per object, as SVD's pipeline decodes one video (the last chunk shorter for 3)
            expected = torch.stack([pipe.decode_latents(latents[b : b + 1], num_frames=8, decode_chunk_size=n)[0] for b in range(2)])
            torch.testing.assert_close(ours, expected.permute(0, 2, 1, 3, 4))
        # a chunk is an independent decode of its frames: objects and chunks never mix
        assert torch.equal(chunked[2][1, 4:6], parts.decode(latents[1:2, 4:6])[0])
        assert torch.equal(parts.decode(latents[1:2]), whole[1:2])
    mean_change = {n: float((chunked[n] - whole).abs().mean()) for n in chunked}
    assert mean_change[1] > mean_change[2] > mean_change[4] > 0.01, mean_change  # more context, closer to one decode
    assert float((chunked[2] - whole).abs().max()) > 0.1  # not float noise: the frames really change
    with pytest.raises(ValueError, match="chunk_frames must be >= 1"):
        parts.decode(latents, chunk_frames=-1)


def test_folder_round_trip_gives_identical_outputs(parts, tmp_path):
    parts.scheduler_config = {"prediction_type": "v_prediction"}
    parts.save_pretrained(tmp_path / "svd")
    assert not list((tmp_path / "svd").rglob("*.bin")) and list((tmp_path / "svd").rglob("*.safetensors"))
    back = SVDConditioner.from_pretrained(tmp_path / "svd")
    ours, theirs = parts.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    img = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        # identical weights; transformers' loaded CLIP differs from the constructed one by float32
        # reduction order only (1e-7), so allow 1e-6 there and demand exact equality from the VAE.
        torch.testing.assert_close(back.clip_embedding(img), parts.clip_embedding(img), rtol=0, atol=1e-6)
        torch.testing.assert_close(back.condition_latent(img, 0.0), parts.condition_latent(img, 0.0), rtol=0, atol=0)
    assert back.scheduler_config == {"prediction_type": "v_prediction"}
    (tmp_path / "half" / "vae").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="half: no 'image_encoder/' sub-folder"):
        SVDConditioner.from_pretrained(tmp_path / "half")


def test_the_core_install_loads_the_demo_parts_without_torchvision_warnings():
    """The README's first command installs no torchvision: loading the demo's VAE/CLIP parts and
    embedding an image must work there and print nothing about torchvision (transformers warned
    once per run when diffusers' SVD pipeline module was imported)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torchvision'] = None\n"  # as if not installed
        "import torch\n"
        "from ouro.models.svd_parts import SVDConditioner\n"
        "from ouro.pipelines.sample import demo_checkpoint\n"
        "parts = SVDConditioner.from_pretrained(demo_checkpoint())\n"
        "print(tuple(parts.clip_embedding(torch.zeros(1, 3, 64, 64)).shape))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "(1, 1, 64)"
    assert "torchvision" not in run.stderr, run.stderr
