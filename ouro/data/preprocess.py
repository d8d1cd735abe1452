"""Input-image preparation for sampling: load, segment, crop, recentre, composite on white.

What the public inference does (OFFICIAL.md 12.1): remove the background, recentre the object so
that it fills the frame with a border of ``border_ratio`` on the longer side (kiui's ``recenter``),
alpha-composite on white. Here the foreground comes from :mod:`ouro.data.segment` (``background``:
``auto`` uses an RGBA image's alpha, else rembg when it and its model are on disk, else the
built-in GrabCut method; ``grabcut``, ``border``, ``rembg`` force one; ``keep`` uses the image as
is), or from a user's ``mask``. Every mask gets a plausibility check; its result travels with the
:class:`PreparedImage` so the caller can say when the cut looks wrong.

Reading (:func:`load_image`, :func:`image_to_rgba`, :func:`read_rgba`; also used for training frames
and ``eval-gso`` predictions): every mode Pillow opens, each at its own scale (8-bit modes / 255,
16-bit grey / 65535, float as is), palette and ``tRNS`` transparency as alpha; images over Pillow's
decompression-bomb limit are refused with the limit and how to resize.

Errors are :class:`InputImageError` with one line naming the file and the fix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ouro.data.segment import Foreground, SegmentationError, segment

__all__ = ["InputImageError", "PreparedImage", "image_to_rgba", "load_image", "prepare_image", "read_rgba", "to_8bit",
           "MIN_SIZE"]

#: Smallest accepted input side, pixels.
MIN_SIZE = 32


class InputImageError(ValueError):
    """A bad input image; the message is one line naming the file and what to do."""


@dataclass
class PreparedImage:
    """An input ready for the models.

    Attributes:
        image: ``[3, S, S]`` float RGB in [0, 1], object centred on white.
        mask: ``[1, S, S]`` float foreground in [0, 1] after cropping.
        source: the file it came from.
        foreground: the mask in the input's own frame, the method that made it and its
            plausibility check; None with ``background="keep"``.
    """

    image: torch.Tensor
    mask: torch.Tensor
    source: Path | None = None
    foreground: Foreground | None = None

    def to_pil(self) -> Image.Image:
        arr = (self.image.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        return Image.fromarray(arr)


def load_image(path: str | os.PathLike, min_size: int = MIN_SIZE) -> Image.Image:
    """Open and fully decode an image file, with one-line errors for every way it can be bad.

    ``min_size``: smallest accepted side, pixels (input photos: :data:`MIN_SIZE`; renders: 1).
    """
    path = Path(path)
    if not path.exists():
        raise InputImageError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise InputImageError(f"{path}: not a file; give an image file (PNG, JPEG, WebP ...)")
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncated files fail here
            image = im.copy()
    except Image.DecompressionBombError as exc:
        raise InputImageError(_bomb_message(path, exc)) from None
    except UnidentifiedImageError:
        raise InputImageError(f"{path}: not an image PIL can read; give a PNG, JPEG or WebP file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputImageError(f"{path}: the image is damaged or truncated ({exc}); re-export or re-download it") from None
    if min(image.size) < min_size:
        raise InputImageError(f"{path}: image is {image.size[0]}x{image.size[1]}, smaller than {min_size} px; give a larger image")
    return image


def _bomb_message(path: Path, exc: Exception) -> str:
    """Pillow refuses images over ``2 * Image.MAX_IMAGE_PIXELS`` (178,956,970 pixels by default) at open."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f"{int(found.group(1)) / 1e6:,.0f} megapixels" if found else "too many pixels"
    limit = 2 * int(Image.MAX_IMAGE_PIXELS or 0)
    return (f"{path}: {size}, over the {limit / 1e6:,.0f}-megapixel limit of Pillow's decompression-bomb guard; "
            f"resize it first, e.g. to 2048 px on the longer side: `magick '{path.name}' -resize 2048x2048 smaller.png`")


def _wide(mode: str) -> bool:
    """16-bit grey and float modes, which Pillow's 8-bit conversions clip (``convert("RGB")`` of a 16-bit image is white)."""
    return mode in ("F", "I") or mode.startswith("I;16")


