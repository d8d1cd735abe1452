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

Errors are :class:`InputImageError` with one line naming the file and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["InputImageError", "PreparedImage", "load_image", "prepare_image", "MIN_SIZE"]

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


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file, with one-line errors for every way it can be bad."""
    path = Path(path)
    if not path.exists():
        raise InputImageError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise InputImageError(f"{path}: not a file; give an image file (PNG, JPEG, WebP ...)")
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncated files fail here
            image = im.copy()
    except UnidentifiedImageError:
        raise InputImageError(f"{path}: not an image PIL can read; give a PNG, JPEG or WebP file") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputImageError(f"{path}: the image is damaged or truncated ({exc}); re-export or re-download it") from None
    if min(image.size) < MIN_SIZE:
        raise InputImageError(f"{path}: image is {image.size[0]}x{image.size[1]}, smaller than {MIN_SIZE} px; give a larger image")
    return image


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
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        rgb = rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:])
        alpha = np.ones(rgb.shape[:2], dtype=np.float32)
    else:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        rgb = rgba[..., :3]
        has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
        if has_alpha:
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
