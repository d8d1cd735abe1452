"""Paper size end to end: a synthetic public checkpoint, then `ouro sample --model official` on it.

Nothing at paper size had run through the real loader before this script: the public weights
are not here, so it writes random weights **in the public release's layout** and lets the normal
code path load and run them:

* ``mv_model_unet.pth`` and ``recon_model.pth``: flat ``{name: tensor}`` state dicts written by
  ``torch.save(model.state_dict(), path)`` (how the public code's files load: strictly, no prefix,
  docs/OFFICIAL.md 1.2), keys in the order of the shipped listings (ouro/assets/official/);
* ``stable-video-diffusion-img2vid/``: the diffusers folder of SVD img2vid with the published
  configs (``model_index.json``, ``vae/config.json``, ``image_encoder/config.json``,
  ``feature_extractor/preprocessor_config.json``, ``scheduler/scheduler_config.json``,
  ``unet/config.json``; values below, as docs/OFFICIAL.md sections 4 and 11 and
  benchmarks/flops.py record them; they were not re-read from the hub here, which this machine
  cannot reach) and random safetensors weights for the VAE and the CLIP image encoder.
  ``unet/`` holds only its config: ouro reads SVD's UNet config (for its attention heads) but
  never its weights (F's UNet is inside ``mv_model_unet.pth``).

Then ``sample`` runs ``ouro sample examples/chair.png --model official --steps 2`` with
``OURO_WEIGHTS`` pointing at the folder, as a user would, and reports wall time per stage (from
the output's meta.json; "load" is start-up + loading + input preparation, up to the CLI's
"sampling with" line) and the peak resident memory of the process (``ru_maxrss`` from
``wait4``; also an RSS timeline polled from /proc). Weights are random, so the outputs are noise;
what this proves is the layout, the loader, the shapes at 512 px with 65,536 Gaussians, the time
and the memory.

    python benchmarks/paper_size.py write /tmp/ouro-paper                     # ~12 GB of files (float32)
    python benchmarks/paper_size.py sample /tmp/ouro-paper --steps 2           # default
    python benchmarks/paper_size.py sample /tmp/ouro-paper --steps 2 -- --decode-chunk 2 --offload
    python benchmarks/paper_size.py write /tmp/ouro-tiny --preset tiny         # what tests/test_paper_size.py runs

``--preset`` other than ``paper`` writes the same layout at that preset's widths (the SVD parts as
``SVDConditioner.tiny``'s stand-ins); ``sample`` then tells the loader the preset (the public
files are always paper-sized, so ``ouro`` itself has no option for that).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SVD_FOLDER = "stable-video-diffusion-img2vid"

# -- the published SVD img2vid configs (stabilityai/stable-video-diffusion-img2vid) ----------------
DIFFUSERS_VERSION = "0.24.0.dev0"
MODEL_INDEX = {
    "_class_name": "StableVideoDiffusionPipeline",
    "_diffusers_version": DIFFUSERS_VERSION,
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
    "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
}
VAE_CONFIG = {
    "_class_name": "AutoencoderKLTemporalDecoder",
    "_diffusers_version": DIFFUSERS_VERSION,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "out_channels": 3,
    "sample_size": 768,
    "scaling_factor": 0.18215,
}
CLIP_CONFIG = {  # OpenCLIP ViT-H/14 vision tower with its 1024-d projection
    "architectures": ["CLIPVisionModelWithProjection"],
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "image_size": 224,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 32,
    "patch_size": 14,
    "projection_dim": 1024,
    "torch_dtype": "float16",
    "transformers_version": "4.34.0.dev0",
}
FEATURE_EXTRACTOR_CONFIG = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}
SCHEDULER_CONFIG = {  # OFFICIAL.md 11.1
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": DIFFUSERS_VERSION,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}
UNET_CONFIG = {  # OFFICIAL.md 4.1-4.2
    "_class_name": "UNetSpatioTemporalConditionModel",
    "_diffusers_version": DIFFUSERS_VERSION,
    "addition_time_embed_dim": 256,
    "block_out_channels": [320, 640, 1280, 1280],
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
    "in_channels": 8,
    "layers_per_block": 2,
    "num_attention_heads": [5, 10, 20, 20],
    "num_frames": 14,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 768,
    "sample_size": 96,
    "transformer_layers_per_block": 1,
    "up_block_types": ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
}


def svd_configs(preset: str) -> dict[str, dict]:
    """``{relative path: JSON}`` of the SVD folder for ``preset``: the published files for ``paper``;
    for smaller presets the same files with ``SVDConditioner.tiny``'s VAE / CLIP widths and the
    preset's UNet widths (so that the loader's unet/config.json checks pass)."""
    from ouro.config import get_preset

    configs = {"model_index.json": MODEL_INDEX, "vae/config.json": VAE_CONFIG, "image_encoder/config.json": CLIP_CONFIG,
               "feature_extractor/preprocessor_config.json": FEATURE_EXTRACTOR_CONFIG,
               "scheduler/scheduler_config.json": SCHEDULER_CONFIG, "unet/config.json": UNET_CONFIG}
    if preset == "paper":
        return json.loads(json.dumps(configs))
    gen = get_preset(preset).generator
    if gen.codec != "vae":
        raise ValueError(f"preset {preset!r} has no VAE (codec {gen.codec!r}); the public layout needs one")
    small = json.loads(json.dumps(configs))
    small["vae/config.json"].update(block_out_channels=[32] * 4, layers_per_block=1, latent_channels=gen.latent_channels)
    small["image_encoder/config.json"].update(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                              patch_size=32, projection_dim=gen.cross_attention_dim)
    small["unet/config.json"].update(block_out_channels=list(gen.block_out_channels), layers_per_block=gen.layers_per_block,
                                     cross_attention_dim=gen.cross_attention_dim,
                                     addition_time_embed_dim=gen.addition_time_embed_dim,
                                     num_attention_heads=list(gen.num_attention_heads))
    return small


# -- writing ---------------------------------------------------------------------------------------
def _rss_gb() -> float:
    return _status_kb(os.getpid(), "VmRSS") / 1e6


def _status_kb(pid: int, field_name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _save_public(state: dict, path: Path, listing_file: str | None) -> None:
    """``torch.save`` of a state dict as the public files hold it: keys in the release's order."""
    import torch

    if listing_file is not None:
        from ouro.io.official import official_listing

        order = list(official_listing(listing_file))
        assert set(order) == set(state), "the model's keys differ from the release listing"
        ordered = collections.OrderedDict((k, state[k]) for k in order)
        ordered._metadata = getattr(state, "_metadata", None)  # what torch.save(model.state_dict()) carries
        state = ordered
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def write_synthetic_official(out: str | os.PathLike, preset: str = "paper", dtype: str = "float32", seed: int = 0,
                             log=print) -> dict:
    """Write random weights for ``preset`` in the public layout under ``out``; returns what was written.

    One model is in memory at a time (F alone is 7.1 GB in float32 at paper size).
    """
    import torch
    from safetensors.torch import save_file

    from ouro.config import get_preset
    from ouro.io.official import MV_MODEL_FILE, RECON_MODEL_FILE
    from ouro.models import MultiViewUNet, Reconstructor

    out = Path(out)
    svd = out / SVD_FOLDER
    config = get_preset(preset)
    torch_dtype = {"float32": torch.float32, "float16": torch.float16}[dtype]
    listing = {"mv": MV_MODEL_FILE, "recon": RECON_MODEL_FILE} if preset == "paper" else {"mv": None, "recon": None}
    written: dict = {"preset": preset, "dtype": dtype, "seed": seed, "files": {}}
    out.mkdir(parents=True, exist_ok=True)

    def record(path: Path, params: int, seconds: float) -> None:
        written["files"][str(path.relative_to(out))] = {"params": params, "bytes": path.stat().st_size, "seconds": round(seconds, 1)}
        log(f"wrote {path} ({params:,} params, {path.stat().st_size / 1e9:.2f} GB, {seconds:.0f} s; RSS {_rss_gb():.1f} GB)")

    for name, build, file in (("mv", lambda: MultiViewUNet.from_ouro_config(config.generator), MV_MODEL_FILE),
                              ("recon", lambda: Reconstructor.from_ouro_config(config.reconstructor), RECON_MODEL_FILE)):
        t0 = time.time()
        torch.manual_seed(seed)
        model = build()
        if torch_dtype != torch.float32:
            model = model.to(torch_dtype)
        _save_public(model.state_dict(), out / file, listing[name])
        record(out / file, sum(p.numel() for p in model.parameters()), time.time() - t0)
        del model

    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    configs = svd_configs(preset)
    for rel, data in configs.items():
        (svd / rel).parent.mkdir(parents=True, exist_ok=True)
        (svd / rel).write_text(json.dumps(data, indent=2) + "\n")
    t0 = time.time()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLTemporalDecoder.from_config(configs["vae/config.json"])
    if torch_dtype != torch.float32:
        vae = vae.to(torch_dtype)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, svd / "vae" / "diffusion_pytorch_model.safetensors",
              metadata={"format": "pt"})
    record(svd / "vae" / "diffusion_pytorch_model.safetensors", sum(p.numel() for p in vae.parameters()), time.time() - t0)
    del vae
    t0 = time.time()
    torch.manual_seed(seed + 2)
    clip_fields = {k: v for k, v in configs["image_encoder/config.json"].items() if k not in ("architectures", "model_type",
                                                                                                "torch_dtype", "transformers_version")}
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_fields))
    if torch_dtype != torch.float32:
        clip = clip.to(torch_dtype)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, svd / "image_encoder" / "model.safetensors",
              metadata={"format": "pt"})
    record(svd / "image_encoder" / "model.safetensors", sum(p.numel() for p in clip.parameters()), time.time() - t0)
    del clip
    umask = os.umask(0)
    os.umask(umask)
    for path in svd.rglob("*.safetensors"):  # safetensors writes 0600; the user's umask decides, as for every other file
        path.chmod(0o666 & ~umask)
    (out / "synthetic.json").write_text(json.dumps(written, indent=2) + "\n")
    return written


