"""Objaverse 1.0 objects by uid, through the ``objaverse`` package's local cache.

The cache layout is the ``objaverse`` package's (``objaverse._VERSIONED_PATH``, by default
``~/.objaverse/hf-objaverse-v1``)::

    <root>/object-paths.json.gz             gzip JSON {uid: "glbs/000-XXX/<uid>.glb"}
    <root>/glbs/000-XXX/<uid>.glb           the objects
    <root>/metadata/000-XXX.json.gz         gzip JSON {uid: Sketchfab annotation}, optional

The root is, in order: an explicit argument (``ouro render --objaverse-dir``), ``$OURO_OBJAVERSE_DIR``,
then ``objaverse._VERSIONED_PATH``. A missing object is downloaded from the same Hugging Face URL the
package uses (with a timeout, into ``<path>.tmp`` then renamed, as the package does) unless downloads
are off; offline, an uncached object fails with a reason that names the file it looked for.
Every uid is checked to be 32 lowercase hex digits before it touches a path or a URL.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import threading
import urllib.error
import urllib.request
from pathlib import Path

from ouro.io.files import atomic_write

__all__ = [
    "OBJAVERSE_DIR_ENV",
    "HF_BASE_URL",
    "ObjaverseCache",
    "default_objaverse_dir",
    "is_uid",
    "parse_uid_lines",
]

#: Environment variable naming the cache root (the folder holding ``object-paths.json.gz``).
OBJAVERSE_DIR_ENV = "OURO_OBJAVERSE_DIR"
#: Where ``objaverse`` 0.1.7 downloads from.
HF_BASE_URL = "https://huggingface.co/datasets/allenai/objaverse/resolve/main"
OBJECT_PATHS = "object-paths.json.gz"
_UID = re.compile(r"[0-9a-f]{32}")
_OBJECT_PATH = re.compile(r"glbs/[0-9]{3}-[0-9]{3}/([0-9a-f]{32})\.glb")
#: Annotation fields copied into meta.json (``archives.glb`` counts are flattened).
ANNOTATION_FIELDS = ("name", "license", "faceCount", "vertexCount", "animationCount", "isAgeRestricted")


def is_uid(text: str) -> bool:
    """True for an Objaverse 1.0 uid: exactly 32 lowercase hex digits."""
    return _UID.fullmatch(text) is not None


def parse_uid_lines(text: str) -> tuple[list[str], list[tuple[int, str]]]:
    """Uids from an ids file: one per line, or LGM filter-CSV rows ``000-001,<uid>``.

    Blank lines and ``#`` comments are skipped; a trailing ``.glb`` is dropped (as ``objaverse``
    does). Returns ``(uids, bad)``: the valid uids in file order without duplicates, and
    ``(line number, text)`` for every line that is not a uid.
    """
    uids, bad, seen = [], [], set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        field = line.rsplit(",", 1)[-1].strip().strip('"')
        if field.endswith(".glb"):
            field = field[:-4]
        if is_uid(field):
            if field not in seen:
                seen.add(field)
                uids.append(field)
        else:
            bad.append((number, line[:200]))
    return uids, bad


def default_objaverse_dir() -> Path:
    """``$OURO_OBJAVERSE_DIR``, else ``objaverse._VERSIONED_PATH`` (``~/.objaverse/hf-objaverse-v1``)."""
    if os.environ.get(OBJAVERSE_DIR_ENV):
        return Path(os.environ[OBJAVERSE_DIR_ENV]).expanduser()
    try:
        import objaverse

        return Path(objaverse._VERSIONED_PATH)
    except ImportError:
        return Path.home() / ".objaverse" / "hf-objaverse-v1"


class ObjaverseCache:
    """Find (and optionally download) Objaverse GLBs and annotations in the package's cache layout.

    Args:
        root: the versioned cache folder (holding ``object-paths.json.gz`` and ``glbs/``).
        download: fetch what is missing from :data:`HF_BASE_URL`; off = local files only.
        timeout: seconds per network request.

    Thread-safe: ``ouro render`` resolves objects from several worker threads.
    """

    def __init__(self, root: Path | str | None = None, download: bool = False, timeout: float = 60.0):
        self.root = Path(root).expanduser() if root is not None else default_objaverse_dir()
        self.download = download
        self.timeout = timeout
        self._lock = threading.Lock()
        self._paths: dict[str, str] | None = None
        self._paths_error: str | None = None
        self._metadata: dict[str, dict] = {}

    # -- object paths -------------------------------------------------------------------------
    def _load_object_paths(self) -> dict[str, str] | None:
        with self._lock:
            if self._paths is not None or self._paths_error is not None:
                return self._paths
            local = self.root / OBJECT_PATHS
            try:
                if not local.is_file() and self.download:
                    self._fetch(f"{HF_BASE_URL}/{OBJECT_PATHS}", local)
                if local.is_file():
                    with gzip.open(local, "rt", encoding="utf-8") as f:
                        data = json.load(f)
                    if not isinstance(data, dict):
                        raise ValueError("not a JSON object")
                    self._paths = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
                else:
                    self._paths_error = f"{local} is not cached"
            except (OSError, ValueError, urllib.error.URLError) as e:
                self._paths_error = f"cannot read {local}: {e}"
            return self._paths

    def object_path(self, uid: str) -> str | None:
        """The relative path ``glbs/000-XXX/<uid>.glb`` from ``object-paths.json.gz`` (None if unknown)."""
        paths = self._load_object_paths()
        rel = paths.get(uid) if paths else None
        if rel is None:
            return None
        match = _OBJECT_PATH.fullmatch(rel)
        if match is None or match.group(1) != uid:
            raise ValueError(f"object-paths.json.gz has an unexpected path for {uid}: {rel[:100]!r}")
        return rel

    def local_path(self, uid: str) -> Path | None:
        """The cached GLB of ``uid`` if it is on disk, without any network access."""
        if not is_uid(uid):
            raise ValueError(f"not an Objaverse uid (32 lowercase hex digits): {uid[:100]!r}")
        rel = self.object_path(uid)
        if rel is not None:
            path = self.root / rel
            return path if path.is_file() else None
        # object-paths.json.gz missing: look through the shard folders
        for path in sorted(self.root.glob(f"glbs/*/{uid}.glb")):
            if path.is_file():
                return path
        return None

    def fetch(self, uid: str) -> Path:
        """The local GLB of ``uid``, downloading it if allowed.

        Raises:
            LookupError: with a one-line reason when the object is not available.
        """
        path = self.local_path(uid)
        if path is not None:
            return path
        rel = self.object_path(uid)
        if rel is None:
            if self._paths is None:
                where = self.root / "glbs" / "*" / f"{uid}.glb"
                raise LookupError(
                    f"not in the local objaverse cache ({where}) and {self._paths_error or 'no object-paths.json.gz'}"
                    + ("" if self.download else "; downloads are off")
                )
            raise LookupError(f"unknown Objaverse uid: not listed in {self.root / OBJECT_PATHS}")
        target = self.root / rel
        if not self.download:
            raise LookupError(f"not in the local objaverse cache ({target}); downloads are off")
        try:
            self._fetch(f"{HF_BASE_URL}/{rel}", target)
        except (OSError, urllib.error.URLError) as e:
            raise LookupError(f"not in the local objaverse cache ({target}) and the download failed: {e}") from e
        return target

    def _fetch(self, url: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        request = urllib.request.Request(url, headers={"User-Agent": "ouro-render"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response, atomic_write(target, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)

    # -- annotations --------------------------------------------------------------------------
    def annotations(self, uid: str) -> dict | None:
        """A few Sketchfab annotation fields of ``uid`` from a *cached* metadata shard (never downloads).

        Fields: name, license, faceCount, vertexCount, animationCount, isAgeRestricted and
        ``textureCount`` (from ``archives.glb``). None when the shard is not cached.
        """
        try:
            rel = self.object_path(uid)
        except ValueError:
            return None
        if rel is None:
            return None
        shard = rel.split("/")[1]
        with self._lock:
            if shard not in self._metadata:
                path = self.root / "metadata" / f"{shard}.json.gz"
                data: dict = {}
                if path.is_file():
                    try:
                        with gzip.open(path, "rt", encoding="utf-8") as f:
                            loaded = json.load(f)
                        data = loaded if isinstance(loaded, dict) else {}
                    except (OSError, ValueError):
                        data = {}
                self._metadata[shard] = data
            record = self._metadata[shard].get(uid)
        return summarize_annotation(record) if isinstance(record, dict) else None


def summarize_annotation(record: dict) -> dict:
    """The fields ``ouro filter`` uses, from one Objaverse (Sketchfab) annotation record."""
    out = {k: record.get(k) for k in ANNOTATION_FIELDS if k in record}
    glb = (record.get("archives") or {}).get("glb") if isinstance(record.get("archives"), dict) else None
    if isinstance(glb, dict):
        for key in ("textureCount", "faceCount"):
            if key in glb:
                out["textureCount" if key == "textureCount" else "glbFaceCount"] = glb[key]
    return out
