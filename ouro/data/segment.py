"""Foreground masks for input photos, and a check that says when a mask looks wrong.

The methods behind ``ouro sample --background`` (:data:`ouro.pipelines.choices.BACKGROUND_METHODS`):

* ``grabcut`` (built in, offline, CPU): OpenCV GrabCut seeded from the image border. The border
  band (3 % of the shorter side) is certain background; the border's colours are clustered
  (k-means, 6 clusters, CIELAB with lightness weighted 0.3 so that shadows and shading count
  little) and pixels far from every cluster seed the foreground. GrabCut (5 iterations) then
  fits colour models to both and cuts along image edges. Clean-up: of the pieces found, the one
  with the most centre-weighted area is kept (photos centre their subject); holes under 0.2 % of
  the image are filled, larger ones kept (a chair back is see-through); the edge is feathered by
  a 1-pixel Gaussian. When the seeds or the result are empty, GrabCut runs again from the whole
  inner rectangle. Images are segmented at most 512 px on the longer side and the mask resized back.
* ``border``: the earlier rule. The background colour is the median of the image border, and a
  pixel is foreground when its colour differs from it by more than ``threshold`` (max over
  channels, 0-1 scale); pieces under 1 % of the foreground are dropped, holes filled. Good on
  plain studio backdrops, wrong on anything else.
* ``rembg``: rembg's U-2-Net, used only when the ``rembg`` package is installed **and** one of
  :data:`REMBG_MODELS` is already in ``$U2NET_HOME`` (default ``~/.u2net``). It is loaded as
  rembg's ``u2net_custom`` session from that path, so nothing is ever downloaded.
* ``auto``: an RGBA image's alpha when it has transparent pixels, else ``rembg`` when available,
  else ``grabcut`` (the best method measured in benchmarks/README.md, "Foreground segmentation").

:func:`check_mask` runs on every mask (the alpha of an RGBA input and a ``--mask`` file too) and
lists what looks wrong: too small, too large, running along the image border, split into pieces;
for masks estimated from the colours also an edge that follows no colour change, and holes over
:data:`MAX_HOLES` of the outline (right for a see-through chair back, wrong for a shaded surface
that GrabCut cut away: colour alone cannot tell the two apart, so the user is asked to look).

Arrays: ``rgb`` is ``[H, W, 3]`` uint8; masks are ``[H, W]`` float32 in [0, 1] (foreground > 0.5)
in the image's own pixel frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "SegmentationError",
    "MaskCheck",
    "Foreground",
    "REMBG_MODELS",
    "border_rule_mask",
    "grabcut_mask",
    "rembg_model",
    "rembg_unavailable_reason",
    "rembg_mask",
    "mask_from_image",
    "check_mask",
    "segment",
]

#: rembg model files looked for in ``$U2NET_HOME`` (default ``~/.u2net``), first found wins;
#: all three are U-2-Net variants that rembg's ``u2net_custom`` session runs.
REMBG_MODELS = ("u2net.onnx", "silueta.onnx", "u2netp.onnx")

#: Plausibility limits of :func:`check_mask` (fractions); see benchmarks/README.md for how often
#: each fires on the known masks of the composite test set.
MIN_AREA = 0.01  #: foreground share of the image below which the mask is "too small"
MAX_AREA = 0.6  #: ... above which it is "too large" (the background came with it)
BORDER_WIDTH = 0.05  #: the border ring checked, as a fraction of the shorter side
MAX_BORDER = 0.1  #: share of that ring the mask may cover
MIN_LARGEST_SHARE = 0.75  #: share of the foreground the largest piece must hold
MAX_EDGE_OVERLAP = 0.5  #: colour-histogram overlap of the bands inside and outside the mask's edge
#: holes (enclosed background) as a share of the filled outline, above which an *estimated* mask
#: is flagged: right for a see-through part (a chair back), wrong for a shaded surface cut away
MAX_HOLES = 0.15

_WORK_SIDE = 512  # GrabCut's working resolution (longer side, pixels)
_BAND = 0.03  # certain-background border band, fraction of the shorter side
_SEED_CLUSTERS = 6
_SEED_L_WEIGHT = 0.3
_SEED_QUANTILE = 0.98  # the seed threshold: this quantile of the border's own distances ...
_SEED_MIN_DISTANCE = 12.0  # ... but at least this (OpenCV 8-bit CIELAB units)
_MIN_RESULT = 0.005  # a GrabCut result under this share of the image counts as empty
_MAX_HOLE = 0.002  # holes under this share of the image are filled
_FEATHER_SIGMA = 1.0  # pixels at the working resolution


class SegmentationError(ValueError):
    """A foreground method that cannot run or a mask that cannot be used; the message says what to do."""


@dataclass
class MaskCheck:
    """What :func:`check_mask` measured, and the problems it found (empty when the mask looks plausible).

    Attributes:
        area: foreground share of the image.
        border: share of the border ring (:data:`BORDER_WIDTH`) covered by the mask.
        largest_share: share of the foreground held by its largest piece (before any clean-up).
        pieces: pieces holding at least 1 % of the foreground.
        holes: share of the filled outline that is enclosed background.
        edge_overlap: colour-histogram overlap (0 = disjoint, 1 = same colours) of the bands just
            inside and just outside the mask's edge; None when not measured (alpha, mask files).
        problems: one short phrase per failed test.
    """

    area: float
    border: float
    largest_share: float
    pieces: int
    holes: float
    edge_overlap: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Foreground:
    """The mask an input was cut out with.

    Attributes:
        mask: ``[H, W]`` float32 in [0, 1], the image's frame.
        method: ``alpha``, ``mask-file``, ``rembg``, ``grabcut`` or ``border``.
        check: the plausibility check of ``mask``.
    """

    mask: np.ndarray
    method: str
    check: MaskCheck

    def warning(self, name: str, mask_file: str = "mask.png") -> str | None:
        """One line saying what looks wrong and what to do, or None when the mask looks plausible.

        ``name`` names the input, ``mask_file`` where the user can look at the mask.
        """
        if self.check.ok:
            return None
        fixes = "pass --mask FILE (white = object) or an RGBA image with the object opaque"
        if self.method in ("grabcut", "border"):
            fixes += ", or install rembg with its model on disk (--background rembg)"
        elif self.method in ("alpha", "mask-file"):
            fixes = "check the mask; " + fixes
        return f"{name}: the {self.method} mask looks wrong: it {'; it '.join(self.check.problems)}; see {mask_file}; {fixes}"


# ------------------------------------------------------------------------------------ methods
def border_rule_mask(rgb: np.ndarray, threshold: float = 0.08) -> np.ndarray:  # [H, W, 3] -> [H, W] bool
    """The border-colour rule (module docstring). ``rgb`` uint8 or float in [0, 1]."""
    from scipy import ndimage

    rgb = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    fg = np.abs(rgb - background).max(axis=-1) > threshold
    labels, n = ndimage.label(fg)
    if n > 1:
        sizes = ndimage.sum(fg, labels, index=np.arange(1, n + 1))
        keep = np.flatnonzero(sizes >= 0.01 * fg.sum()) + 1
        fg = np.isin(labels, keep)
    return ndimage.binary_fill_holes(fg)


def _ring(shape: tuple[int, int], width: int) -> np.ndarray:  # [H, W] bool: pixels within `width` of the edge
    ring = np.zeros(shape, dtype=bool)
    ring[:width], ring[-width:], ring[:, :width], ring[:, -width:] = True, True, True, True
    return ring


def _seed_distance(rgb: np.ndarray, ring: np.ndarray) -> np.ndarray:  # [H, W]: CIELAB distance to the nearest border colour
    import cv2

    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] *= _SEED_L_WEIGHT
    samples = np.ascontiguousarray(lab[ring])
    k = min(_SEED_CLUSTERS, len(samples))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)
    _, _, centres = cv2.kmeans(samples, k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    dist = np.full(lab.shape[:2], np.inf, dtype=np.float32)
    for c in centres:  # a loop over k keeps memory at one [H, W] plane
        dist = np.minimum(dist, np.sqrt(((lab - c) ** 2).sum(-1)))
    return dist


def _grabcut(rgb: np.ndarray, seeds: np.ndarray | None, band: np.ndarray, iterations: int) -> np.ndarray:
    """GrabCut from ``seeds`` ([H, W] bool probable foreground; None: the whole inner rectangle) -> [H, W] bool."""
    import cv2

    trimap = np.full(rgb.shape[:2], cv2.GC_PR_BGD, dtype=np.uint8)
    trimap[seeds if seeds is not None else slice(None)] = cv2.GC_PR_FGD
    trimap[band] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's GMM initialisation draws from OpenCV's RNG
    cv2.grabCut(np.ascontiguousarray(rgb[..., ::-1]), trimap, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    return (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)


def _keep_central_piece(fg: np.ndarray, max_hole: float) -> np.ndarray:
    """The piece with the most centre-weighted area (Gaussian, sigma 30 % of each side), small holes filled."""
    from scipy import ndimage

    labels, n = ndimage.label(fg)
    if n == 0:
        return fg
    h, w = fg.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    weight = np.exp(-0.5 * (((xx - w / 2) / (0.3 * w)) ** 2 + ((yy - h / 2) / (0.3 * h)) ** 2))
    score = ndimage.sum(weight, labels, index=np.arange(1, n + 1))
    fg = labels == int(np.argmax(score)) + 1
    holes = ndimage.binary_fill_holes(fg) & ~fg
    hole_labels, m = ndimage.label(holes)
    if m:
        sizes = ndimage.sum(holes, hole_labels, index=np.arange(1, m + 1))
        fg |= np.isin(hole_labels, np.flatnonzero(sizes < max_hole * fg.size) + 1)
    return fg


@dataclass
class GrabCutResult:
    """:func:`grabcut_mask`'s output: ``mask`` ``[H, W]`` float32 (feathered, the image's frame);
    ``largest_share`` the share of GrabCut's raw foreground that the kept piece holds."""

    mask: np.ndarray
    largest_share: float