# -- sampling under measurement ---------------------------------------------------------------------
@dataclass
class SampleRun:
    """One measured ``ouro sample`` process."""

    command: list[str]
    returncode: int
    wall_s: float
    load_s: float | None  #: start-up + weights + input preparation (until "sampling with")
    peak_rss_gb: float  #: ru_maxrss of the ouro process
    rss_after_load_gb: float | None  #: polled RSS when sampling started
    peak_rss_load_gb: float | None = None  #: highest polled RSS before sampling started
    cpu_s: float | None = None  #: user + system CPU seconds of the process (all its threads)
    timings: dict[str, float] = field(default_factory=dict)  #: meta.json's per-stage seconds
    cuda: dict[str, float] = field(default_factory=dict)  #: torch.cuda peaks (GB) and the device, on a GPU
    stderr_tail: str = ""

    def row(self, label: str) -> str:
        t = self.timings
        stages = " / ".join(f"{t.get(s, 0.0):.1f}" for s in ("condition", "unet", "decode", "reconstruct", "render", "write_images", "video"))
        load = f"{self.load_s:.0f}" if self.load_s is not None else "?"
        cuda = f" {self.cuda['max_memory_allocated_gb']:.2f} / {self.cuda['max_memory_reserved_gb']:.2f} |" if self.cuda else ""
        return f"| {label} | {self.wall_s:.0f} | {load} | {stages} | {self.peak_rss_gb:.2f} |{cuda}"


