"""Loading the public Ouroboros3D weights (``huanngzh/Ouroboros3D-SVD-LGM``) into ouro's models.

The release is two PyTorch pickle-format files on top of Stable Video Diffusion img2vid
(docs/OFFICIAL.md sections 1-2):

* ``mv_model_unet.pth``: the whole multi-view generator F (1572 tensors: ``unet.*``,
  ``cond_encoder.{0,1}.*``, ``down/up/mid_plucker.*``) -> :class:`ouro.models.MultiViewUNet`;
* ``recon_model.pth``: the reconstructor G (438 tensors: ``unet.*``, ``conv.*``) ->
  :class:`ouro.models.Reconstructor`;
* a diffusers-format ``stabilityai/stable-video-diffusion-img2vid`` folder for the frozen VAE,
  CLIP image encoder, feature extractor and scheduler (its ``unet/`` weights are not needed: F's
  UNet is inside ``mv_model_unet.pth``; its ``unet/config.json`` is read when present).

Security: the ``.pth`` files are read with ``torch.load(path, map_location="cpu",
weights_only=True)`` and nothing else, so a file that pickles anything but tensors and plain
containers is refused before any of its code could run; the SVD folder is read as safetensors
only. Nothing is ever downloaded.

Loading is strict, as the public ``inference.py`` loads (OFFICIAL.md 1.2): the models are built on
the ``meta`` device and the file's tensors are assigned (``load_state_dict(strict=True,
assign=True)``), so the weights are held once; wrapper prefixes (``module.``, ``mv_model.``,
``recon_model.``) and a top-level ``state_dict`` entry are stripped and reported; anything else
that does not match raises :class:`~ouro.io.checkpoint.CheckpointError` naming the file and the
first offending keys. The models get ``compat="official"`` (the checkpoint's quirks, OFFICIAL.md 15).

Convert once, then load the safetensors checkpoint (no pickle-format file needed any more)::

    >>> paths = locate_official()                      # $OURO_WEIGHTS, else the Hugging Face cache
    >>> convert_official(paths, "checkpoints/ouroboros3d")
    >>> models = load_checkpoint("checkpoints/ouroboros3d", device="cuda", dtype=torch.float16)

Where files are looked for (:func:`locate_official`):

* weights: ``root`` (when given), else ``$OURO_WEIGHTS``, else the Hugging Face hub cache
  (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``) snapshot of
  ``huanngzh/Ouroboros3D-SVD-LGM``; in each, the files directly or in ``Ouroboros3D-SVD-LGM/``
  (OFFICIAL.md 1.1 leaves open which).
* SVD: ``svd`` (when given), else ``$OURO_SVD``, else ``stable-video-diffusion-img2vid/`` inside
  or beside the weights folder, or the weights folder itself, else the hub cache snapshot of
  ``stabilityai/stable-video-diffusion-img2vid``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ouro.config import OuroConfig, get_preset
from ouro.io.checkpoint import CheckpointError, OuroModels, is_checkpoint, save_checkpoint

__all__ = [
    "OfficialPaths",
    "MV_MODEL_FILE",
    "RECON_MODEL_FILE",
    "OFFICIAL_REPO",
    "SVD_REPO",
    "WEIGHTS_ENV",
    "SVD_ENV",
    "WRAPPER_PREFIXES",
    "hf_hub_cache",
    "hf_snapshots",
    "locate_official",
    "find_official_weights",
    "read_official_state_dict",
    "load_official_state_dicts",
    "load_official",
    "convert_official",
    "official_listing",
    "check_official_file",
]

logger = logging.getLogger(__name__)

MV_MODEL_FILE = "mv_model_unet.pth"
RECON_MODEL_FILE = "recon_model.pth"
OFFICIAL_REPO = "huanngzh/Ouroboros3D-SVD-LGM"
SVD_REPO = "stabilityai/stable-video-diffusion-img2vid"
#: the sub-folder of the official repo the README's command line points at (OFFICIAL.md 1.1)
OFFICIAL_SUBFOLDER = "Ouroboros3D-SVD-LGM"
SVD_FOLDER_NAME = "stable-video-diffusion-img2vid"
WEIGHTS_ENV = "OURO_WEIGHTS"  #: folder holding the two .pth files
SVD_ENV = "OURO_SVD"  #: diffusers-format SVD img2vid folder
#: prefixes a training wrapper (DDP, the Lightning system) would put on every key; stripped when all keys carry one
WRAPPER_PREFIXES = ("module.", "mv_model.", "recon_model.")
#: name -> shape listings of the two public files (package data), read by :func:`official_listing`
LISTING_DIR = Path(__file__).resolve().parents[1] / "assets" / "official"
LISTINGS = {MV_MODEL_FILE: "mv_model_unet_keys.txt", RECON_MODEL_FILE: "recon_model_keys.txt"}
#: files an SVD folder needs for the frozen parts (weights: safetensors, checked when loading)
_SVD_REQUIRED = ("vae/config.json", "image_encoder/config.json", "feature_extractor/preprocessor_config.json")
#: unet/config.json fields that must equal the preset's generator (they fix F's shapes)
_UNET_SHAPE_FIELDS = {
    "block_out_channels": "block_out_channels",
    "layers_per_block": "layers_per_block",
    "cross_attention_dim": "cross_attention_dim",
    "addition_time_embed_dim": "addition_time_embed_dim",
}


@dataclass(frozen=True)
class OfficialPaths:
    """Where the public weights are.

    Attributes:
        mv_model: ``mv_model_unet.pth`` (the generator F).
        recon_model: ``recon_model.pth`` (the reconstructor G).
        svd: diffusers-format SVD img2vid folder (``vae/``, ``image_encoder/``, ``feature_extractor/``,
            optional ``scheduler/`` and ``unet/config.json``).
    """

    mv_model: Path
    recon_model: Path
    svd: Path


# --------------------------------------------------------------------------------------- finding
def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, resolved as ``huggingface_hub`` does (without importing it)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def hf_snapshots(repo_id: str, cache: Path | None = None) -> list[Path]:
    """Snapshot folders of a model repo in the hub cache: the one ``refs/main`` names first, then the
    others, newest first. Empty when the repo is not cached. Reads the cache only."""
    repo = (cache or hf_hub_cache()) / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return []
    found = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    ref = repo / "refs" / "main"
    if ref.is_file():
        main = snapshots / ref.read_text().strip()
        if main in found:
            found.remove(main)
            found.insert(0, main)
    return found


def _weights_in(folder: Path) -> tuple[Path, Path] | None:
    for d in (folder, folder / OFFICIAL_SUBFOLDER):
        mv, rec = d / MV_MODEL_FILE, d / RECON_MODEL_FILE
        if mv.is_file() and rec.is_file():
            return mv, rec
    return None


def _is_svd_folder(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _SVD_REQUIRED)


def locate_official(root: str | os.PathLike | None = None, svd: str | os.PathLike | None = None) -> OfficialPaths:
    """Find the public weights and an SVD img2vid folder (see the module docstring for the order).

    Args:
        root: folder holding ``mv_model_unet.pth`` and ``recon_model.pth`` (directly or in
            ``Ouroboros3D-SVD-LGM/``); ``None`` searches ``$OURO_WEIGHTS``, then the hub cache.
        svd: the SVD img2vid folder; ``None`` searches as described above.

    Raises:
        FileNotFoundError: naming every place searched and what is missing.
    """
    if root is not None:
        weight_dirs = [Path(root).expanduser()]
    else:
        weight_dirs = [Path(os.environ[WEIGHTS_ENV]).expanduser()] if os.environ.get(WEIGHTS_ENV) else []
        weight_dirs += hf_snapshots(OFFICIAL_REPO)
    weights = next(((d, w) for d in weight_dirs if (w := _weights_in(d))), None)
    if weights is None:
        looked = ", ".join(str(d) for d in weight_dirs) or f"(no ${WEIGHTS_ENV}, no {OFFICIAL_REPO} in {hf_hub_cache()})"
        raise FileNotFoundError(
            f"no {MV_MODEL_FILE} + {RECON_MODEL_FILE} found (looked in: {looked}, and their {OFFICIAL_SUBFOLDER}/); "
            f"download {OFFICIAL_REPO} and pass its folder or set ${WEIGHTS_ENV}"
        )
    weight_dir, (mv, rec) = weights

    if svd is not None:
        svd_dirs = [Path(svd).expanduser()]
    else:
        svd_dirs = [Path(os.environ[SVD_ENV]).expanduser()] if os.environ.get(SVD_ENV) else []
        for base in dict.fromkeys([weight_dir, mv.parent]):
            svd_dirs += [base / SVD_FOLDER_NAME, base, base.parent / SVD_FOLDER_NAME]
        svd_dirs += hf_snapshots(SVD_REPO)
    svd_dir = next((d for d in svd_dirs if _is_svd_folder(d)), None)
    if svd_dir is None:
        looked = ", ".join(str(d) for d in dict.fromkeys(svd_dirs))
        raise FileNotFoundError(
            f"found the Ouroboros3D weights in {mv.parent}, but no diffusers-format SVD img2vid folder "
            f"(needs {', '.join(_SVD_REQUIRED)}; looked in: {looked}); download {SVD_REPO} and pass it or set ${SVD_ENV}"
        )
    return OfficialPaths(mv_model=mv, recon_model=rec, svd=svd_dir)


def find_official_weights(
    root: str | os.PathLike | None = None, svd: str | os.PathLike | None = None
) -> OfficialPaths | None:
    """:func:`locate_official`, or ``None`` when something is missing (for checks that skip)."""
    try:
        return locate_official(root, svd)
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------------------- reading
def read_official_state_dict(path: str | os.PathLike) -> tuple[dict[str, Tensor], list[str]]:
    """Read one official ``.pth`` file with ``torch.load(weights_only=True)`` and unwrap it.

    Accepts a flat ``{name: tensor}`` mapping, optionally under a top-level ``state_dict`` entry and
    with one wrapper prefix (:data:`WRAPPER_PREFIXES`) on every key. Zip-format files are
    memory-mapped, so the tensors are not read into memory until used.

    Returns:
        ``(state_dict, notes)``: ``notes`` says what was unwrapped (empty for a plain file).

    Raises:
        CheckpointError: the file is unreadable, pickles anything but tensors and plain containers
            (refused by ``weights_only``; nothing in it runs), or is not a ``{name: tensor}`` mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        # mmap needs the zip format of torch.save; the legacy format is read into memory
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused by torch.load(weights_only=True): it pickles something other than tensors "
            f"({first}); only plain {{name: tensor}} files are read"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: cannot read ({first}); the file may be corrupted or truncated") from exc
    return _unwrap(obj, path)


