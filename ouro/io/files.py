"""Small file-system helpers shared by the pipelines: output checks, atomic writes, content hashes.

* :func:`check_output_folder` / :func:`check_output_file`: every command checks that its outputs
  can be written **before** its work starts (a read-only folder, ``-o`` naming an existing file,
  a parent that is a file), so a bad ``-o`` costs one line and no computed result;
* :func:`atomic_write`, :func:`atomic_path`, :func:`make_temp_folder`: results are written to a
  temporary name beside their destination and renamed into place, so there is never a
  half-written file under the real name. Temporaries are created with the modes ``open()`` and
  ``mkdir()`` use (``0o666`` / ``0o777`` less the umask), unlike :mod:`tempfile` (``0o600`` /
  ``0o700``), so results are as readable as any file the user writes;
* :func:`replace_folder`: an atomic folder swap;
* :func:`staging_folder`, :func:`clean_stale_staging`, :func:`remove_staging_area`: per-item folders
  of long runs (``ouro render``'s objects, ``ouro eval-gso``'s objects, GSO downloads) are built in
  ``<output>/.staging/<item>.<host>.<pid>`` and renamed into place when complete; a later run
  removes those of dead processes of its host.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = [
    "STAGING",
    "OutputError",
    "atomic_path",
    "atomic_write",
    "check_output_file",
    "check_output_folder",
    "clean_stale_staging",
    "file_sha256",
    "host_name",
    "make_parent",
    "read_json",
    "make_temp_folder",
    "pid_alive",
    "remove_staging_area",
    "replace_folder",
    "staging_folder",
    "write_text_atomic",
]


class OutputError(ValueError):
    """An output that cannot be written; the message is one line naming the path and the fix."""


# -- checks before the work -----------------------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (as anything: folder, file, link)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(path.anchor or ".")


def _probe(folder: Path, option: str, shown: Path) -> None:
    """Create and delete a file in ``folder``: the only reliable write test (ACLs, read-only mounts, root)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".ouro-write-test-", dir=folder)
    except OSError as e:
        raise OutputError(f"{option} {shown}: cannot write in {folder} ({e.strerror or e}); choose another {option} "
                          "or make that folder writable") from None
    os.close(fd)
    os.unlink(name)


def check_output_folder(path: str | os.PathLike, option: str = "--output") -> Path:
    """Refuse, before any work, an output folder that cannot be written; create nothing.

    Fine: an existing folder we can create files in, or a missing one whose closest existing
    ancestor is such a folder (it is created when the results are written).

    Raises:
        OutputError: ``path`` is a file; an ancestor is a file; the folder (or the ancestor it
            would be created in) is not writable.
    """
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    existing = _nearest_existing(absolute)
    if existing == absolute:
        if not absolute.is_dir():
            raise OutputError(f"{option} {path} is a file; give a folder (it is created if missing)")
    elif not existing.is_dir():
        raise OutputError(f"{option} {path}: {existing} is a file, not a folder; choose another {option}")
    _probe(existing, option, path)
    return path


def check_output_file(path: str | os.PathLike, option: str = "--output") -> Path:
    """Refuse, before any work, an output file that cannot be written; create nothing.

    Fine: a new or existing file (it is replaced) in a folder that exists or can be created.

    Raises:
        OutputError: ``path`` is a folder; its folder cannot be written or created (see
            :func:`check_output_folder`).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file name (e.g. {path / 'out.txt'})")
    absolute = Path(os.path.abspath(path))
    existing = _nearest_existing(absolute.parent)
    if not existing.is_dir():
        raise OutputError(f"{option} {path}: {existing} is a file, not a folder; choose another {option}")
    _probe(existing, option, path)
    return path


def make_parent(path: str | os.PathLike) -> Path | None:
    """Create the folders above ``path``; returns the topmost one created (None if all existed),
    so that a caller whose write then fails can remove what it made."""
    parent = Path(path).parent
    missing = [p for p in (parent, *parent.parents) if not p.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    return missing[-1] if missing else None


# -- atomic writes ----------------------------------------------------------------------------------
def _temp_name(path: Path, suffix: str = ".tmp") -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None,
                 newline: str | None = None) -> Iterator[IO]:
    """``with atomic_write(p, "w", encoding="utf-8") as f: ...``: write a temporary file beside ``p``
    (mode ``0o666`` less the umask) and rename it onto ``p`` when the block succeeds; on error the
    temporary is removed and ``p`` is untouched."""
    path = Path(path)
    tmp = _temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary name beside ``path`` (same suffix, not created) for writers that want a
    file name (trimesh, OpenCV); renamed onto ``path`` when the block succeeds, removed on error."""
    path = Path(path)
    tmp = _temp_name(path, suffix=f".tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """``path.write_text(text)`` (UTF-8), atomically."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def make_temp_folder(parent: str | os.PathLike, prefix: str) -> Path:
    """A new, uniquely named folder in ``parent`` (mode ``0o777`` less the umask, unlike ``mkdtemp``'s ``0o700``),
    for results that are renamed into place when complete."""
    parent = Path(parent)
    for _ in range(100):
        folder = parent / f"{prefix}{os.getpid()}.{secrets.token_hex(4)}"
        try:
            os.mkdir(folder, 0o777)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent}: cannot find a free temporary folder name")


# -- other ------------------------------------------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def replace_folder(src: Path, dest: Path) -> None:
    """Move the finished folder ``src`` to ``dest``, replacing what is there.

    The old ``dest`` is first renamed aside (``.<name>.old`` beside it), so at no point is there a
    half-written folder under ``dest``; the old one is deleted once the new one is in place. The
    folders above ``dest`` are created.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        src.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        src.rename(dest)


# -- staging folders --------------------------------------------------------------------------------
#: Where a command keeps the unfinished per-item folders of an output folder.
STAGING = ".staging"


def host_name() -> str:
    """This host's name as part of a folder name (letters, digits, ``-`` and ``_``; at most 64 characters)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:64] or "host"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (stale staging folders name their owner's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def staging_folder(parent: str | os.PathLike, name: str, area: str = STAGING) -> Path:
    """A new, empty ``<parent>/<area>/<name>.<host>.<pid>`` for one item's results until they are complete
    and renamed into place (:func:`replace_folder`, or ``rename`` where another process may win).

    Whatever a former process with this host and pid left there is removed first. ``name`` must be a
    safe folder name (the caller validates ids that come from files). Several processes and hosts may
    share ``parent``: each names its folders after itself.
    """
    path = Path(parent) / area / f"{name}.{host_name()}.{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def clean_stale_staging(parent: str | os.PathLike, area: str = STAGING) -> None:
    """Remove the staging folders (:func:`staging_folder`) of ``parent`` left by dead processes of this host."""
    folder = Path(parent) / area
    if not folder.is_dir():
        return
    host = host_name()
    for entry in folder.iterdir():
        parts = entry.name.rsplit(".", 2)
        if len(parts) == 3 and parts[1] == host and parts[2].isdigit() and not pid_alive(int(parts[2])):
            shutil.rmtree(entry, ignore_errors=True)


def remove_staging_area(parent: str | os.PathLike, area: str = STAGING) -> None:
    """Remove ``<parent>/<area>`` when it is empty (other processes may still be working in it)."""
    try:
        (Path(parent) / area).rmdir()
    except OSError:
        pass


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (a run's optional records)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