def run_cli(args: list[str], preset: str = "paper", stats: str | os.PathLike | None = None) -> int:
    """Run ``ouro ARGS`` in this process (as the console script does); with ``stats``, write the
    CUDA peak memory there as JSON when it ends. A ``preset`` other than paper is passed to the
    public-weights loader (for synthetic folders of other sizes)."""
    import functools

    import torch

    if preset != "paper":
        import ouro.io.official as official

        official.load_official = functools.partial(official.load_official, preset=preset)
    from ouro.cli.main import app

    code = 0
    try:
        app(args, prog_name="ouro")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        if stats is not None:
            data = {}
            if torch.cuda.is_available():
                data = {"device": torch.cuda.get_device_name(), "max_memory_allocated_gb": torch.cuda.max_memory_allocated() / 1e9,
                        "max_memory_reserved_gb": torch.cuda.max_memory_reserved() / 1e9}
            Path(stats).write_text(json.dumps(data) + "\n")
    return code


def measure_sample(weights: str | os.PathLike, output: str | os.PathLike, steps: int = 2, extra: list[str] | None = None,
                   image: str | os.PathLike = REPO / "examples" / "chair.png", preset: str | None = None,
                   threads: int | None = None, poll_s: float = 0.5) -> SampleRun:
    """Run ``ouro sample IMAGE --model official --steps N -o OUTPUT [extra]`` with ``OURO_WEIGHTS=weights``
    in a fresh process (:func:`run_cli`), measured."""
    weights, output = Path(weights), Path(output)
    if preset is None:
        info = weights / "synthetic.json"
        preset = json.loads(info.read_text())["preset"] if info.is_file() else "paper"
    args = ["sample", str(image), "--model", "official", "--steps", str(steps), "-o", str(output), *(extra or [])]
    stats = output.with_name(output.name + ".cuda.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "cli", "--preset", preset, "--stats", str(stats), "--", *args]
    env = {**os.environ, "OURO_WEIGHTS": str(weights), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("OURO_SVD", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marks: dict[str, float] = {}
    lines: list[str] = []
    rss: list[tuple[float, int]] = []

    def read_stderr() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "sampling with" in line and "load" not in marks:
                marks["load"] = time.perf_counter() - t0
                marks["rss_after_load"] = _status_kb(proc.pid, "VmRSS")

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            rss.append((time.perf_counter() - t0, _status_kb(proc.pid, "VmRSS")))
            done.wait(poll_s)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=10)
    poller.join(timeout=10)
    meta_path = output / "meta.json"
    timings = json.loads(meta_path.read_text()).get("timings", {}) if proc.returncode == 0 and meta_path.is_file() else {}
    cuda = json.loads(stats.read_text()) if stats.is_file() else {}
    return SampleRun(
        command=["OURO_WEIGHTS=" + str(weights), "ouro", *args], returncode=proc.returncode, wall_s=wall,
        load_s=marks.get("load"), peak_rss_gb=usage.ru_maxrss / 1e6,
        rss_after_load_gb=marks["rss_after_load"] / 1e6 if "rss_after_load" in marks else None,
        peak_rss_load_gb=(max((kb for t, kb in rss if t <= marks["load"]), default=0) / 1e6) if "load" in marks else None,
        timings=timings, cuda=cuda, cpu_s=usage.ru_utime + usage.ru_stime, stderr_tail="".join(lines[-20:]) + stdout[-2000:],
    )


TABLE_HEADER = ("| run | wall s | load s | condition / unet / decode / reconstruct / render / write / video s | peak RSS GB |",
                "|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write the synthetic public checkpoint")
    w.add_argument("folder", type=Path)
    w.add_argument("--preset", default="paper")
    w.add_argument("--dtype", default="float32", choices=("float32", "float16"))
    w.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("sample", help="run `ouro sample --model official` on it, measured")
    s.add_argument("folder", type=Path)
    s.add_argument("--steps", type=int, default=2)
    s.add_argument("--out", type=Path, default=None, help="sample output folder (default: FOLDER/out-<label>)")
    s.add_argument("--label", default="default")
    s.add_argument("--json", type=Path, default=None, help="also write the measurement here")
    c = sub.add_parser("cli", help="run an `ouro` command in this process (and write its CUDA peak memory)")
    c.add_argument("--preset", default="paper", help="size of the synthetic public weights the command loads")
    c.add_argument("--stats", type=Path, default=None, help="write torch.cuda's peak memory here (JSON)")
    args, rest = parser.parse_known_args()  # after --: `ouro sample` options (sample), the `ouro` command line (cli)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if rest and args.command == "write":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "write":
        t0 = time.time()
        write_synthetic_official(args.folder, args.preset, args.dtype, args.seed)
        print(f"done in {time.time() - t0:.0f} s")
        return
    if args.command == "cli":
        sys.exit(run_cli(rest, args.preset, args.stats))
    out = args.out or args.folder / f"out-{re.sub(r'[^A-Za-z0-9_.-]', '_', args.label)}"
    run = measure_sample(args.folder, out, args.steps, rest)
    print(run.stderr_tail)
    header, rule = TABLE_HEADER
    if run.cuda:
        header, rule = header + " CUDA max allocated / reserved GB |", rule + "---|"
    print(header)
    print(rule)
    print(run.row(args.label))
    if args.json:
        args.json.write_text(json.dumps(asdict(run), indent=2) + "\n")
    sys.exit(run.returncode)


if __name__ == "__main__":
    main()
