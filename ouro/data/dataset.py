"""Training data: render folders of ``ouro render`` (the public Objaverse-orbit layout) as 8-view samples.

A render folder (written by :mod:`ouro.pipelines.render`; cameras as docs/OFFICIAL.md 12.3) holds one folder per object::

    <root>/<uid>/meta.json                 camera_angle_x, locations[i] = {orbit, frame, transform_matrix, frames[0].name}
    <root>/<uid>/<orbit:03d>/<frame:03d>.png   RGBA, 8-bit

One sample is ``num_views`` (8) frames of one orbit (paper, supplementary 1.1): a random orbit, a
random first frame (the condition image), then

* ``frame_choice="every2"`` (the paper): every ``frames_per_orbit // num_views``-th frame, i.e.
  frames ``s, s+2, ..., s+14`` of 16;
* ``frame_choice="linspace"`` (the public code, ``multiview_blender.py``): ``linspace(0, F-1, 8)``
  rounded down after rolling the orbit to ``s``, i.e. ``s + (0, 2, 4, 6, 8, 10, 12, 15)``.

Frames are composited on white (``rgb * a + (1 - a)``) and resized (antialiased bilinear) to
``image_size``. Cameras: ``transform_matrix`` (Blender ``matrix_world``) ->
:func:`ouro.geometry.blender_to_ours` -> :func:`ouro.geometry.to_condition_frame` (relative to the
first view, as the public checkpoint was trained; OFFICIAL.md 12.3); normalised intrinsics from
``camera_angle_x``. The public Objaverse-orbit meta (no ``orbit``/``frame`` fields) is read as
orbits of ``frames_per_orbit`` (default 16) consecutive locations.

Everything read from disk is validated: uids match :data:`UID_PATTERN`, frame paths are relative
PNG paths that stay inside the object's folder, matrices are finite 4x4. Problems raise
:class:`DatasetError` naming the file.

Randomness is keyed, not stateful: :class:`PositionStream` maps a global sample position ``p`` to
(object, orbit, first frame) with generators seeded from ``(seed, p)``, so a run's data is a pure
function of its seed and step (exact resume, and ``N`` processes x batch ``B`` see exactly the samples
one process with batch ``N * B`` sees).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ouro.conventions import FRAME_CHOICES
from ouro.data.ids import ID_PATTERN, IdListError, is_safe_id, read_id_list
from ouro.data.preprocess import InputImageError, read_rgba
from ouro.geometry.cameras import blender_to_ours, intrinsics_from_fov, to_condition_frame

__all__ = [
    "FRAME_CHOICES",
    "UID_PATTERN",
    "DatasetError",
    "OrbitSample",
    "RenderFolderDataset",
    "PositionStream",
    "PositionSampler",
    "collate_samples",
    "frame_indices",
    "keyed_generator",
    "read_kept",
]

#: What a uid may look like (folder names, kept-list lines): :data:`ouro.data.ids.ID_PATTERN`.
UID_PATTERN = ID_PATTERN
META = "meta.json"
DEFAULT_FRAMES_PER_ORBIT = 16


class DatasetError(ValueError):
    """A render folder, meta.json or kept list that cannot be used; the message names the file."""


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from integers (e.g. ``(seed, position, stream)``) through numpy's SeedSequence."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def frame_indices(start: int, frames_per_orbit: int, num_views: int = 8, choice: str = "every2") -> list[int]:
    """The ``num_views`` frame indices of one sample, the first being ``start`` (the condition view).

    >>> frame_indices(3, 16, 8, "every2")
    [3, 5, 7, 9, 11, 13, 15, 1]
    >>> frame_indices(0, 16, 8, "linspace")
    [0, 2, 4, 6, 8, 10, 12, 15]
    """
    if choice not in FRAME_CHOICES:
        raise ValueError(f"frame choice must be one of {FRAME_CHOICES}, got {choice!r}")
    if frames_per_orbit < num_views:
        raise ValueError(f"an orbit of {frames_per_orbit} frames cannot give {num_views} views")
    if choice == "every2":
        step = frames_per_orbit // num_views
        offsets = [step * k for k in range(num_views)]
    else:
        offsets = np.linspace(0, frames_per_orbit - 1, num_views).astype(np.int64).tolist()
    return [(start + o) % frames_per_orbit for o in offsets]


def read_kept(path: str | Path) -> list[str]:
    """A kept list (``ouro filter``): one uid per line; blank lines and ``#`` comments skipped."""
    try:
        return read_id_list(path, label=f"kept list {path}", what="valid uid", empty=None)
    except IdListError as exc:
        raise DatasetError(str(exc)) from None


