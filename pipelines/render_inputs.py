"""What ``ouro render`` renders: inputs resolved to objects with stable uids, and the shard split.

Inputs are mesh files (``.glb``, ``.gltf``, ``.obj``), Google Scanned Objects folders
(``<name>/meshes/model.obj`` with ``<name>/materials/textures/texture.png``), folders searched
recursively for both (hidden folders skipped; a GSO folder counts as one object), and Objaverse
uids from an ids file (one per line, or LGM's filter-CSV rows ``000-001,<uid>``).

Uids name the output folders: an Objaverse object keeps its uid, a file its stem, a GSO folder its
name, with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``. When two different inputs
would share a uid, the file ones get ``-<8 hex digits of the path's SHA-1>`` appended, so the names
stay stable between runs over the same inputs. An input that cannot be rendered (missing file,
unsupported format, a line that is not a uid) stays in the list with an ``error``: it is reported
in ``failures.jsonl`` like any other failed object; a bad line of an ids file is recorded as
``<ids file name>-line<N>``, never under its own text (uids name folders: they are validated with
:func:`ouro.data.ids.is_safe_id` before a path is built from them).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ouro.data.ids import read_list_text
from ouro.data.objaverse import parse_uid_lines

__all__ = [
    "MESH_SUFFIXES",
    "ObjectSource",
    "collect_sources",
    "parse_shard",
    "read_objaverse_ids",
    "select_shard",
    "shard_index",
]

#: Mesh files ``ouro render`` reads (case-insensitive).
MESH_SUFFIXES = (".glb", ".gltf", ".obj")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ObjectSource:
    """One object to render.

    Attributes:
        uid: output folder name (safe: ``[A-Za-z0-9._-]``, :func:`ouro.data.ids.is_safe_id`).
        kind: ``"file"``, ``"gso"`` or ``"objaverse"``.
        source: what the user gave: a path, or an Objaverse uid.
        path: the mesh file (None for Objaverse objects until resolved, and for bad inputs).
        texture_dirs: extra folders searched for textures (GSO: ``materials/textures``).
        error: why this input cannot be rendered, or None.
    """

    uid: str
    kind: str
    source: str
    path: Path | None = None
    texture_dirs: tuple[Path, ...] = field(default_factory=tuple)
    error: str | None = None


def safe_uid(name: str) -> str:
    """A folder-safe uid from a file stem or folder name (at most 120 characters)."""
    uid = _UNSAFE.sub("_", name).strip("._-")[:120]
    return uid or "object"


def _path_hash(path: Path) -> str:
    return hashlib.sha1(str(path.resolve()).encode("utf-8")).hexdigest()[:8]


def is_gso_folder(folder: Path) -> bool:
    """A Google Scanned Objects folder: ``meshes/model.obj`` inside."""
    return (folder / "meshes" / "model.obj").is_file()


def _gso(folder: Path) -> ObjectSource:
    textures = tuple(p for p in (folder / "materials" / "textures", folder / "meshes", folder) if p.is_dir())
    return ObjectSource(safe_uid(folder.name), "gso", str(folder), folder / "meshes" / "model.obj", textures)


def _mesh_file(path: Path) -> ObjectSource:
    return ObjectSource(safe_uid(path.stem), "file", str(path), path, (path.parent,))


def _walk(folder: Path) -> Iterable[ObjectSource]:
    """Objects under ``folder`` in sorted order; GSO folders are not searched further."""
    if is_gso_folder(folder):
        yield _gso(folder)
        return
    entries = sorted(folder.iterdir(), key=lambda p: p.name)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() in MESH_SUFFIXES:
            yield _mesh_file(entry)
    for entry in entries:
        if entry.is_dir() and not entry.name.startswith(".") and not entry.is_symlink():
            yield from _walk(entry)


def sources_from_path(path: Path) -> list[ObjectSource]:
    """The objects one command-line path stands for (an error entry if none)."""
    if path.is_dir():
        found = list(_walk(path))
        if not found:
            return [ObjectSource(safe_uid(path.name), "file", str(path),
                                 error=f"no .glb/.gltf/.obj files or GSO folders in {path}")]
        return found
    if path.is_file():
        if path.suffix.lower() in MESH_SUFFIXES:
            return [_mesh_file(path)]
        return [ObjectSource(safe_uid(path.stem), "file", str(path),
                             error=f"unsupported file type {path.suffix or '(none)'}: expected .glb, .gltf, .obj or a GSO folder")]
    return [ObjectSource(safe_uid(path.stem), "file", str(path), error=f"no such file or folder: {path}")]


def read_objaverse_ids(path: Path) -> tuple[list[str], list[tuple[int, str]]]:
    """Parse an ids file; raises ``ValueError`` (one line) if it is unreadable or holds no uid."""
    uids, bad = parse_uid_lines(read_list_text(path, f"--objaverse-ids {path}"))
    if not uids:
        raise ValueError(
            f"--objaverse-ids: {path} holds no Objaverse uid; write one 32-hex-digit uid per line "
            "(or LGM filter-CSV rows `000-001,<uid>`)"
        )
    return uids, bad


def collect_sources(inputs: Sequence[Path] = (), objaverse_ids: Path | None = None) -> list[ObjectSource]:
    """Every object named by the command line, in order, duplicates removed, uids made unique.

    Raises:
        ValueError: the ids file is unreadable or has no uid (a usage error, not a failed object).
    """
    found: list[ObjectSource] = []
    for path in inputs:
        found.extend(sources_from_path(Path(path)))
    if objaverse_ids is not None:
        uids, bad = read_objaverse_ids(Path(objaverse_ids))
        found.extend(ObjectSource(uid, "objaverse", uid) for uid in uids)
        # a bad line's text never names a folder (it may hold ``../``): its record is "<file>-line<N>"
        found.extend(
            ObjectSource(safe_uid(f"{Path(objaverse_ids).name}-line{line}"), "objaverse", f"{objaverse_ids}:{line}: {text}",
                         error=f"line {line} of {objaverse_ids} ({text[:80]!r}) is not an Objaverse uid (32 lowercase hex digits)")
            for line, text in bad
        )
    # drop exact duplicates (same file or same uid given twice)
    unique: dict[tuple[str, str], ObjectSource] = {}
    for src in found:
        key = (src.kind, str(src.path.resolve()) if src.path is not None else src.source)
        unique.setdefault(key, src)
    sources = list(unique.values())
    # make uids unique: Objaverse uids win, other colliding inputs get a path-hash suffix
    owners: dict[str, int] = {}
    for src in sources:
        owners[src.uid] = owners.get(src.uid, 0) + 1
    out = []
    for src in sources:
        if owners[src.uid] > 1 and src.kind != "objaverse" and src.error is None:
            src = ObjectSource(f"{src.uid}-{_path_hash(Path(src.source))}", src.kind, src.source, src.path,
                               src.texture_dirs, src.error)
        out.append(src)
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; None -> None. Raises ``ValueError`` otherwise."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/4 (0-based shard I of N)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise ValueError(f"--shard {text!r}: need 0 <= I < N, e.g. 0/{max(count, 1)} .. {max(count, 1) - 1}/{max(count, 1)}")
    return index, count


def shard_index(uid: str, count: int) -> int:
    """The shard of ``uid`` among ``count``: SHA-1 of the uid mod ``count``.

    Independent of input order and of the other inputs, so array jobs over the same list (or a
    grown one) split it exactly and a uid never moves between shards.
    """
    return int(hashlib.sha1(uid.encode("utf-8")).hexdigest()[:15], 16) % count


def select_shard(sources: Sequence[ObjectSource], shard: tuple[int, int] | None) -> list[ObjectSource]:
    """The sources of shard ``(I, N)`` (all of them for None)."""
    if shard is None:
        return list(sources)
    index, count = shard
    return [s for s in sources if shard_index(s.uid, count) == index]