def grabcut_mask(rgb: np.ndarray, *, iterations: int = 5, max_hole: float = _MAX_HOLE, work_side: int = _WORK_SIDE) -> GrabCutResult:
    """The built-in method (module docstring) on ``rgb`` ``[H, W, 3]`` uint8.

    Args:
        iterations: GrabCut iterations.
        max_hole: holes smaller than this share of the image are filled (1.0: all holes).
        work_side: the longer side GrabCut runs at; larger images are shrunk (area filter) first.
    """
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, work_side / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    band = _ring(small.shape[:2], max(2, round(_BAND * min(small.shape[:2]))))
    dist = _seed_distance(small, band)
    threshold = max(_SEED_MIN_DISTANCE, float(np.quantile(dist[band], _SEED_QUANTILE)))
    seeds = (dist > threshold) & ~band
    raw = _grabcut(small, seeds if seeds.mean() >= 0.01 else None, band, iterations)
    fg = _keep_central_piece(raw, max_hole)
    if fg.mean() < _MIN_RESULT:  # the colour seeds found nothing that GrabCut kept: start from the whole rectangle
        raw = _grabcut(small, None, band, iterations)
        fg = _keep_central_piece(raw, max_hole)
    share = float((raw & fg).sum() / max(int(raw.sum()), 1))
    soft = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), _FEATHER_SIGMA)
    if soft.shape != (h, w):
        soft = cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR)
    return GrabCutResult(np.clip(soft, 0.0, 1.0), share)


