"""Accelerator memory of `ouro sample` at a preset, computed from parameter and activation sizes.

No GPU is needed: every model is built on the ``meta`` device (shapes and dtypes, no storage) in
the compute dtype, and each sampling stage runs its forward pass there under a tracker
(:class:`LiveBytes`, a ``TorchDispatchMode``) that adds up the bytes of every tensor the stage
allocates while it is alive (each storage rounded up to the CUDA caching allocator's 512-byte
blocks) and keeps the peak. Attention is counted as flash / memory-efficient attention runs it on
CUDA in float16 (output and softmax statistics, no ``L x L`` matrix; :class:`FlashAttentionSizes`);
the meta device would otherwise take PyTorch's math path. The rasterizer is data-dependent and
cannot run on ``meta``: its stage is tracked the same way on the CPU with real tensors (65,536
random Gaussians, torch backend, as on CUDA without gsplat) and reported separately; gsplat needs
less.

Totals (``SamplePipeline`` at ``--preset``, guided batch 2, the feedback maps fed to F):

* **default**: all parameters resident (F, G, VAE, CLIP) + the loop's state (latents, condition,
  feedback maps, cached adapter features, decoded views, Gaussians) + the largest stage peak;
* **--offload**: for each stage, the parameters of its model only + loop state + its peak; the
  largest stage;
* **--decode-chunk N**: the VAE decode stage with N frames per call.

What this leaves out (so a GPU's ``torch.cuda.max_memory_allocated`` will be somewhat higher): the
allocator's fragmentation and cached blocks, cuBLAS / cuDNN workspaces, kernels' internal
temporaries; and the CUDA context (~0.5 GB, outside ``max_memory_allocated`` but on the card).
``benchmarks/gpu_check.sh`` measures it on a GPU.

    python benchmarks/memory.py                           # paper, float16: the table of benchmarks/README.md
    python benchmarks/memory.py --preset tiny --dtype float32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

sys.path.insert(0, str(Path(__file__).resolve().parent))

BLOCK = 512  #: CUDA caching allocator granularity, bytes
GB = 1e9


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensors allocated inside the mode and still alive: ``current`` and ``peak``.

    Storages are counted once (views share them) and released when garbage-collected; storages
    made before the mode (parameters, inputs) are not counted unless :meth:`track` is called.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.current = 0
        self.peak = 0

    def reset_peak(self) -> None:
        self.peak = self.current

    def track(self, *tensors: torch.Tensor) -> None:
        for t in tensors:
            self._add(t)

    def ignore(self, *tensors: torch.Tensor) -> None:
        """Mark storages as already paid for (parameters: in-place ops on them allocate nothing)."""
        for t in tensors:
            self.seen[t.untyped_storage()] = 0

    def _add(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        if st in self.seen:
            return
        n = math.ceil(st.nbytes() / BLOCK) * BLOCK
        self.seen[st] = n
        self.current += n
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, n)

    def _free(self, n: int) -> None:
        self.current -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._add(t)
        return out


class FlashAttentionSizes(TorchFunctionMode):
    """``F.scaled_dot_product_attention`` as flash / memory-efficient attention allocates it:
    the output and a float32 log-sum-exp per query row; no attention matrix."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, v = args[0], args[2]
            lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
            out = torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)
            del lse
            return out
        return func(*args, **kwargs)


@dataclass
class MemoryTable:
    """Bytes per part (see the module docstring)."""

    preset: str
    dtype: str
    params: dict[str, int] = field(default_factory=dict)  #: generator, reconstructor, vae, clip
    loop_state: int = 0
    stages: dict[str, int] = field(default_factory=dict)  #: peak bytes allocated by each stage above what it started with
    render_cpu: int | None = None  #: the render stage, tracked on the CPU with real tensors (torch backend)
    seconds: float = 0.0

    def stage_model(self) -> dict[str, list[str]]:
        return {"condition": ["vae", "clip"], "unet": ["generator"], f"decode": ["vae"], "reconstruct": ["reconstructor"],
                "render": []}

    def total(self, offload: bool, decode_chunk: int | None) -> tuple[int, str]:
        """``(peak bytes, the stage that sets it)``."""
        decode = f"decode_chunk{decode_chunk}" if decode_chunk else "decode"
        stages = {"condition": self.stages["condition"], "unet": self.stages["unet"], "decode": self.stages[decode],
                  "reconstruct": self.stages["reconstruct"], "render": self.render_cpu or 0}
        owners = self.stage_model()
        best = (0, "")
        for name, peak in stages.items():
            params = sum(self.params[m] for m in owners[name]) if offload else sum(self.params.values())
            best = max(best, (params + self.loop_state + peak, name))
        return best