def _unwrap(obj: object, source: Path | str) -> tuple[dict[str, Tensor], list[str]]:
    notes: list[str] = []
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a {{name: tensor}} mapping, got {type(obj).__name__}")
    if isinstance(obj.get("state_dict"), Mapping):
        others = sorted(str(k) for k in obj if k != "state_dict")
        notes.append("took the top-level 'state_dict' entry" + (f" (ignored: {', '.join(others[:5])})" if others else ""))
        obj = obj["state_dict"]
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise CheckpointError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; expected a flat {{name: tensor}} mapping"
            )
    state = dict(obj)
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                notes.append(f"stripped the prefix {prefix!r} from all {len(state)} keys")
                stripped = True
    return state, notes


# --------------------------------------------------------------------------------------- loading
def _check_matches(
    expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Tensor], source: str, what: str, hint: str
) -> None:
    """Raise a one-line CheckpointError naming the first missing / unexpected / mis-shaped keys."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (first: {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (first: {', '.join(unexpected[:3])})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatch(es) (first: {k} is {list(state[k].shape)} in the file, {list(expected[k])} in {what})")
    raise CheckpointError(f"{source}: does not match {what}: {'; '.join(parts)}; {hint}")


def official_listing(file: str) -> dict[str, tuple[int, ...]]:
    """The public release's tensors in ``file`` (:data:`MV_MODEL_FILE` or :data:`RECON_MODEL_FILE`):
    ``{name: shape}`` in state-dict order, from the listing shipped in ``ouro/assets/official/``."""
    if file not in LISTINGS:
        raise ValueError(f"no listing for {file!r}; choose {MV_MODEL_FILE} or {RECON_MODEL_FILE}")
    text = (LISTING_DIR / LISTINGS[file]).read_text(encoding="utf-8")
    rows = (line.split("\t") for line in text.splitlines() if line.strip())
    return {name: tuple(json.loads(shape)) for name, shape in rows}


def check_official_file(state: Mapping[str, Tensor], file: str, source: str | None = None) -> None:
    """Refuse a state dict that is not the public release's ``file`` (a truncated download, another
    fine-tune): :class:`CheckpointError` naming the first missing / unexpected / mis-shaped keys."""
    _check_matches(
        official_listing(file), state, source or file, f"the public release's {file} (ouro/assets/official/{LISTINGS[file]})",
        "is the download complete, and is it the public Ouroboros3D release (not a fine-tune of other sizes)?",
    )


def _target_dtype(state: Mapping[str, Tensor], dtype: torch.dtype | None, source: str) -> torch.dtype | None:
    """The dtype floating tensors get: ``dtype``, else the file's (the majority by size if mixed)."""
    if dtype is not None:
        return dtype
    sizes: Counter[torch.dtype] = Counter()
    for t in state.values():
        if t.is_floating_point():
            sizes[t.dtype] += t.numel()
    if len(sizes) > 1:
        common = sizes.most_common(1)[0][0]
        logger.info("%s: mixed floating dtypes %s; casting all to %s", source, sorted(map(str, sizes)), common)
        return common
    return None