def rembg_model() -> Path | None:
    """The first of :data:`REMBG_MODELS` in ``$U2NET_HOME`` (default ``~/.u2net``), or None."""
    home = Path(os.environ.get("U2NET_HOME") or Path.home() / ".u2net").expanduser()
    return next((home / f for f in REMBG_MODELS if (home / f).is_file()), None)


def rembg_unavailable_reason() -> str | None:
    """None when rembg can run offline; else what is missing and how to fix it, as one phrase."""
    import importlib.util

    if importlib.util.find_spec("rembg") is None:
        return "rembg is not installed (pip install rembg)"
    if rembg_model() is None:
        home = os.environ.get("U2NET_HOME") or "~/.u2net"
        return f"no rembg model in {home} (ouro never downloads one: put {REMBG_MODELS[0]} from rembg's releases there, or set $U2NET_HOME)"
    return None


def rembg_mask(image: Image.Image) -> np.ndarray:  # -> [H, W] float32
    """rembg's U-2-Net mask from the model file on disk; raises :class:`SegmentationError` when it cannot run."""
    reason = rembg_unavailable_reason()
    if reason is not None:
        raise SegmentationError(f"--background rembg: {reason}; or use --background grabcut")
    import rembg

    path = rembg_model()
    try:  # u2net_custom loads the given file and has nothing to download
        session = rembg.new_session("u2net_custom", model_path=str(path))
        out = rembg.remove(image.convert("RGB"), session=session, only_mask=True)
    except Exception as exc:  # noqa: BLE001 - any failure of the optional backend is reported the same way
        raise SegmentationError(f"rembg could not run {path} ({exc}); check the file, or use --background grabcut") from None
    return np.asarray(out.convert("L"), dtype=np.float32) / 255.0