def _sizes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(b.numel() * b.element_size() for b in module.buffers())


def compute(preset: str = "paper", dtype: torch.dtype = torch.float16, chunks: tuple[int, ...] = (2,), render: bool = True,
            log=print) -> MemoryTable:
    """The table for ``preset`` in ``dtype`` (see the module docstring)."""
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

    from ouro.config import get_preset
    from ouro.models import build_models
    from ouro.models.reconstructor import noise_level
    from ouro.models.svd_parts import SVDConditioner
    from paper_size import svd_configs

    t_start = time.time()
    config = get_preset(preset)
    gen, rec, cam = config.generator, config.reconstructor, config.camera
    frames, size = cam.num_views, gen.image_size
    h = size // gen.vae_downsample
    meta = torch.device("meta")
    table = MemoryTable(preset, str(dtype).replace("torch.", ""))

    from ouro.io.checkpoint import quiet_hf

    generator, reconstructor = build_models(config, device=meta, compat="official")
    configs = svd_configs(preset)
    clip_fields = {k: v for k, v in configs["image_encoder/config.json"].items()
                   if k not in ("architectures", "model_type", "torch_dtype", "transformers_version")}
    with meta:
        vae = AutoencoderKLTemporalDecoder.from_config(configs["vae/config.json"])
        clip_config = CLIPVisionConfig(**clip_fields)
        clip_config._attn_implementation = "sdpa"
        clip = CLIPVisionModelWithProjection(clip_config)
        conditioner = SVDConditioner(vae, clip, CLIPImageProcessorPil(), {})
    with quiet_hf():
        for m in (generator, reconstructor, conditioner):
            m.to(device=meta, dtype=dtype).eval()
    table.params = {"generator": _sizes(generator), "reconstructor": _sizes(reconstructor), "vae": _sizes(vae), "clip": _sizes(clip)}

    def t(*shape, dt=dtype):
        return torch.zeros(shape, device=meta, dtype=dt)

    # the loop's state between stages (what SamplePipeline keeps alive across a step)
    feats_shapes = [(frames, c, h >> i, h >> i) for i, c in enumerate(gen.block_out_channels)]
    state = {
        "latents": (1, frames, gen.latent_channels, h, h, 4),  # float32
        "condition latents": (2, frames, gen.latent_channels, h, h, dtype.itemsize),
        "feedback maps": (len(gen.feedback), frames, 3, size, size, dtype.itemsize),
        "decoded views": (1, frames, 3, size, size, 4),  # float32
        "Gaussians": (1, len(rec.input_views) * rec.splat_size**2, 14, dtype.itemsize),
    }
    table.loop_state = sum(math.prod(s[:-1]) * s[-1] for s in state.values())
    table.loop_state += sum(math.prod(s) * dtype.itemsize for s in feats_shapes)  # cached zero-map adapter features

    c2w = torch.eye(4, device=meta, dtype=dtype).expand(1, frames, 4, 4)
    K = torch.eye(3, device=meta, dtype=dtype).expand(1, frames, 3, 3)

    def stage(name: str, fn, *inputs) -> None:
        tracker = LiveBytes()
        for m in (generator, reconstructor, conditioner):
            tracker.ignore(*m.parameters(), *m.buffers())
        tracker.ignore(*inputs, c2w, K)
        with torch.no_grad(), FlashAttentionSizes(), tracker:
            out = fn(*inputs)
            del out
        table.stages[name] = tracker.peak
        log(f"{name}: peak {tracker.peak / GB:.3f} GB allocated")

    stage("condition", lambda img: (conditioner.clip_embedding(img), vae.encode(img.to(dtype)).latent_dist.mode()),
          t(1, 3, size, size, dt=torch.float32))
    stage("unet", lambda sample, clip_emb, ids, rgb, ccm: generator(sample, torch.zeros((), device=meta), clip_emb, ids, c2w, K,
                                                                    feedback=[rgb, ccm][: len(gen.feedback)], compat="official").sample,
          t(2, frames, 2 * gen.latent_channels, h, h), t(2, 1, gen.cross_attention_dim), t(2, 3),
          t(1, frames, 3, size, size), t(1, frames, 3, size, size))
    stage("decode", lambda z: conditioner.decode(z), t(1, frames, gen.latent_channels, h, h))
    for n in chunks:
        stage(f"decode_chunk{n}", lambda z, n=n: conditioner.decode(z, chunk_frames=n), t(1, frames, gen.latent_channels, h, h))
    stage("reconstruct", lambda images: reconstructor(images, c2w, K, noise_level(1.0)).to_gaussians("official"),
          t(1, frames, 3, size, size))
    if render:
        table.render_cpu = render_peak_cpu(config, log)
    table.seconds = time.time() - t_start
    return table