def _assign_strict(model: nn.Module, state: Mapping[str, Tensor], source: str, what: str, dtype: torch.dtype | None) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_matches(expected, state, source, f"{what} (strict loading)", "is it the right file for this preset?")
    target = _target_dtype(state, dtype, source)
    if target is not None:
        state = {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:  # the check above should have caught it; keep the message one line
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{source}: cannot be loaded into {what} ({first})") from exc
    if not any(t.is_meta for t in state.values()):
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:  # a non-persistent buffer built on meta: the models must not have any
            raise RuntimeError(f"{what}: {left[0]} (and {len(left) - 1} more) left unmaterialised after loading {source}")


def _svd_unet_heads(svd: Path | None, config: OuroConfig) -> tuple[OuroConfig, list[str]]:
    """Check the SVD folder's ``unet/config.json`` (if any) against the preset; adopt its heads.

    The public code builds its UNet from that file, so its ``num_attention_heads`` decide how the
    attention splits (same shapes, different outputs; OFFICIAL.md 4.2).
    """
    path = svd / "unet" / "config.json" if svd is not None else None
    if path is None or not path.is_file():
        return config, []
    try:
        hub = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from None
    gen = config.generator
    for hub_key, field in _UNET_SHAPE_FIELDS.items():
        if hub_key in hub:
            value = tuple(hub[hub_key]) if isinstance(hub[hub_key], list) else hub[hub_key]
            if value != getattr(gen, field):
                raise CheckpointError(
                    f"{path}: {hub_key}={value!r}, but the {config.name!r} preset has {getattr(gen, field)!r}; "
                    f"is this the SVD img2vid folder for this preset?"
                )
    heads = hub.get("num_attention_heads")
    if heads is None:
        return config, []
    heads = tuple(heads) if isinstance(heads, list) else (int(heads),) * len(gen.block_out_channels)
    if heads == tuple(gen.num_attention_heads):
        return config, []
    note = (
        f"{path}: num_attention_heads {heads} (preset: {tuple(gen.num_attention_heads)}); "
        "using the folder's, as the public code does"
    )
    generator = dataclasses.replace(gen, num_attention_heads=heads)
    return dataclasses.replace(config, generator=generator), [note]


def load_official_state_dicts(
    mv_state: Mapping[str, Tensor],
    recon_state: Mapping[str, Tensor],
    preset: str | OuroConfig = "paper",
    dtype: torch.dtype | None = None,
    sources: tuple[str, str] = (MV_MODEL_FILE, RECON_MODEL_FILE),
) -> tuple[nn.Module, nn.Module]:
    """Build ``(generator, reconstructor)`` on ``meta`` with ``compat="official"`` and assign the
    state dicts strictly (the path every official load takes; meta tensors in, meta models out).

    Args:
        mv_state, recon_state: unwrapped ``{name: tensor}`` mappings (:func:`read_official_state_dict`).
        preset: the preset whose sizes the files have (``paper`` for the release).
        dtype: cast floating tensors to this; ``None`` keeps the files' dtype.
        sources: names used in error messages (the files).

    Raises:
        CheckpointError: missing, unexpected or mis-shaped keys, naming the source and the keys.
    """
    from ouro.models import build_models

    config = get_preset(preset) if isinstance(preset, str) else preset
    if config.name == "paper":  # the release's sizes: its own listings name what a damaged file lacks
        check_official_file(mv_state, MV_MODEL_FILE, sources[0])
        check_official_file(recon_state, RECON_MODEL_FILE, sources[1])
    mv_model, reconstructor = build_models(config, device="meta", compat="official")
    _assign_strict(mv_model, mv_state, sources[0], f"the {config.name!r} generator (MultiViewUNet)", dtype)
    _assign_strict(reconstructor, recon_state, sources[1], f"the {config.name!r} reconstructor (LGM)", dtype)
    return mv_model, reconstructor


def _svd_variant(folder: Path, stem: str) -> str | None:
    """``None`` when ``folder/stem.safetensors`` exists, ``"fp16"`` when only the fp16 variant does."""
    if (folder / f"{stem}.safetensors").is_file() or (folder / f"{stem}.safetensors.index.json").is_file():
        return None
    if (folder / f"{stem}.fp16.safetensors").is_file() or (folder / f"{stem}.safetensors.index.fp16.json").is_file():
        return "fp16"
    raise CheckpointError(
        f"{folder}: no {stem}.safetensors (nor its fp16 variant); only safetensors weights are read, never pickle (.bin)"
    )


def _load_conditioner(svd: Path, dtype: torch.dtype | None) -> nn.Module:
    """SVD's VAE + CLIP from a diffusers folder; also one holding only the fp16 variant files
    (what ``from_pretrained(..., variant="fp16")`` downloads)."""
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPImageProcessorPil, CLIPVisionModelWithProjection

    from ouro.models.svd_parts import SVDConditioner

    vae_variant = _svd_variant(svd / "vae", "diffusion_pytorch_model")
    clip_variant = _svd_variant(svd / "image_encoder", "model")
    try:
        if vae_variant is None and clip_variant is None:
            return SVDConditioner.from_pretrained(svd, torch_dtype=dtype)
        kwargs = {"torch_dtype": dtype} if dtype is not None else {}
        vae = AutoencoderKLTemporalDecoder.from_pretrained(svd / "vae", variant=vae_variant, use_safetensors=True, **kwargs)
        clip_kwargs = {"dtype": dtype} if dtype is not None else {}
        enc = CLIPVisionModelWithProjection.from_pretrained(
            svd / "image_encoder", variant=clip_variant, use_safetensors=True, **clip_kwargs
        )
        fe = CLIPImageProcessorPil.from_pretrained(svd / "feature_extractor")
        sched = svd / "scheduler" / "scheduler_config.json"
        return SVDConditioner(vae.eval(), enc.eval(), fe, json.loads(sched.read_text()) if sched.is_file() else {})
    except (OSError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{svd}: cannot load SVD's VAE / CLIP ({first})") from None


def load_official(
    paths: OfficialPaths | str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    preset: str | OuroConfig = "paper",
) -> OuroModels:
    """Load the public Ouroboros3D weights as :class:`~ouro.io.checkpoint.OuroModels`, ``compat="official"``.

    Args:
        paths: :class:`OfficialPaths`, a folder with the two ``.pth`` files (SVD found as in
            :func:`locate_official`), or ``None`` to search.
        device: where the models go.
        dtype: floating dtype of all weights; ``None`` keeps the ``.pth`` files' dtype for F and G
            (fp16 or fp32) and the SVD folder's for the VAE / CLIP.
        preset: the sizes the files have; ``paper`` for the release (tests use ``tiny``).

    Returns:
        ``OuroModels`` in eval mode with ``config`` = the preset (with the SVD folder's attention
        heads if its ``unet/config.json`` differs) and ``compat="official"``.

    Raises:
        CheckpointError: a file that is unreadable, refused by ``weights_only``, or does not match
            the preset strictly; the message names the file and the first offending keys.
        FileNotFoundError: when searching found nothing.
    """
    if not isinstance(paths, OfficialPaths):
        paths = locate_official(paths)
    config = get_preset(preset) if isinstance(preset, str) else preset
    config, notes = _svd_unet_heads(paths.svd, config)
    mv_state, mv_notes = read_official_state_dict(paths.mv_model)
    recon_state, recon_notes = read_official_state_dict(paths.recon_model)
    notes += [f"{paths.mv_model}: {n}" for n in mv_notes] + [f"{paths.recon_model}: {n}" for n in recon_notes]
    generator, reconstructor = load_official_state_dicts(
        mv_state, recon_state, config, dtype, sources=(str(paths.mv_model), str(paths.recon_model))
    )
    del mv_state, recon_state
    conditioner = _load_conditioner(paths.svd, dtype)
    for note in notes:
        logger.info(note)
    models = OuroModels(generator, reconstructor, conditioner, config, compat="official")
    return models.to(device=device).eval()


def convert_official(
    paths: OfficialPaths | str | os.PathLike | None,
    out_dir: str | os.PathLike,
    dtype: torch.dtype | None = None,
    preset: str | OuroConfig = "paper",
    overwrite: bool = False,
) -> Path:
    """Convert the public weights once into an ouro checkpoint folder (safetensors + JSON).

    Later loads use :func:`~ouro.io.checkpoint.load_checkpoint` and need no pickle-format file.
    Besides the checkpoint, ``out_dir/official_source.json`` records the source files.

    Args:
        paths: as for :func:`load_official`.
        out_dir: the checkpoint folder to write (atomically).
        dtype: weights dtype to store; ``None`` keeps the source files' (fp16 stays fp16).
        preset: as for :func:`load_official`.
        overwrite: replace an existing checkpoint at ``out_dir`` (otherwise ``FileExistsError``).

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    if is_checkpoint(out_dir) and not overwrite:
        raise FileExistsError(f"{out_dir} already holds an ouro checkpoint; pass overwrite=True to replace it")
    if not isinstance(paths, OfficialPaths):
        paths = locate_official(paths)
    models = load_official(paths, device="cpu", dtype=dtype, preset=preset)
    save_checkpoint(out_dir, models)
    source = {
        "converted_from": OFFICIAL_REPO,
        "svd": SVD_REPO,
        "files": {
            "mv_model": str(paths.mv_model.resolve()),
            "recon_model": str(paths.recon_model.resolve()),
            "svd": str(paths.svd.resolve()),
        },
        "bytes": {"mv_model": paths.mv_model.stat().st_size, "recon_model": paths.recon_model.stat().st_size},
    }
    (out_dir / "official_source.json").write_text(json.dumps(source, indent=2) + "\n")
    return out_dir