def image_to_rgba(image: Image.Image) -> np.ndarray:  # -> [H, W, 4] float32 in [0, 1]
    """Any Pillow image as straight (not premultiplied) RGBA in [0, 1], each mode at its own scale.

    * 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``RGBA``, ``LA``, ``PA``, ``CMYK``, ``YCbCr`` ...):
      Pillow's RGBA conversion / 255; palette and ``tRNS`` transparency become alpha. (16-bit RGB(A)
      PNGs open as 8-bit RGB(A): their high bytes.)
    * 16-bit grey (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, and ``I``, as Pillow opens 16-bit grey
      PNG / TIFF / PGM files): value / 65535, clipped; a ``tRNS`` grey value is transparent.
    * ``F`` (32-bit float): the values as they are, clipped to [0, 1] (NaN as 0).
    """
    mode = image.mode
    if _wide(mode):
        values = np.asarray(image).astype(np.float32)
        grey = np.clip(np.nan_to_num(values if mode == "F" else values / 65535.0, nan=0.0), 0.0, 1.0)
        alpha = np.ones_like(grey)
        key = image.info.get("transparency")
        if mode != "F" and isinstance(key, int):
            alpha = (np.asarray(image) != key).astype(np.float32)
        return np.stack([grey, grey, grey, alpha], axis=-1)
    rgba = image if mode == "RGBA" else image.convert("RGBA")
    return np.asarray(rgba, dtype=np.float32) / 255.0


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` itself in an 8-bit mode; a 16-bit grey or float image as the 8-bit RGBA picture it shows
    (:func:`image_to_rgba`, rounded), so that code reading it through Pillow's conversions (segmentation,
    masks) sees its pixels and not white."""
    if not _wide(image.mode):
        return image
    return Image.fromarray((image_to_rgba(image) * 255 + 0.5).astype(np.uint8), "RGBA")


def read_rgba(path: str | os.PathLike, min_size: int = 1) -> np.ndarray:  # -> [H, W, 4] float32 in [0, 1]
    """:func:`load_image` then :func:`image_to_rgba`; :class:`InputImageError` names the file."""
    return image_to_rgba(load_image(path, min_size=min_size))


def prepare_image(
    image: Image.Image | str | os.PathLike,
    size: int,
    *,
    border_ratio: float = 0.2,
    background: str = "auto",
    mask: Image.Image | str | os.PathLike | None = None,
    threshold: float = 0.08,
    keep_background: bool = False,
) -> PreparedImage:
    """Segment, crop, recentre and scale an input to ``size x size`` on a white background.

    Args:
        image: a PIL image or a path.
        size: output side, pixels.
        border_ratio: empty margin on each side of the object's longer side, as a fraction of
            ``size`` (0.2 as the public inference: the object spans 60 % of the frame).
        background: ``auto``, ``rembg``, ``grabcut``, ``border`` (:func:`ouro.data.segment.segment`)
            or ``keep``: the image as is (resized to a square with padding), no segmentation;
            transparent pixels of an RGBA image become white.
        mask: a foreground mask for this image (image or path, same size; white or opaque =
            object); overrides ``background``.
        threshold: the ``border`` method's colour difference above which a pixel is foreground.
        keep_background: the same as ``background="keep"`` (the earlier spelling).
    """
    source = None
    if not isinstance(image, Image.Image):
        source = Path(image)
        image = load_image(source)
    image = to_8bit(image)  # 16-bit grey / float: the picture it shows, for segmentation and compositing
    name = source or "input image"
    keep_background = keep_background or (background == "keep" and mask is None)
    foreground = None
    if keep_background:  # as is; an alpha channel only decides what shows through as white
        rgba = image_to_rgba(image)
        rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
        alpha = np.ones(rgb.shape[:2], dtype=np.float32)
    else:
        mask_name = None
        if mask is not None and not isinstance(mask, Image.Image):
            mask_name = Path(mask)
            mask = load_image(mask_name)
        if mask is not None:
            mask = to_8bit(mask)
        try:
            foreground = segment(image, background, mask=mask, threshold=threshold, mask_name=str(mask_name or "mask"))
        except SegmentationError as exc:
            raise InputImageError(f"{name}: {exc}" if mask_name is None else str(exc)) from None
        rgba = image_to_rgba(image)
        # the alpha method premultiplies the stored colours; any other mask cuts what a viewer shows (transparent = white)
        rgb = rgba[..., :3] if foreground.method == "alpha" else rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
        alpha = foreground.mask
        if (alpha > 0.5).sum() < 16:
            raise InputImageError(
                f"{name}: no object found (empty alpha, empty mask or a plain image); give an RGBA image with the object opaque, "
                "or --mask FILE, or use --background keep"
            )
    rgb_t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    alpha_t = torch.from_numpy(np.ascontiguousarray(alpha))[None]
    if keep_background:
        ys, xs = slice(0, rgb.shape[0]), slice(0, rgb.shape[1])
        target = size
    else:
        rows, cols = np.flatnonzero((alpha > 0.5).any(1)), np.flatnonzero((alpha > 0.5).any(0))
        ys, xs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        target = max(1, round(size * (1 - 2 * border_ratio)))
    crop_rgb, crop_alpha = rgb_t[:, ys, xs], alpha_t[:, ys, xs]
    h, w = crop_rgb.shape[-2:]
    scale = target / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = torch.nn.functional.interpolate(
        torch.cat([crop_rgb * crop_alpha, crop_alpha])[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
    )[0]
    premul, a = resized[:3], resized[3:].clamp(0, 1)
    canvas_rgb, canvas_a = torch.zeros(3, size, size), torch.zeros(1, size, size)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas_rgb[:, top : top + nh, left : left + nw] = premul
    canvas_a[:, top : top + nh, left : left + nw] = a
    white = (canvas_rgb + (1 - canvas_a)).clamp(0, 1)  # premultiplied colour over white
    return PreparedImage(white, canvas_a, source, foreground)