def render_peak_cpu(config, log=print) -> int:
    """Peak bytes the feedback render allocates (torch backend, CPU, float32, random LGM-like Gaussians)."""
    from ouro.models.feedback import render_feedback
    from ouro.pipelines.sample import view_cameras

    from rasterizer import lgm_like_scene

    rec, cam, size = config.reconstructor, config.camera, config.generator.image_size
    n = len(rec.input_views) * rec.splat_size**2
    gaussians = lgm_like_scene(n, size)[0].to(dtype=torch.float32)  # benchmarks/rasterizer.py's scene
    c2w, K = view_cameras(cam.num_views, cam.radius, cam.fov_deg)
    tracker = LiveBytes()
    with torch.no_grad(), tracker:
        maps = render_feedback(gaussians, c2w, K, size, "official", backend="torch")
        del maps
    log(f"render (CPU, torch backend, {n:,} Gaussians, {cam.num_views} x {size}^2): peak {tracker.peak / GB:.3f} GB allocated")
    return tracker.peak


def markdown(table: MemoryTable, chunk: int = 2) -> str:
    p = table.params
    lines = [
        f"| part ({table.preset}, {table.dtype}) | GB |",
        "|---|---:|",
        *[f"| parameters: {k} | {v / GB:.2f} |" for k, v in p.items()],
        f"| parameters, all | {sum(p.values()) / GB:.2f} |",
        f"| loop state (latents, condition, feedback maps, adapter features, views, Gaussians) | {table.loop_state / GB:.3f} |",
        *[f"| stage peak: {k.replace('_chunk', ', chunk ')} | {v / GB:.3f} |" for k, v in table.stages.items()],
    ]
    if table.render_cpu is not None:
        lines.append(f"| stage peak: render (torch backend, measured on CPU) | {table.render_cpu / GB:.3f} |")
    lines += ["", "| mode | peak GB | set by |", "|---|---:|---|"]
    for label, offload, dc in (("default", False, None), (f"--decode-chunk {chunk}", False, chunk), ("--offload", True, None),
                               (f"--decode-chunk {chunk} --offload", True, chunk)):
        total, where = table.total(offload, dc)
        lines.append(f"| {label} | {total / GB:.2f} | {where} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--chunk", type=int, default=2)
    parser.add_argument("--no-render", action="store_true", help="skip the rasterizer stage (CPU, real tensors)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    table = compute(args.preset, getattr(torch, args.dtype), (args.chunk,), render=not args.no_render)
    print(markdown(table, args.chunk))
    if args.json:
        data = {**table.__dict__, "totals": {f"offload={o},decode_chunk={d}": table.total(o, d)
                                             for o in (False, True) for d in (None, args.chunk)}}
        args.json.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
