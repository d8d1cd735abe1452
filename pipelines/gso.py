"""Google Scanned Objects for ``ouro eval-gso``: the object list, finding and downloading objects.

GSO (Downs et al., 2022; CC BY 4.0) is distributed by Gazebo Fuel, one zip per object, from the
GoogleResearch owner's "Scanned Objects by Google Research" collection::

    https://fuel.gazebosim.org/1.0/GoogleResearch/models/<name>.zip

(the address Gazebo's own ``download_collection.py`` uses). ``$OURO_GSO_URL`` replaces the part
before ``/<name>.zip`` (a mirror, or a local server in the tests); only ``http`` and ``https`` are
accepted. An unzipped object is a folder ``<root>/<name>/`` holding::

    meshes/model.obj, meshes/model.mtl      the scan (metres, **+z up**), its material
    materials/textures/texture.png          the one diffuse texture (model.mtl names it bare)
    model.config, model.sdf, metadata.pbtxt, thumbnails/

Archives are checked before anything is written: every member must be a plain file or folder
with a relative path free of ``..``, backslashes and drive letters, and the whole archive must
stay under size and member-count limits; an archive that fails any check is rejected as a whole.
A download is unpacked beside its destination and renamed into place only once it holds
``meshes/model.obj``, so ``<root>/<name>/`` is either complete or absent.

GSO meshes are +z up; ouro's world (and the OBJ convention Blender's importer assumes) is +y up.
:func:`convert_obj_up_axis` writes a copy with ``(x, y, z) -> (x, z, -y)`` (Blender's own z-up to
y-up map, :data:`ouro.geometry.BLENDER_TO_OURS`), so objects stand upright in the renders.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Sequence

import numpy as np

import ouro
from ouro.data.ids import read_id_list
from ouro.io.files import clean_stale_staging, remove_staging_area, staging_folder
from ouro.pipelines.choices import UP_AXES

__all__ = [
    "COLLECTION_PAGE",
    "DEFAULT_GSO_URL",
    "DEFAULT_OBJECTS_FILE",
    "GSO_URL_ENV",
    "OBJECT_NAME",
    "EnsureResult",
    "NetworkUnavailable",
    "UnsafeArchive",
    "convert_obj_up_axis",
    "download_object",
    "ensure_objects",
    "gso_base_url",
    "is_gso_folder",
    "missing_objects_message",
    "object_url",
    "read_obj_geometry",
    "read_object_list",
    "safe_extract_zip",
    "up_axis_to_ours",
]

#: Environment variable replacing :data:`DEFAULT_GSO_URL` (the folder URL the ``<name>.zip`` files are in).
GSO_URL_ENV = "OURO_GSO_URL"
#: Gazebo Fuel's download address of the GoogleResearch models.
DEFAULT_GSO_URL = "https://fuel.gazebosim.org/1.0/GoogleResearch/models"
#: The collection's web page (for people downloading by hand).
COLLECTION_PAGE = "https://app.gazebosim.org/GoogleResearch/fuel/collections/Scanned%20Objects%20by%20Google%20Research"
#: The 100 objects ``ouro eval-gso`` scores by default (see the file's header).
DEFAULT_OBJECTS_FILE = Path(ouro.__file__).resolve().parent / "assets" / "gso_eval_objects.txt"
#: A GSO object name: letters, digits, ``_`` and ``-``, starting with a letter or digit (so never
#: ``.``/``..``, never a path).
OBJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,159}")

MAX_ARCHIVE_BYTES = 2 << 30  #: largest download accepted (GSO zips are a few MB to ~100 MB)
MAX_UNPACKED_BYTES = 4 << 30  #: largest total of the members' sizes
MAX_MEMBERS = 10_000
_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


class NetworkUnavailable(OSError):
    """The archive server cannot be reached (no route, DNS failure, refused, timed out)."""


class UnsafeArchive(ValueError):
    """A zip member with an absolute path, ``..``, a link, or an archive over the limits."""


# -- the object list ----------------------------------------------------------------------------
def read_object_list(path: str | os.PathLike) -> list[str]:
    """Object names from a text file: one per line, ``#`` starts a comment, blank lines skipped.

    Duplicates are dropped (first kept). Raises ``ValueError`` with one line naming the file and
    the first bad line (a name must match :data:`OBJECT_NAME`, a safe id of
    :func:`ouro.data.ids.read_id_list`), or an empty list.
    """
    return read_id_list(
        path, label=f"--objects {path}", what="GSO object name", pattern=OBJECT_NAME,
        hint="letters, digits, _ and -, as in Fuel's GoogleResearch collection, e.g. Android_Figure_Panda",
        empty="holds no object names (one per line, e.g. Android_Figure_Panda)",
    )


def is_gso_folder(folder: Path) -> bool:
    """A GSO object folder: ``meshes/model.obj`` inside."""
    return (Path(folder) / "meshes" / "model.obj").is_file()


# -- downloading --------------------------------------------------------------------------------
def gso_base_url(base: str | None = None) -> str:
    """The archive folder URL: ``base``, else ``$OURO_GSO_URL``, else :data:`DEFAULT_GSO_URL`."""
    url = (base or os.environ.get(GSO_URL_ENV) or DEFAULT_GSO_URL).strip().rstrip("/")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"GSO archive URL {url!r}: only http:// and https:// are supported (set ${GSO_URL_ENV})")
    return url


def object_url(name: str, base: str | None = None) -> str:
    """``<base>/<name>.zip``."""
    if not OBJECT_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a GSO object name")
    return f"{gso_base_url(base)}/{urllib.parse.quote(name)}.zip"


def _member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    """The member's relative path, or :class:`UnsafeArchive`."""
    name = info.filename
    if not name or "\\" in name or name.startswith("/") or _DRIVE.match(name) or "\x00" in name:
        raise UnsafeArchive(f"unsafe member path {name!r}")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise UnsafeArchive(f"unsafe member path {name!r}")
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the archiver stored no file type (Windows, writestr)
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchive(f"member {name!r} is not a plain file or folder (a link or device)")
    return PurePosixPath(*parts)


