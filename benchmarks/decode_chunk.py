"""How much `--decode-chunk N` changes the decoded views (SVD's temporal VAE decoder, random weights).

SVD's decoder mixes the frames of one decode call (3-tap temporal convolutions; GroupNorm
statistics over all frames of the call), so decoding N frames at a time gives other frames than
one 8-frame decode. This prints mean and max |difference| (images in [-1, 1]) per chunk size for
the test stand-in VAE (``SVDConditioner.tiny``) and SVD's real VAE config, both with **random**
weights: the trained SVD weights' figure needs those weights (not on this machine).

    python benchmarks/decode_chunk.py                   # tiny at 8x8 latents, paper config at 16x16 latents
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def differences(conditioner, latent_size: int, chunks=(1, 2, 4), frames: int = 8, seed: int = 0) -> dict[int, tuple[float, float]]:
    """``{chunk: (mean |Δ|, max |Δ|)}`` against one decode of all ``frames``."""
    z = torch.randn(1, frames, 4, latent_size, latent_size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        whole = conditioner.decode(z)
        out = {}
        for n in chunks:
            diff = (conditioner.decode(z, chunk_frames=n) - whole).abs()
            out[n] = (float(diff.mean()), float(diff.max()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paper-latent", type=int, default=16, help="latent size for SVD's config (64 = 512 px views)")
    args = parser.parse_args()
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPImageProcessorPil

    from ouro.models.svd_parts import SVDConditioner
    from paper_size import svd_configs

    print("| VAE (random weights) | views | chunk | mean abs diff | max abs diff |")
    print("|---|---|---|---|---|")
    torch.manual_seed(0)
    for label, cond, latent in (
        ("tiny stand-in (SVDConditioner.tiny)", SVDConditioner.tiny(), 8),
        ("SVD img2vid config", SVDConditioner(AutoencoderKLTemporalDecoder.from_config(svd_configs("paper")["vae/config.json"]).eval(),
                                              SVDConditioner.tiny().image_encoder, CLIPImageProcessorPil(), {}), args.paper_latent),
    ):
        t0 = time.time()
        for n, (mean, peak) in differences(cond, latent).items():
            print(f"| {label} | 8 x {latent * 8} px | {n} | {mean:.4f} | {peak:.4f} |")
        print(f"<!-- {label}: {time.time() - t0:.0f} s -->")


if __name__ == "__main__":
    main()
