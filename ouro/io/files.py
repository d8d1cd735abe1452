"""Small file-system helpers shared by the pipelines: content hashes and atomic folder swaps."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

__all__ = ["file_sha256", "replace_folder"]


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
    half-written folder under ``dest``; the old one is deleted once the new one is in place.
    """
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        src.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        src.rename(dest)
