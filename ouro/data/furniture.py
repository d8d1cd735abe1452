"""Debian's ``sweethome3d-furniture``: 820 OBJ models (CC0 / CC BY) that work offline.

The package ships five ``.sh3f`` catalogues, zip files of ``<folder>/<model>/<files>`` (OBJ, MTL,
textures, licence files) plus the catalogue's ``LICENSE.TXT``. They are the embedded demo model's
training data and the tests' real textured meshes::

    >>> for catalogue in catalogues(Path("~/.cache/ouro/sweethome3d-furniture").expanduser()):  # doctest: +SKIP
    ...     objs = textured_models(catalogue, Path("models"))   # models/<catalogue>/<model>/*.obj
"""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from pathlib import Path

__all__ = ["PACKAGE", "CATALOGUE_DIR", "TEXTURE_MAPS", "FurnitureError", "FetchToolsMissing", "catalogues", "textured_models"]

PACKAGE = "sweethome3d-furniture"
CATALOGUE_DIR = Path("usr/share/sweethome3d/furniture")  #: where the package puts its .sh3f files
#: An MTL texture statement: ``(keyword, file)``, options such as ``-s 1 1 1`` skipped.
TEXTURE_MAPS = re.compile(r"^\s*(map_\w+|bump|disp|decal|refl)\s+(?:-\S+\s+\S+\s+)*(.+?)\s*$", re.MULTILINE)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tga")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+()#,-]*$")


class FurnitureError(RuntimeError):
    """The package cannot be found or fetched (one line, naming the fix)."""


class FetchToolsMissing(FurnitureError):
    """Not installed, and no ``apt-get`` / ``dpkg-deb`` to fetch it with (not a Debian-like system)."""


def catalogues(cache: Path) -> list[Path]:
    """The package's ``.sh3f`` files, sorted: the installed package's, else a private copy in ``cache``,
    unpacked there (``apt-get download`` + ``dpkg-deb -x``: no root needed) on first use."""
    for root in (Path("/"), cache):
        found = sorted((root / CATALOGUE_DIR).glob("*.sh3f"))
        if found:
            return found
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise FetchToolsMissing(f"{PACKAGE} is not installed and fetching it needs apt-get and dpkg-deb")
    cache.mkdir(parents=True, exist_ok=True)
    download = ["apt-get", "download", PACKAGE]
    if subprocess.run(download, cwd=cache, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, check=False)  # a stale package list
        done = subprocess.run(download, cwd=cache, capture_output=True, text=True)
        if done.returncode != 0:
            raise FurnitureError(f"apt-get download {PACKAGE} failed: {done.stderr.strip()[-300:]}")
    deb = sorted(cache.glob(f"{PACKAGE}_*.deb"))[-1]
    subprocess.run(["dpkg-deb", "-x", str(deb), str(cache)], check=True)
    deb.unlink()
    found = sorted((cache / CATALOGUE_DIR).glob("*.sh3f"))
    if not found:
        raise FurnitureError(f"{deb.name} holds no {CATALOGUE_DIR}/*.sh3f")
    return found


def textured_models(catalogue: Path, out: Path) -> list[Path]:
    """Unpack the models of one ``.sh3f`` whose MTL maps an image shipped beside it; their OBJ paths.

    Written as ``out/<catalogue stem>/<model>/<file>``, with the catalogue's ``LICENSE.TXT`` in
    ``out/<catalogue stem>/``. Members are read by name and written only when the name is
    ``<folder>/<model>/<file>`` of plain names (no ``..``, no absolute path): nothing in the archive
    picks a path. Models with colours only (``Kd``) or a missing image are left out.
    """
    lib = catalogue.stem
    objs: list[Path] = []
    with zipfile.ZipFile(catalogue) as archive:
        folders: dict[str, dict[str, str]] = {}
        for member in archive.namelist():
            parts = member.split("/")
            if len(parts) == 3 and all(_SAFE_NAME.match(x) for x in parts):
                folders.setdefault(parts[1], {})[parts[2]] = member
        for model, files in sorted(folders.items()):
            obj = [f for f in files if f.lower().endswith(".obj")]
            mtl = "\n".join(archive.read(files[f]).decode("utf-8", "replace") for f in files if f.lower().endswith(".mtl"))
            maps = {m[1].replace("\\", "/").split("/")[-1] for m in TEXTURE_MAPS.findall(mtl)}
            if len(obj) != 1 or not any(m in files and m.lower().endswith(IMAGE_SUFFIXES) for m in maps):
                continue
            folder = out / lib / model
            folder.mkdir(parents=True, exist_ok=True)
            for name, member in files.items():
                (folder / name).write_bytes(archive.read(member))
            objs.append(folder / obj[0])
        if "LICENSE.TXT" in archive.namelist():
            (out / lib).mkdir(parents=True, exist_ok=True)
            (out / lib / "LICENSE.TXT").write_bytes(archive.read("LICENSE.TXT"))
    return objs