def mask_from_image(mask: Image.Image, size: tuple[int, int], name: str = "mask") -> np.ndarray:
    """A user's mask image as ``[H, W]`` float32: its alpha when it has transparent pixels, else its grey level.

    ``size`` is the input image's ``(width, height)``; a mask of another size is refused.
    """
    if mask.size != size:
        raise SegmentationError(
            f"{name}: mask is {mask.size[0]}x{mask.size[1]} but the image is {size[0]}x{size[1]}; give a mask of the same size"
        )
    alpha = _alpha(mask)
    return alpha if alpha is not None else np.asarray(mask.convert("L"), dtype=np.float32) / 255.0


def _alpha(image: Image.Image) -> np.ndarray | None:
    """The alpha channel as ``[H, W]`` float32 when the image has one with any transparent pixel, else None."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    if not has_alpha:
        return None
    alpha = np.asarray(image.convert("RGBA"), dtype=np.float32)[..., 3] / 255.0
    return alpha if (alpha < 0.5).any() else None


# --------------------------------------------------------------------------------------- check
def _edge_overlap(rgb: np.ndarray, fg: np.ndarray, width: int, bins: int = 8) -> float | None:
    """Histogram intersection of the colours within ``width`` px inside and outside the mask's edge."""
    from scipy import ndimage

    structure = np.ones((3, 3), dtype=bool)
    inner = fg & ~ndimage.binary_erosion(fg, structure, iterations=width)
    outer = ndimage.binary_dilation(fg, structure, iterations=width) & ~fg
    if not inner.any() or not outer.any():
        return None
    q = rgb.astype(np.int64) * bins // 256
    index = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    h_in = np.bincount(index[inner], minlength=bins**3) / inner.sum()
    h_out = np.bincount(index[outer], minlength=bins**3) / outer.sum()
    return float(np.minimum(h_in, h_out).sum())