def safe_extract_zip(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_members: int = MAX_MEMBERS,
) -> list[Path]:
    """Extract ``archive`` into ``dest`` (created), after checking every member; returns the files.

    Raises :class:`UnsafeArchive` (nothing written) for absolute paths, ``..``, backslashes, drive
    letters, links, more than ``max_members`` members or more than ``max_bytes`` in total
    (declared sizes, and the bytes actually decompressed), ``ValueError`` for a file that is not
    a zip archive.
    """
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise ValueError(f"{Path(archive).name}: not a zip archive") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > max_members:
            raise UnsafeArchive(f"{len(infos)} members, more than the {max_members} allowed")
        paths = [_member_path(info) for info in infos]  # every member checked before any write
        if sum(info.file_size for info in infos) > max_bytes:
            raise UnsafeArchive(f"unpacks to more than {max_bytes} bytes")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        written, total = [], 0
        for info, rel in zip(infos, paths):
            target = dest.joinpath(*rel.parts)
            if root not in target.resolve().parents and target.resolve() != root:
                raise UnsafeArchive(f"member {info.filename!r} leaves the destination")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    total += len(chunk)
                    if total > max_bytes:
                        raise UnsafeArchive(f"unpacks to more than {max_bytes} bytes")
                    dst.write(chunk)
            written.append(target)
    return written


def _find_object_root(folder: Path) -> Path | None:
    """The unpacked object: ``folder`` itself, or its one sub-folder holding ``meshes/model.obj``."""
    if is_gso_folder(folder):
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("__MACOSX", "."))]
    if len(subs) == 1 and is_gso_folder(subs[0]):
        return subs[0]
    return None


#: Where downloads are unpacked (``<root>/.download/<name>.<host>.<pid>``) before the rename into place.
_DOWNLOADS = ".download"