@dataclass
class OrbitSample:
    """One training sample (``V`` views of one orbit; view 0 is the condition image).

    Attributes:
        images: ``[V, 3, H, W]`` RGB on white in [0, 1].
        c2w: ``[V, 4, 4]`` camera-to-world (OpenCV axes), relative to view 0 (:func:`to_condition_frame`).
        K_norm: ``[V, 3, 3]`` normalised intrinsics.
        uid: the object's folder name.
        orbit: orbit index.
        frames: ``[V]`` frame indices within the orbit.
        position: the stream position it was drawn for (:class:`PositionStream`), else -1.
    """

    images: Tensor
    c2w: Tensor
    K_norm: Tensor
    uid: str
    orbit: int
    frames: Tensor
    position: int = -1


def collate_samples(samples: Sequence[OrbitSample]) -> dict:
    """Stack samples: ``images [B, V, 3, H, W]``, ``c2w [B, V, 4, 4]``, ``K_norm [B, V, 3, 3]``,
    ``frames [B, V]``, ``orbit [B]``, ``positions [B]``, ``uid`` (list of B strings)."""
    return {
        "images": torch.stack([s.images for s in samples]),
        "c2w": torch.stack([s.c2w for s in samples]),
        "K_norm": torch.stack([s.K_norm for s in samples]),
        "frames": torch.stack([s.frames for s in samples]),
        "orbit": torch.tensor([s.orbit for s in samples]),
        "positions": torch.tensor([s.position for s in samples], dtype=torch.int64),
        "uid": [s.uid for s in samples],
    }


