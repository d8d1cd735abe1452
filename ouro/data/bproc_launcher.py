# Run a BlenderProc script on the PyPI ``bpy`` wheel, with no Blender binary and no network.
#
# This file is a standalone script (it imports nothing from ouro) so that it also works as the
# ``blender`` executable of a fake Blender folder for ``blenderproc run --custom-blender-path``.
#
# Usage:
#   python bproc_launcher.py --blender-dir DIR SCRIPT TEMP_DIR [ARGS...]
#       in-process bootstrap: prepare DIR, import bpy and blenderproc, run SCRIPT with
#       sys.argv = [SCRIPT, *ARGS] and BlenderProc's temporary folder TEMP_DIR.
#   python bproc_launcher.py --as-blender DIR [BLENDER ARGS...]
#       behave like ``DIR/blender --background ... --python SCRIPT -- SCRIPT TEMP_DIR ARGS`` as
#       BlenderProc's CLI calls it, so that DIR (holding a ``blender`` file that execs this line and
#       an empty ``4.2/`` folder) works as ``blenderproc run --custom-blender-path DIR``.
#
# What it works around (measured with BlenderProc 2.8.0 + bpy 4.2.23):
# 1. BlenderProc derives Blender's folder from ``sys.executable`` (``DIR/4.2/python/bin/python3.11``)
#    and calls pip unless ``DIR/custom-python-packages/installed_packages_cache_v2.json`` lists all
#    of its default packages at their pinned versions: we write that file, so pip is never called
#    (the venv already holds what BlenderProc imports).
# 2. ``import blenderproc`` removes its own site-packages from ``sys.path``: an alias of every
#    site-packages folder and of the folder BlenderProc is in (``<dir>/.``) is appended first, so the
#    venv's packages stay importable.
# 3. The script ends the process itself (``os._exit``) because bpy 4.2 can crash at interpreter
#    exit after a glTF import or export; if it returns, we flush and ``os._exit`` here.

from __future__ import annotations

import json
import os
import runpy
import site
import sys
import traceback

MAJOR = "4.2"
CACHE_NAME = "installed_packages_cache_v2.json"
USAGE = (
    "usage: bproc_launcher.py --blender-dir DIR SCRIPT TEMP_DIR [ARGS...]\n"
    "       bproc_launcher.py --as-blender DIR [--background ...] --python SCRIPT -- SCRIPT TEMP_DIR [ARGS...]"
)


def _pinned_packages() -> dict:
    """BlenderProc's default pip packages as {name: version or None}, read from BlenderProc itself."""
    import importlib.util

    spec = importlib.util.find_spec("blenderproc")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("blenderproc is not installed in this Python (pip install 'ouro3d[render]')")
    path = os.path.join(list(spec.submodule_search_locations)[0], "python", "utility", "DefaultConfig.py")
    text = open(path, encoding="utf-8").read()
    start = text.index("default_pip_packages")
    body = text[text.index("[", start) + 1 : text.index("]", start)]
    names = [p.strip().strip("\"'") for p in body.replace("\n", " ").split(",") if p.strip()]
    out = {}
    for name in names:
        pkg, _, version = name.lower().partition("==")
        out[pkg] = version or None
    return out


def prepare_blender_dir(blender_dir: str) -> str:
    """Create the fake Blender folder BlenderProc expects; return the fake ``sys.executable``."""
    bin_dir = os.path.join(blender_dir, MAJOR, "python", "bin")
    pkg_dir = os.path.join(blender_dir, "custom-python-packages")
    os.makedirs(bin_dir, exist_ok=True)
    os.makedirs(pkg_dir, exist_ok=True)
    cache = os.path.join(pkg_dir, CACHE_NAME)
    wanted = _pinned_packages()
    try:
        with open(cache, encoding="utf-8") as f:
            current = json.load(f)
    except (OSError, ValueError):
        current = None
    if current != wanted:
        tmp = f"{cache}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(wanted, f)
        os.replace(tmp, cache)  # atomic: parallel workers may race here
    return os.path.join(bin_dir, "python3.11")


def _keep_site_packages() -> None:
    import importlib.util

    # the folder BlenderProc itself was found in, too: in a venv that reaches its packages through a
    # .pth line (a venv layered on another), that folder is not one of site.getsitepackages()
    spec = importlib.util.find_spec("blenderproc")
    found = [os.path.dirname(list(spec.submodule_search_locations)[0])] if spec and spec.submodule_search_locations else []
    for path in site.getsitepackages() + [site.getusersitepackages()] + found:
        alias = os.path.join(path, ".")
        if os.path.isdir(path) and alias not in sys.path:
            sys.path.append(alias)


def _exit(code: int) -> None:
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def run(blender_dir: str, script: str, temp_dir: str, args: list[str]) -> None:
    """Import bpy and BlenderProc as ``blenderproc run`` would, then run ``script``; never returns."""
    real_executable = sys.executable
    fake_executable = prepare_blender_dir(blender_dir)
    _keep_site_packages()
    os.environ["INSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT"] = "1"
    os.environ.pop("PYTHONPATH", None)
    sys.argv = ["blender", "--background", "--", script, temp_dir, *args]
    sys.executable = fake_executable
    try:
        import bpy  # noqa: F401  (must come before blenderproc)
        import blenderproc  # noqa: F401  (runs SetupUtility: sys.argv becomes [script, *args])
    except BaseException:
        traceback.print_exc()
        _exit(3)
    finally:
        sys.executable = real_executable
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    _exit(code)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--blender-dir"] and len(argv) >= 4:
        run(argv[1], argv[2], argv[3], argv[4:])
    if argv[:1] == ["--as-blender"] and len(argv) >= 2:
        rest = argv[2:]
        if "--python" in rest and "--" in rest and len(rest) - rest.index("--") >= 3:
            script = rest[rest.index("--python") + 1]
            tail = rest[rest.index("--") + 1 :]
            run(argv[1], script, tail[1], tail[2:])
    print(USAGE, file=sys.stderr)
    _exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