def download_object(
    name: str,
    root: str | os.PathLike,
    base_url: str | None = None,
    timeout: float = 60.0,
    max_bytes: int = MAX_ARCHIVE_BYTES,
) -> Path:
    """Download, check and unpack one object into ``<root>/<name>/``; returns that folder.

    Raises:
        NetworkUnavailable: the server cannot be reached or stops answering (``timeout`` seconds
            per connection attempt and per read).
        LookupError: the archive has no such object (HTTP 404 / 410).
        OSError: any other HTTP error, a download over ``max_bytes``.
        ValueError / UnsafeArchive: not a zip, an unsafe zip, or no ``meshes/model.obj`` in it.
    """
    root = Path(root)
    url = object_url(name, base_url)
    target = root / name
    staging = staging_folder(root, name, _DOWNLOADS)
    try:
        archive = staging / "archive.zip"
        request = urllib.request.Request(url, headers={"User-Agent": f"ouro/{ouro.__version__}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response, open(archive, "wb") as out:
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise OSError(f"{url}: {int(declared)} bytes, more than the {max_bytes} allowed")
                size = 0
                while chunk := response.read(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise OSError(f"{url}: more than the {max_bytes} bytes allowed")
                    out.write(chunk)
        except urllib.error.HTTPError as e:
            if e.code in (404, 410):
                raise LookupError(f"{name}: not in the GSO archive ({url}: HTTP {e.code})") from None
            raise OSError(f"{url}: HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            raise NetworkUnavailable(f"{url}: {e.reason}") from None
        except (socket.timeout, TimeoutError, ConnectionError) as e:
            raise NetworkUnavailable(f"{url}: {type(e).__name__} {e}".strip()) from None
        unpacked = staging / "unpacked"
        try:
            safe_extract_zip(archive, unpacked)
        except UnsafeArchive as e:
            raise UnsafeArchive(f"{name}: archive rejected: {e}") from None
        except ValueError as e:
            raise ValueError(f"{name}: {url} is not a zip archive ({e})") from None
        found = _find_object_root(unpacked)
        if found is None:
            raise ValueError(f"{name}: the archive holds no meshes/model.obj (not a GSO object)")
        try:
            os.rename(found, target)
        except OSError:
            if is_gso_folder(target):  # another process finished it first
                return target
            raise
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        remove_staging_area(root, _DOWNLOADS)


@dataclass
class EnsureResult:
    """Which objects are on disk after :func:`ensure_objects`.

    Attributes:
        found: ``{name: folder}`` GSO folders present (downloaded or already there).
        missing: ``{name: reason}`` objects that are not available.
        downloaded: names downloaded by this call.
        network_error: why the server was unreachable, when it was (later downloads are skipped).
    """

    found: dict[str, Path] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    downloaded: list[str] = field(default_factory=list)
    network_error: str | None = None


def ensure_objects(
    names: Sequence[str],
    root: str | os.PathLike,
    download: bool = True,
    base_url: str | None = None,
    timeout: float = 60.0,
    progress: Callable[[str, str], None] | None = None,
) -> EnsureResult:
    """Find each object in ``root``; download the missing ones when ``download`` is set.

    After the first :class:`NetworkUnavailable` no further download is tried (one unreachable
    server must not cost a timeout per object). ``progress(name, status)`` is called per
    download with status ``"downloaded"`` or ``"failed: <reason>"``.
    """
    root = Path(root)
    result = EnsureResult()
    todo = []
    for name in names:
        if is_gso_folder(root / name):
            result.found[name] = root / name
        else:
            todo.append(name)
    if not todo:
        return result
    if not download:
        for name in todo:
            result.missing[name] = f"not in {root} (downloads are off)"
        return result
    try:
        base = gso_base_url(base_url)
        root.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as e:
        result.network_error = str(e)
        for name in todo:
            result.missing[name] = f"not in {root}, and cannot download: {e}"
        return result
    clean_stale_staging(root, _DOWNLOADS)
    for name in todo:
        if result.network_error is not None:
            result.missing[name] = f"not in {root}; archive unreachable"
            continue
        try:
            result.found[name] = download_object(name, root, base, timeout)
            result.downloaded.append(name)
            status = "downloaded"
        except NetworkUnavailable as e:
            result.network_error = str(e)
            result.missing[name] = f"not in {root}; download failed: {e}"
            status = f"failed: {e}"
        except (LookupError, OSError, ValueError) as e:
            result.missing[name] = str(e) if str(e).startswith(name) else f"{name}: {e}"
            status = f"failed: {e}"
        if progress is not None:
            progress(name, status)
    return result


def missing_objects_message(root: Path, missing: Iterable[str], total: int, network_error: str | None,
                            base_url: str | None = None) -> str:
    """One line saying exactly what to put where for the objects that are missing."""
    missing = list(missing)
    try:
        base = gso_base_url(base_url)
    except ValueError:
        base = DEFAULT_GSO_URL
    why = f"the archive is unreachable ({network_error})" if network_error else "they could not be downloaded"
    return (
        f"{len(missing)} of {total} GSO objects are not in {root} and {why}: download each <name>.zip from "
        f"{base}/<name>.zip (or {COLLECTION_PAGE}) and unzip it into {root}/<name>/ so that "
        f"{root}/<name>/meshes/model.obj exists (first missing: {missing[0] if missing else '-'}), "
        f"or point --gso-root or $OURO_GSO_ROOT at a folder that has them"
    )


# -- meshes -------------------------------------------------------------------------------------
def up_axis_to_ours(points: np.ndarray, up_axis: str = "z") -> np.ndarray:
    """``[N, 3]`` file coordinates to ouro's +y-up frame: ``(x, y, z) -> (x, z, -y)`` for +z-up files."""
    if up_axis not in UP_AXES:
        raise ValueError(f"up axis {up_axis!r}: choose z (GSO) or y")
    points = np.asarray(points, dtype=np.float64)
    if up_axis == "y":
        return points.copy()
    return np.stack([points[:, 0], points[:, 2], -points[:, 1]], axis=1)


def _rotate_line(line: str, up_axis: str) -> str:
    """A ``v x y z [...]`` or ``vn x y z`` line in the +y-up frame (extra values kept)."""
    head, *values = line.split()
    x, y, z = (float(v) for v in values[:3])
    nx, ny, nz = (x, z, -y) if up_axis == "z" else (x, y, z)
    return " ".join([head, f"{nx:.9g}", f"{ny:.9g}", f"{nz:.9g}", *values[3:]])


def convert_obj_up_axis(src: str | os.PathLike, dst: str | os.PathLike, up_axis: str = "z") -> Path:
    """Write ``src`` to ``dst`` in ouro's +y-up frame (``v`` and ``vn`` lines rotated, the rest kept).

    The ``.mtl`` files next to ``src`` are copied next to ``dst`` (``mtllib`` names them relative to
    the OBJ); textures are left where they are and found through the renderer's texture folders.
    """
    if up_axis not in UP_AXES:
        raise ValueError(f"up axis {up_axis!r}: choose z (GSO) or y")
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8", errors="surrogateescape") as fin, \
            open(dst, "w", encoding="utf-8", errors="surrogateescape") as fout:
        for line in fin:
            if line.startswith(("v ", "vn ")) or line.startswith(("v\t", "vn\t")):
                fout.write(_rotate_line(line, up_axis) + "\n")
            else:
                fout.write(line)
    for mtl in src.parent.glob("*.mtl"):
        if mtl.is_file() and not mtl.is_symlink():
            shutil.copyfile(mtl, dst.parent / mtl.name)
    return dst


def read_obj_geometry(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``[V, 3]`` (float64, file frame) and triangles ``[F, 3]`` (int64) of an OBJ file.

    Polygons are split into fans; ``f`` indices may be ``v``, ``v/vt``, ``v//vn`` or ``v/vt/vn``,
    1-based or negative (relative). Raises ``ValueError`` for a file without triangles.
    """
    vertices: list[tuple[float, float, float]] = []
    faces: list[tuple[int, int, int]] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if line.startswith(("v ", "v\t")):
                parts = line.split()
                vertices.append((float(parts[1]), float(parts[2]), float(parts[3])))
            elif line.startswith(("f ", "f\t")):
                idx = []
                for token in line.split()[1:]:
                    i = int(token.split("/", 1)[0])
                    idx.append(i - 1 if i > 0 else len(vertices) + i)
                if any(not 0 <= i < len(vertices) for i in idx):
                    raise ValueError(f"{path}: line {number}: face index out of range")
                faces.extend((idx[0], idx[k], idx[k + 1]) for k in range(1, len(idx) - 1))
    if not faces:
        raise ValueError(f"{path}: no triangles")
    return np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)
