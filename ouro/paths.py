"""Default locations, so that the short command lines chain.

``ouro render`` writes to :data:`DEFAULT_RENDER_DIR`, which ``ouro filter`` and ``ouro train`` read;
``ouro train`` writes runs under :data:`DEFAULT_RUNS_DIR`; ``ouro eval-gso`` finds the Google Scanned
Objects root with :func:`resolve_gso_root`. Relative defaults are relative to the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DEFAULT_RENDER_DIR",
    "DEFAULT_RUNS_DIR",
    "GSO_ROOT_ENV",
    "cache_dir",
    "default_gso_root",
    "resolve_gso_root",
]

#: Where ``ouro render`` writes and ``ouro filter`` / ``ouro train`` read by default.
DEFAULT_RENDER_DIR = Path("data/renders")
#: Parent of training runs: ``runs/<name>/``.
DEFAULT_RUNS_DIR = Path("runs")
#: Environment variable naming the GSO root (a folder of GSO object folders).
GSO_ROOT_ENV = "OURO_GSO_ROOT"


def cache_dir() -> Path:
    """ouro's cache: ``$OURO_CACHE``, else ``$XDG_CACHE_HOME/ouro``, else ``~/.cache/ouro``."""
    if os.environ.get("OURO_CACHE"):
        return Path(os.environ["OURO_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ouro"


def default_gso_root() -> Path:
    """The documented cache folder for GSO objects: ``<cache_dir>/gso``."""
    return cache_dir() / "gso"


def resolve_gso_root(option: Path | None = None) -> Path:
    """The GSO root, from the command-line option, else ``$OURO_GSO_ROOT``, else the cache folder."""
    if option is not None:
        return Path(option).expanduser()
    if os.environ.get(GSO_ROOT_ENV):
        return Path(os.environ[GSO_ROOT_ENV]).expanduser()
    return default_gso_root()
