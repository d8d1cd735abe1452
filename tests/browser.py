"""Debian's Chromium for the browser tests, fetched without root when it is not installed.

CI runs only the README's test command on a fresh clone, so nothing installs Chromium for it. As
:mod:`ouro.data.furniture` does for its package, the browser comes from Debian's own packages:
``apt-get install --simulate`` names the packages ``chromium`` needs that this system lacks (the
browser and about two dozen library packages on a stock Debian 12), ``apt-get download`` fetches them and
``dpkg-deb -x`` unpacks them into a private folder; the binary then runs with that folder's
libraries on ``LD_LIBRARY_PATH``. No root, no system change; about 120 MB to download and 400 MB
unpacked, once.

    >>> browser = chromium(cache_dir() / "chromium")  # doctest: +SKIP
    >>> browser.executable, browser.env["LD_LIBRARY_PATH"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

#: The binary inside Debian's ``chromium`` package (``/usr/bin/chromium`` is a shell launcher for it).
BINARY = Path("usr/lib/chromium/chromium")
#: Flags for a run on a machine with no GPU, no display and no network but loopback: swiftshader
#: gives WebGL in software; the background-networking flags stop Chromium's calls home. (Playwright
#: adds ``--headless`` and a fresh ``--user-data-dir`` itself.)
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-dev-shm-usage",
]


class BrowserUnavailable(RuntimeError):
    """Chromium is neither installed nor fetchable here (one line naming why and the fix)."""


@dataclass
class Chromium:
    executable: Path
    env: dict[str, str] = field(default_factory=dict)  #: extra environment (the private libraries)


def _missing_packages(names: list[str]) -> list[str]:
    """Packages that ``apt-get install names`` would install on this system (dependencies included)."""
    done = subprocess.run(
        ["apt-get", "install", "--simulate", "--no-install-recommends", "-qq", *names], capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise BrowserUnavailable(f"apt-get cannot resolve {' '.join(names)}: {done.stderr.strip()[-300:]}")
    return [line.split()[1] for line in done.stdout.splitlines() if line.startswith("Inst ")]


def _library_path(root: Path) -> str:
    libs = root / "usr/lib/x86_64-linux-gnu"
    return ":".join(str(p) for p in (libs, libs / "pulseaudio") if p.is_dir())


def _fetch(stage: Path) -> None:
    """Download the packages Chromium lacks here and unpack them all into ``stage`` (made anew)."""
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "debs").mkdir(parents=True)
    packages = _missing_packages(["chromium"])
    done = subprocess.run(["apt-get", "download", "-qq", *packages], cwd=stage / "debs", capture_output=True, text=True)
    if done.returncode != 0:
        raise BrowserUnavailable(f"apt-get download chromium failed: {done.stderr.strip()[-300:]}")
    for deb in sorted((stage / "debs").glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(stage)], check=True)
    shutil.rmtree(stage / "debs")


def chromium(cache: Path) -> Chromium:
    """Debian's Chromium: the installed package, else a private copy unpacked into ``cache``.

    Raises :class:`BrowserUnavailable` when neither works (not a Debian-like system, or the
    package archive cannot be reached).
    """
    if (Path("/") / BINARY).is_file():
        return Chromium(Path("/") / BINARY)
    exe = cache / BINARY
    if exe.is_file():
        return Chromium(exe, {"LD_LIBRARY_PATH": _library_path(cache)})
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise BrowserUnavailable(
            "Chromium is not installed and fetching Debian's package needs apt-get and dpkg-deb; "
            "install Chromium (`apt-get install chromium`) or run on Debian/Ubuntu"
        )
    stage = cache.with_name(cache.name + ".partial")
    try:
        try:
            _fetch(stage)
        except BrowserUnavailable:  # a stale package list: resolve and download again after an update
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
            _fetch(stage)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if not (stage / BINARY).is_file():
        raise BrowserUnavailable(f"Debian's chromium package holds no {BINARY}")
    shutil.rmtree(cache, ignore_errors=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    os.replace(stage, cache)  # whole or not at all: a half-unpacked browser is never picked up
    return Chromium(exe, {"LD_LIBRARY_PATH": _library_path(cache)})
