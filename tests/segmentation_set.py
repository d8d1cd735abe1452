"""Photos with a known foreground: RGBA renders composited onto real and studio backgrounds.

The segmentation benchmark (``benchmarks/segment.py``) and its test (``tests/test_segment.py``)
both build their images here, so the figures in benchmarks/README.md and the test's bounds come
from the same set.

Objects are the repository's own RGBA renders (``examples/*.png``: 256 px Workbench renders of
three held-out furniture models; ``tests/data/demo-heldout/kitchenChair``: 64 px views, enlarged).
Backgrounds are either *studio* (plain, gradient, plain or gradient with a soft contact shadow,
all with a little sensor noise) or *textured*: photos and textures bundled inside scikit-image's
wheel (``skimage.data``: brick, grass, gravel, coffee, astronaut, rocket, chelsea; nothing is
fetched). The object is alpha-composited (premultiplied, so edges are anti-aliased as in a photo)
at a given scale and position; its alpha is the known mask (foreground = alpha > 0.5).

    >>> photo = build(SPECS[0])
    >>> photo.rgb.shape, photo.alpha.shape        # [H, W, 3] uint8, [H, W] float32 in [0, 1]
    ((240, 320, 3), (240, 320))
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

#: name -> (file, enlargement factor); the RGBA renders the set is made of.
OBJECTS = {
    "chair": (ROOT / "examples" / "chair.png", 1),
    "sofa": (ROOT / "examples" / "sofa.png", 1),
    "chicken": (ROOT / "examples" / "chicken.png", 1),
    "kitchen-chair-side": (ROOT / "tests" / "data" / "demo-heldout" / "kitchenChair" / "000" / "004.png", 3),
    "kitchen-chair-back": (ROOT / "tests" / "data" / "demo-heldout" / "kitchenChair" / "000" / "008.png", 3),
}

#: scikit-image's photos and textures that ship inside its wheel (``skimage/data/*.png|jpg``);
#: the others in ``skimage.data`` are downloaded by pooch on first use and are never used here.
TEXTURES = ("brick", "grass", "gravel", "coffee", "astronaut", "rocket", "chelsea")

#: composite size, pixels (height, width): a landscape photo
SIZE = (240, 320)


@dataclass(frozen=True)
class Spec:
    """One composite.

    Attributes:
        object: a key of :data:`OBJECTS`.
        background: ``plain:R,G,B``, ``gradient:R,G,B:R,G,B`` (top to bottom colour),
            ``shadow:<plain or gradient spec>`` (the same with a soft contact shadow under the
            object) or the name of a :data:`TEXTURES` image.
        scale: the object's longer side as a fraction of the image height.
        centre: the object's box centre ``(x, y)`` as fractions of the width and height.
        mirror: flip the object left-right.
    """

    object: str
    background: str
    scale: float = 0.6
    centre: tuple[float, float] = (0.5, 0.5)
    mirror: bool = False

    @property
    def kind(self) -> str:
        """``plain`` (plain, gradient, shadow: a studio backdrop) or ``textured`` (a photo or texture)."""
        return "plain" if self.background.split(":")[0] in ("plain", "gradient", "shadow") else "textured"

    @property
    def name(self) -> str:
        x, y = self.centre
        back = self.background.replace(":", "-").replace(",", ".")
        return f"{self.object}{'-m' if self.mirror else ''}_{back}_s{self.scale:.2f}_x{x:.2f}_y{y:.2f}"


@dataclass
class Composite:
    """A photo with its known foreground.

    Attributes:
        rgb: ``[H, W, 3]`` uint8.
        alpha: ``[H, W]`` float32 in [0, 1], the object's coverage of each pixel.
        spec: how it was made.
    """

    rgb: np.ndarray
    alpha: np.ndarray
    spec: Spec

    @property
    def mask(self) -> np.ndarray:  # [H, W] bool
        return self.alpha > 0.5

    def to_pil(self) -> Image.Image:
        return Image.fromarray(self.rgb)


_STUDIO = {
    "white": "plain:245,245,245",
    "grey": "plain:190,190,190",
    "blue": "plain:70,100,150",
    "beige": "plain:222,210,185",
    "grad-grey": "gradient:235,235,235:150,150,150",
    "grad-blue": "gradient:170,200,230:60,80,120",
    "grad-warm": "gradient:250,235,210:170,140,110",
}

#: The benchmark set: 21 studio and 21 textured composites, every object on several backgrounds
#: at several scales and positions (fixed, not random, so the table can be reproduced).
SPECS: tuple[Spec, ...] = (
    # studio: plain (7)
    Spec("chair", _STUDIO["white"]),
    Spec("sofa", _STUDIO["grey"], 0.7, (0.45, 0.55)),
    Spec("chicken", _STUDIO["blue"], 0.5, (0.55, 0.5)),
    Spec("kitchen-chair-side", _STUDIO["beige"], 0.8),
    Spec("kitchen-chair-back", _STUDIO["white"], 0.6, (0.4, 0.5)),
    Spec("sofa", _STUDIO["beige"], 0.5, (0.6, 0.45), mirror=True),
    Spec("chicken", _STUDIO["grey"], 0.75, (0.5, 0.55)),
    # studio: gradient (7)
    Spec("chair", _STUDIO["grad-grey"], 0.7),
    Spec("sofa", _STUDIO["grad-blue"], 0.6, (0.5, 0.55)),
    Spec("chicken", _STUDIO["grad-warm"], 0.6, (0.45, 0.5)),
    Spec("kitchen-chair-side", _STUDIO["grad-blue"], 0.6, (0.55, 0.5), mirror=True),
    Spec("kitchen-chair-back", _STUDIO["grad-warm"], 0.75),
    Spec("chair", _STUDIO["grad-blue"], 0.5, (0.6, 0.55), mirror=True),
    Spec("sofa", _STUDIO["grad-grey"], 0.8, (0.5, 0.5)),
    # studio: shadowed (7)
    Spec("chair", "shadow:" + _STUDIO["grey"], 0.6),
    Spec("sofa", "shadow:" + _STUDIO["white"], 0.6, (0.5, 0.45)),
    Spec("chicken", "shadow:" + _STUDIO["grad-grey"], 0.6),
    Spec("kitchen-chair-side", "shadow:" + _STUDIO["beige"], 0.6, (0.45, 0.5)),
    Spec("kitchen-chair-back", "shadow:" + _STUDIO["grad-warm"], 0.7, (0.55, 0.5)),
    Spec("sofa", "shadow:" + _STUDIO["grad-blue"], 0.75, (0.5, 0.5), mirror=True),
    Spec("chicken", "shadow:" + _STUDIO["white"], 0.5, (0.55, 0.45)),
    # textured: every texture three times, with different objects, scales and positions (21)
    Spec("chair", "brick", 0.6),
    Spec("sofa", "brick", 0.75, (0.45, 0.55)),
    Spec("chicken", "brick", 0.5, (0.6, 0.45)),
    Spec("sofa", "grass", 0.6),
    Spec("kitchen-chair-side", "grass", 0.7, (0.45, 0.5)),
    Spec("chair", "grass", 0.5, (0.55, 0.55), mirror=True),
    Spec("chicken", "gravel", 0.6),
    Spec("chair", "gravel", 0.8, (0.5, 0.5)),
    Spec("kitchen-chair-back", "gravel", 0.6, (0.4, 0.5)),
    Spec("chair", "coffee", 0.6),
    Spec("chicken", "coffee", 0.7, (0.55, 0.5)),
    Spec("sofa", "coffee", 0.5, (0.4, 0.55)),
    Spec("sofa", "astronaut", 0.6),
    Spec("kitchen-chair-side", "astronaut", 0.6, (0.6, 0.5)),
    Spec("chicken", "astronaut", 0.8, (0.5, 0.5), mirror=True),
    Spec("chicken", "rocket", 0.6),
    Spec("chair", "rocket", 0.7, (0.45, 0.5)),
    Spec("kitchen-chair-back", "rocket", 0.5, (0.55, 0.55)),
    Spec("chair", "chelsea", 0.6, mirror=True),
    Spec("sofa", "chelsea", 0.6, (0.55, 0.45)),
    Spec("kitchen-chair-side", "chelsea", 0.75, (0.5, 0.5)),
)


@lru_cache(maxsize=None)
def load_object(name: str) -> tuple[np.ndarray, np.ndarray]:
    """An object render cropped to its alpha box: ``(premultiplied rgb [h, w, 3], alpha [h, w])``, float32."""
    path, factor = OBJECTS[name]
    with Image.open(path) as im:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    rows, cols = np.flatnonzero(rgba[..., 3].max(1) > 0), np.flatnonzero(rgba[..., 3].max(0) > 0)
    rgba = rgba[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    premul = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=-1)
    if factor != 1:
        premul = _resize(premul, (premul.shape[0] * factor, premul.shape[1] * factor))
    return premul[..., :3], premul[..., 3]


@lru_cache(maxsize=None)
def load_texture(name: str) -> np.ndarray:
    """A bundled scikit-image photo as float32 RGB ``[h, w, 3]`` in [0, 1] (grey textures repeated to 3 channels)."""
    import skimage.data

    if name not in TEXTURES:
        raise KeyError(f"{name!r} is not one of the bundled backgrounds {TEXTURES}")
    image = getattr(skimage.data, name)().astype(np.float32) / 255.0
    return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image[..., :3]


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:  # float [h, w, C] -> [H, W, C]
    import torch

    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    out = torch.nn.functional.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).numpy()


def _colour(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split(",")], dtype=np.float32) / 255.0


def _backdrop(spec: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:  # [H, W, 3] in [0, 1]
    h, w = shape
    kind, *args = spec.split(":")
    if kind == "plain":
        image = np.broadcast_to(_colour(args[0]), (h, w, 3)).copy()
    elif kind == "gradient":
        t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        image = np.broadcast_to((1 - t) * _colour(args[0]) + t * _colour(args[1]), (h, w, 3)).copy()
    elif kind in TEXTURES:
        tex = load_texture(kind)
        scale = max(h / tex.shape[0], w / tex.shape[1])  # cover, then crop the middle
        th, tw = max(h, round(tex.shape[0] * scale)), max(w, round(tex.shape[1] * scale))
        tex = _resize(tex, (th, tw))
        top, left = (th - h) // 2, (tw - w) // 2
        return tex[top : top + h, left : left + w]
    else:
        raise ValueError(f"unknown background {spec!r}")
    return image + rng.normal(0.0, 1.5 / 255.0, image.shape).astype(np.float32)  # sensor noise


def build(spec: Spec, size: tuple[int, int] = SIZE) -> Composite:
    """Render one composite (deterministic for a given spec and size)."""
    from scipy import ndimage

    h, w = size
    rng = np.random.default_rng(zlib.crc32(spec.name.encode()))  # the noise is fixed by the spec
    premul, alpha = load_object(spec.object)
    if spec.mirror:
        premul, alpha = premul[:, ::-1], alpha[:, ::-1]
    factor = spec.scale * h / max(alpha.shape)
    oh, ow = max(1, round(alpha.shape[0] * factor)), max(1, round(alpha.shape[1] * factor))
    obj = _resize(np.concatenate([premul, alpha[..., None]], axis=-1), (oh, ow))
    top, left = round(spec.centre[1] * h - oh / 2), round(spec.centre[0] * w - ow / 2)
    if not (0 <= top and top + oh <= h and 0 <= left and left + ow <= w):
        raise ValueError(f"{spec.name}: the object does not fit inside the image")

    back_spec = spec.background
    shadow = back_spec.startswith("shadow:")
    back = _backdrop(back_spec.split(":", 1)[1] if shadow else back_spec, size, rng)
    layer = np.zeros((h, w, 4), dtype=np.float32)
    layer[top : top + oh, left : left + ow] = obj
    a = np.clip(layer[..., 3], 0.0, 1.0)
    if shadow:  # a soft elliptical contact shadow under the object's base, darkening the backdrop by up to 45 %
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy, rx, ry = left + ow / 2, top + oh, 0.55 * ow, 0.08 * oh + 2
        ellipse = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0).astype(np.float32)
        dark = ndimage.gaussian_filter(ellipse, sigma=0.04 * oh + 1)
        back = back * (1 - 0.45 * dark / max(float(dark.max()), 1e-6))[..., None]
    rgb = layer[..., :3] + (1 - a[..., None]) * back
    return Composite((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), a, spec)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two ``[H, W]`` masks (foreground: > 0.5 for float masks)."""
    p = pred > 0.5 if pred.dtype != bool else pred
    t = truth > 0.5 if truth.dtype != bool else truth
    union = np.logical_or(p, t).sum()
    return float(np.logical_and(p, t).sum() / union) if union else 1.0
