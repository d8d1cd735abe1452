"""Input-image preparation for sampling: load, segment, crop, recentre, composite on white.

What the public inference does (OFFICIAL.md 12.1): remove the background, recentre the object so
that it fills the frame with a border of ``border_ratio`` on the longer side (kiui's ``recenter``),
alpha-composite on white. Here:

* RGBA images use their alpha channel;
* RGB images are segmented by a documented rule: the background colour is the median of the
  image border, and a pixel is foreground when its colour differs from it by more than
  ``threshold`` (max over channels, 0-1 scale); the mask is then cleaned by keeping the connected
  components that hold at least 1 % of the foreground (scipy);
* if ``rembg`` is installed *and* its model file is already on disk it may be used instead
  (``use_rembg=True``); nothing is ever downloaded.

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

__all__ = ["InputImageError", "PreparedImage", "has_alpha", "image_to_rgba", "load_image", "prepare_image", "read_rgba",
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
    """

    image: torch.Tensor
    mask: torch.Tensor
    source: Path | None = None

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


def has_alpha(image: Image.Image) -> bool:
    """Whether ``image`` carries transparency: an alpha band, or palette / ``tRNS`` transparency."""
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def image_to_rgba(image: Image.Image) -> np.ndarray:  # -> [H, W, 4] float32 in [0, 1]
    """Any Pillow image as straight (not premultiplied) RGBA in [0, 1], each mode at its own scale.

    * 8-bit modes (``1``, ``L``, ``P``, ``RGB``, ``RGBA``, ``LA``, ``PA``, ``CMYK``, ``YCbCr`` ...):
      Pillow's RGBA conversion / 255; palette and ``tRNS`` transparency become alpha. (16-bit RGB(A)
      PNGs open as 8-bit RGB(A): their high bytes.)
    * 16-bit grey (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, and ``I``, as Pillow opens 16-bit grey
      PNG / TIFF / PGM files): value / 65535, clipped; a ``tRNS`` grey value is transparent.
    * ``F`` (32-bit float): the values as they are, clipped to [0, 1] (NaN as 0).

    Pillow's own conversion of ``I;16`` / ``I`` / ``F`` to RGB clips at 255 (a 16-bit image turns
    white), hence the explicit scaling.
    """
    mode = image.mode
    if mode == "F" or mode == "I" or mode.startswith("I;16"):
        values = np.asarray(image).astype(np.float32)
        grey = np.nan_to_num(values if mode == "F" else values / 65535.0, nan=0.0)
        grey = np.clip(grey, 0.0, 1.0)
        alpha = np.ones_like(grey)
        key = image.info.get("transparency")
        if mode != "F" and isinstance(key, int):
            alpha = (np.asarray(image) != key).astype(np.float32)
        return np.stack([grey, grey, grey, alpha], axis=-1)
    rgba = image if mode == "RGBA" else image.convert("RGBA")
    return np.asarray(rgba, dtype=np.float32) / 255.0


def read_rgba(path: str | os.PathLike, min_size: int = 1) -> np.ndarray:  # -> [H, W, 4] float32 in [0, 1]
    """:func:`load_image` then :func:`image_to_rgba`; :class:`InputImageError` names the file."""
    return image_to_rgba(load_image(path, min_size=min_size))


def _border_background_mask(rgb: np.ndarray, threshold: float) -> np.ndarray:  # [H, W, 3] in [0,1] -> [H, W] bool
    from scipy import ndimage

    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    fg = np.abs(rgb - background).max(axis=-1) > threshold
    labels, n = ndimage.label(fg)
    if n > 1:
        sizes = ndimage.sum(fg, labels, index=np.arange(1, n + 1))
        keep = np.flatnonzero(sizes >= 0.01 * fg.sum()) + 1
        fg = np.isin(labels, keep)
    return ndimage.binary_fill_holes(fg)


def _rembg_mask(image: Image.Image) -> np.ndarray | None:
    """rembg's mask if rembg and its default model are already on disk, else None (never downloads)."""
    try:
        import rembg  # noqa: F401
    except ImportError:
        return None
    home = Path(os.environ.get("U2NET_HOME", Path.home() / ".u2net"))
    if not (home / "u2net.onnx").is_file():
        return None
    import rembg

    out = rembg.remove(image.convert("RGB"), session=rembg.new_session("u2net"))
    return np.asarray(out)[..., 3] / 255.0


def prepare_image(
    image: Image.Image | str | os.PathLike,
    size: int,
    *,
    border_ratio: float = 0.2,
    keep_background: bool = False,
    threshold: float = 0.08,
    use_rembg: bool = False,
) -> PreparedImage:
    """Segment, crop, recentre and scale an input to ``size x size`` on a white background.

    Args:
        image: a PIL image or a path.
        size: output side, pixels.
        border_ratio: empty margin on each side of the object's longer side, as a fraction of
            ``size`` (0.2 as the public inference: the object spans 60 % of the frame).
        keep_background: use the image as is (resized to a square with padding), no segmentation;
            transparent pixels of an RGBA image become white.
        threshold: colour difference from the border colour above which an RGB pixel is foreground.
        use_rembg: try rembg with a model already on disk before the border rule.
    """
    source = None
    if not isinstance(image, Image.Image):
        source = Path(image)
        image = load_image(source)
    name = source or "input image"
    if keep_background:  # as is; an alpha channel only decides what shows through as white
        rgba = image_to_rgba(image)
        rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
        alpha = np.ones(rgb.shape[:2], dtype=np.float32)
    else:
        rgba = image_to_rgba(image)
        rgb = rgba[..., :3]
        if has_alpha(image):
            alpha = rgba[..., 3]
        else:
            mask = _rembg_mask(image) if use_rembg else None
            alpha = mask if mask is not None else _border_background_mask(rgb, threshold).astype(np.float32)
        if (alpha > 0.5).sum() < 16:
            raise InputImageError(
                f"{name}: no object found (empty alpha or plain image); give an RGBA image with the object opaque, or use --keep-background"
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
    return PreparedImage(white, canvas_a, source)
