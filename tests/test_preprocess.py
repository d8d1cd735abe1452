"""Input preparation: segmentation, recentring, and one-line errors for bad files."""

import numpy as np
import pytest
import torch
from PIL import Image

from ouro.data.preprocess import InputImageError, load_image, prepare_image


def rgba_square(size=(120, 90), box=(10, 20, 50, 70), color=(200, 30, 40)):
    """An RGBA image with an opaque rectangle (x0, y0, x1, y1) on a transparent background."""
    arr = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = (*color, 255)
    return Image.fromarray(arr, "RGBA")


def foreground_box(mask):
    rows = torch.nonzero(mask[0].amax(1) > 0.5)[:, 0]
    cols = torch.nonzero(mask[0].amax(0) > 0.5)[:, 0]
    return rows.min().item(), rows.max().item() + 1, cols.min().item(), cols.max().item() + 1


def test_rgba_object_is_centred_and_spans_60_percent():
    prepared = prepare_image(rgba_square(), 100)
    assert prepared.image.shape == (3, 100, 100) and prepared.mask.shape == (1, 100, 100)
    r0, r1, c0, c1 = foreground_box(prepared.mask)
    # the 40x50 box (w x h) scales so its longer side is 60 px: 48 x 60, centred
    assert (r1 - r0, c1 - c0) == (60, 48)
    assert (r0, c0) == (20, 26)
    # object colour inside, white outside
    assert prepared.image[:, 50, 50].tolist() == pytest.approx([200 / 255, 30 / 255, 40 / 255], abs=1e-3)
    assert prepared.image[:, 2, 2].tolist() == [1.0, 1.0, 1.0]


def test_rgb_on_a_plain_background_is_segmented():
    arr = np.full((80, 80, 3), (40, 120, 40), dtype=np.uint8)  # green backdrop
    arr[30:50, 20:60] = (250, 250, 10)  # yellow object, 40 wide x 20 high
    prepared = prepare_image(Image.fromarray(arr), 64)
    r0, r1, c0, c1 = foreground_box(prepared.mask)
    assert c1 - c0 == round(64 * 0.6) and r1 - r0 in (19, 20)
    assert prepared.image[:, 2, 2].tolist() == [1.0, 1.0, 1.0]  # backdrop replaced by white


def test_keep_background_keeps_the_pixels():
    arr = np.full((64, 64, 3), (40, 120, 40), dtype=np.uint8)
    prepared = prepare_image(Image.fromarray(arr), 64, keep_background=True)
    torch.testing.assert_close(prepared.image[:, 32, 32], torch.tensor([40, 120, 40]) / 255.0, atol=1e-3, rtol=0)
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)  # transparent black, one opaque red square, no crop
    rgba[8:16, 8:16] = (255, 0, 0, 255)
    prepared = prepare_image(Image.fromarray(rgba, "RGBA"), 64, keep_background=True)
    assert prepared.image[:, 40, 40].tolist() == [1.0, 1.0, 1.0] and prepared.image[:, 12, 12].tolist() == [1.0, 0.0, 0.0]


def test_bad_inputs_give_one_line_errors_naming_the_file(tmp_path):
    with pytest.raises(InputImageError, match="missing.png: no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(InputImageError, match="notes.png: not an image"):
        load_image(tmp_path / "notes.png")
    rgba_square().save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputImageError, match="cut.png: the image is damaged or truncated"):
        load_image(tmp_path / "cut.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "tiny.png")
    with pytest.raises(InputImageError, match="tiny.png: image is 16x16, smaller than"):
        load_image(tmp_path / "tiny.png")
    Image.new("RGBA", (64, 64), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    with pytest.raises(InputImageError, match="clear.png: no object found"):
        prepare_image(tmp_path / "clear.png", 64)