def check_mask(mask: np.ndarray, rgb: np.ndarray | None = None, *, largest_share: float | None = None) -> MaskCheck:
    """Plausibility of a foreground mask ``[H, W]`` (float, foreground > 0.5, or bool).

    Args:
        rgb: ``[H, W, 3]`` uint8 image the mask was estimated from; when given, the edge-colour and
            the holes tests run too (leave it out for masks a user or a renderer made: their
            edges and holes are theirs to decide).
        largest_share: the largest piece's share measured before a clean-up kept only it (GrabCut);
            by default measured on ``mask``.
    """
    from scipy import ndimage

    fg = mask > 0.5 if mask.dtype != bool else mask
    h, w = fg.shape
    area = float(fg.mean())
    border = float(fg[_ring((h, w), max(1, round(BORDER_WIDTH * min(h, w))))].mean())
    labels, n = ndimage.label(fg)
    sizes = ndimage.sum(fg, labels, index=np.arange(1, n + 1)) if n else np.zeros(0)
    total = max(float(sizes.sum()), 1.0)
    pieces = int((sizes >= 0.01 * total).sum())
    if largest_share is None:
        largest_share = float(sizes.max() / total) if n else 0.0
    overlap = _edge_overlap(rgb, fg, max(2, round(0.01 * min(h, w)))) if rgb is not None and fg.any() else None
    filled = int(ndimage.binary_fill_holes(fg).sum())
    holes = 1.0 - fg.sum() / filled if filled else 0.0

    problems = []
    if area < MIN_AREA:
        problems.append(f"covers only {100 * area:.1f} % of the image (too small)")
    if area > MAX_AREA:
        problems.append(f"covers {100 * area:.0f} % of the image (the background came with it)")
    if border > MAX_BORDER:
        problems.append(f"runs along {100 * border:.0f} % of the image border (background, or an object cut off by the frame)")
    if area >= MIN_AREA and largest_share < MIN_LARGEST_SHARE:
        problems.append(f"is in pieces, the largest only {100 * largest_share:.0f} % of all that was found")
    if overlap is not None and overlap > MAX_EDGE_OVERLAP:
        problems.append(f"has an edge that follows no colour change ({100 * overlap:.0f} % of the colours alike on both sides)")
    if rgb is not None and holes > MAX_HOLES:
        problems.append(f"has holes over {100 * holes:.0f} % of its outline (right only where the object is see-through)")
    return MaskCheck(area, border, largest_share, pieces, float(holes), overlap, problems)


# ------------------------------------------------------------------------------------ dispatch
def segment(image: Image.Image, method: str = "auto", *, mask: Image.Image | None = None, threshold: float = 0.08, mask_name: str = "mask") -> Foreground:
    """The foreground of ``image`` by ``method`` (``auto``, ``rembg``, ``grabcut``, ``border``), or from ``mask``.

    ``mask`` (a user's mask image, same size; ``mask_name`` names it in errors) wins over ``method``. Under ``auto`` an alpha channel
    with transparent pixels is used as is; the explicit methods segment the colours (an RGBA image
    composited on white first). Raises :class:`SegmentationError` for an unusable mask or method.
    """
    if mask is not None:
        fg = mask_from_image(mask, image.size, mask_name)
        return Foreground(fg, "mask-file", check_mask(fg))
    alpha = _alpha(image)
    if method == "auto" and alpha is not None:
        return Foreground(alpha, "alpha", check_mask(alpha))
    if alpha is not None:  # what a viewer shows: transparent pixels on white
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        rgb = ((rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:]) * 255 + 0.5).astype(np.uint8)
    else:
        rgb = np.asarray(image.convert("RGB"))
    if method == "auto":
        method = "rembg" if rembg_unavailable_reason() is None else "grabcut"
    if method == "grabcut":
        result = grabcut_mask(rgb)
        return Foreground(result.mask, "grabcut", check_mask(result.mask, rgb, largest_share=result.largest_share))
    if method == "border":
        fg = border_rule_mask(rgb, threshold).astype(np.float32)
        return Foreground(fg, "border", check_mask(fg, rgb))
    if method == "rembg":
        fg = rembg_mask(Image.fromarray(rgb))
        return Foreground(fg, "rembg", check_mask(fg, rgb))
    raise SegmentationError(f"unknown foreground method {method!r}; choose auto, rembg, grabcut or border")