class RenderFolderDataset(Dataset):
    """The objects of a render folder (optionally only a kept list), read lazily.

    Args:
        root: the render folder (``<root>/<uid>/meta.json``).
        image_size: resize frames to this square size; ``None`` keeps the rendered size.
        num_views: views per sample (8).
        frame_choice: ``"every2"`` (paper) or ``"linspace"`` (public code); see the module docstring.
        kept: a kept-list file, or a list of uids; ``None`` = every object folder with a meta.json.
        missing: ``"error"`` (default) or ``"skip"`` for kept uids without a finished folder
            (skipped ones are listed in :attr:`missing`).
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int | None = None,
        num_views: int = 8,
        frame_choice: str = "every2",
        kept: str | Path | Sequence[str] | None = None,
        missing: str = "error",
    ) -> None:
        if frame_choice not in FRAME_CHOICES:
            raise ValueError(f"frame_choice must be one of {FRAME_CHOICES}, got {frame_choice!r}")
        if missing not in ("error", "skip"):
            raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such render folder; render objects with `ouro render` first")
        self.image_size, self.num_views, self.frame_choice = image_size, num_views, frame_choice
        if kept is None:
            uids = sorted(p.name for p in self.root.iterdir() if is_safe_id(p.name) and (p / META).is_file())
            self.missing: list[str] = []
        else:
            wanted = read_kept(kept) if isinstance(kept, (str, Path)) else list(kept)
            bad = [u for u in wanted if not is_safe_id(u)]
            if bad:
                raise DatasetError(f"kept list: {str(bad[0])[:80]!r} is not a valid uid")
            uids = [u for u in wanted if (self.root / u / META).is_file()]
            self.missing = [u for u in wanted if u not in set(uids)]
            if self.missing and missing == "error":
                raise DatasetError(
                    f"{len(self.missing)} kept uid(s) have no finished folder in {self.root} (e.g. {self.missing[0]!r}); "
                    "render them or filter again"
                )
        if not uids:
            raise DatasetError(f"{self.root}: no objects (no <uid>/{META}); render objects with `ouro render` first")
        self.uids = uids

    def __len__(self) -> int:
        return len(self.uids)

    # --------------------------------------------------------------------------------- meta.json
    def read_meta(self, index: int) -> tuple[float, dict[int, list[tuple[int, Tensor, Path]]]]:
        """``(fov_deg, {orbit: [(frame, c2w_blender [4, 4] float64, png path), ...] sorted by frame})``."""
        uid = self.uids[index]
        folder = self.root / uid
        path = folder / META
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path}: unreadable meta.json ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict):
            raise DatasetError(f"{path}: meta.json holds {'null' if meta is None else type(meta).__name__}, not a JSON object")
        try:
            fov = float(meta["camera_angle_x"])
            locations = meta["locations"]
            per_orbit = int(meta.get("frames_per_orbit", DEFAULT_FRAMES_PER_ORBIT))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path}: unreadable meta.json ({type(exc).__name__}: {exc})") from None
        if not (0.0 < fov < math.pi) or not isinstance(locations, list) or not locations or per_orbit < 1:
            raise DatasetError(f"{path}: camera_angle_x must be in (0, pi) radians and locations a non-empty list")
        base = folder.resolve()
        orbits: dict[int, list[tuple[int, Tensor, Path]]] = {}
        for i, loc in enumerate(locations):
            try:
                orbit = int(loc.get("orbit", i // per_orbit))
                frame = int(loc.get("frame", i % per_orbit))
                c2w = torch.tensor(loc["transform_matrix"], dtype=torch.float64)
                name = str(loc["frames"][0]["name"])
            except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
                raise DatasetError(f"{path}: locations[{i}] is malformed ({type(exc).__name__}: {exc})") from None
            if c2w.shape != (4, 4) or not bool(torch.isfinite(c2w).all()):
                raise DatasetError(f"{path}: locations[{i}].transform_matrix must be a finite 4x4 matrix")
            rel = Path(name)
            png = (folder / rel).resolve()
            if rel.is_absolute() or ".." in rel.parts or rel.suffix.lower() != ".png" or not png.is_relative_to(base):
                raise DatasetError(f"{path}: locations[{i}] names {name[:80]!r}; expected a relative .png path inside {folder}")
            orbits.setdefault(orbit, []).append((frame, c2w, png))
        for orbit, frames in orbits.items():
            frames.sort(key=lambda t: t[0])
            if [f for f, _, _ in frames] != list(range(len(frames))):
                raise DatasetError(f"{path}: orbit {orbit} does not hold frames 0..{len(frames) - 1} exactly once")
            if len(frames) < self.num_views:
                raise DatasetError(f"{path}: orbit {orbit} has {len(frames)} frames, fewer than {self.num_views} views")
        return math.degrees(fov), orbits

    def verify(self, frames: bool = True) -> list[str]:
        """What is wrong with each unusable object, before training starts: one ``"<file>: <why>"`` per bad object.

        Reads every object's meta.json as training would (:meth:`read_meta`: cameras, frame paths,
        orbits) and, with ``frames``, checks each listed frame without decoding or reading it whole:
        the file exists, Pillow recognises its header and it is not over the decompression-bomb
        limit, and a PNG ends with its IEND chunk (truncated copies and interrupted writes do not).
        A frame costs two small reads, not a decode; a bit flipped inside a complete file is found
        only when that frame is decoded.
        """
        problems = []
        for index in range(len(self.uids)):
            try:
                _, orbits = self.read_meta(index)
            except DatasetError as exc:
                problems.append(str(exc))
                continue
            if frames:
                paths = [png for orbit in orbits.values() for _, _, png in orbit]
                found = next((f"{png}: {why}" for png in paths if (why := _frame_problem(png)) is not None), None)
                if found is not None:
                    problems.append(found)
        return problems

    # ------------------------------------------------------------------------------------ frames
    def load_image(self, path: Path) -> Tensor:  # -> [3, S, S] RGB on white in [0, 1]
        try:
            rgba = read_rgba(path)
        except InputImageError as exc:
            raise DatasetError(f"unreadable frame: {exc}") from None
        x = torch.from_numpy(rgba).permute(2, 0, 1)  # [H, W, 4] -> [4, H, W]
        rgb = x[:3] * x[3:] + (1.0 - x[3:])  # composite on white
        size = self.image_size
        if size is not None and tuple(rgb.shape[-2:]) != (size, size):
            rgb = F.interpolate(rgb[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        return rgb.clamp(0.0, 1.0)

    def load(self, index: int, orbit: int | None = None, start: int | None = None,
             generator: torch.Generator | None = None) -> OrbitSample:
        """Object ``index`` as one sample; ``orbit`` / ``start`` drawn from ``generator`` when ``None``."""
        fov_deg, orbits = self.read_meta(index)
        keys = sorted(orbits)
        if orbit is None:
            orbit = keys[int(torch.randint(len(keys), (1,), generator=generator))]
        elif orbit not in orbits:
            raise DatasetError(f"{self.root / self.uids[index] / META}: no orbit {orbit}")
        frames = orbits[orbit]
        if start is None:
            start = int(torch.randint(len(frames), (1,), generator=generator))
        idx = frame_indices(start, len(frames), self.num_views, self.frame_choice)
        images = torch.stack([self.load_image(frames[i][2]) for i in idx])
        c2w = blender_to_ours(torch.stack([frames[i][1] for i in idx]))
        c2w = to_condition_frame(c2w, 0).float()
        K = intrinsics_from_fov(fov_deg).expand(self.num_views, 3, 3).clone()
        return OrbitSample(images, c2w, K, self.uids[index], int(orbit), torch.tensor(idx))

    def __getitem__(self, index: int) -> OrbitSample:
        return self.load(index)


#: The last 12 bytes of every complete PNG file: the IEND chunk (length 0, type, CRC).
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _frame_problem(path: Path) -> str | None:
    """Why the frame at ``path`` cannot be read, from its header and (PNG) its last 12 bytes, or None.

    Constant work per file, whatever its size: no decode, no full read (a truncated copy or an
    interrupted write has no IEND chunk at its end).
    """
    try:
        with Image.open(path) as im:  # parses the header: format, size, mode
            if im.format == "PNG":
                im.fp.seek(-len(_PNG_END), 2)
                if im.fp.read(len(_PNG_END)) != _PNG_END:
                    return "truncated frame (the PNG does not end with its IEND chunk)"
    except FileNotFoundError:
        return "missing frame"
    except Image.DecompressionBombError as exc:
        return f"frame too large ({exc})"
    except (OSError, SyntaxError, ValueError) as exc:  # UnidentifiedImageError is an OSError
        return f"damaged frame ({type(exc).__name__}: {exc})"
    return None


class PositionStream(Dataset):
    """Sample number ``p`` of an endless, seeded stream over a dataset.

    Epoch ``e = p // len(dataset)`` visits the objects in the order ``randperm`` seeded by
    ``(seed, e)``; the orbit and first frame of sample ``p`` come from a generator seeded by
    ``(seed, p)``. No state: the same ``(seed, p)`` always gives the same sample.
    """

    def __init__(self, dataset: RenderFolderDataset, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, int(seed)
        self._perm: tuple[int, Tensor] | None = None

    def __len__(self) -> int:  # positions are unbounded; this is one epoch
        return len(self.dataset)

    def object_index(self, position: int) -> int:
        n = len(self.dataset)
        epoch = position // n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(n, generator=keyed_generator(self.seed, epoch, 0xDA7A)))
        return int(self._perm[1][position % n])

    def __getitem__(self, position: int) -> OrbitSample:
        sample = self.dataset.load(self.object_index(position), generator=keyed_generator(self.seed, position, 0x5A3))
        sample.position = int(position)
        return sample


class PositionSampler(Sampler[int]):
    """Positions for one process: micro-step ``k`` of rank ``r`` (of ``world``) takes
    ``(k * world + r) * batch + j`` for ``j < batch``, from micro-step ``start`` on, forever.

    So the union over ranks of micro-step ``k`` is the block ``[k * world * batch, (k+1) * world * batch)``.
    """

    def __init__(self, batch_size: int, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.batch_size, self.rank, self.world_size, self.start = batch_size, rank, world_size, start

    def positions(self, micro_step: int) -> list[int]:
        first = (micro_step * self.world_size + self.rank) * self.batch_size
        return list(range(first, first + self.batch_size))

    def __iter__(self) -> Iterator[int]:
        k = self.start
        while True:
            yield from self.positions(k)
            k += 1
