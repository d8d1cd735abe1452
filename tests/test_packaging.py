"""The distribution: package mapping, and a non-editable install that works outside the source tree."""

import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_declared():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    declared = set(cfg["packages"])
    found = set()
    for top, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([top, *rel.parts]))
    assert found == declared


def test_no_generic_top_level_names():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(p == "ouro" or p.startswith("ouro.") for p in cfg["packages"])


@pytest.mark.slow
def test_non_editable_install_works_outside_the_tree(tmp_path):
    """`pip install .` into a venv that reuses this venv's packages gives a working `ouro` and `ouro.pipelines`."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True).strip())
    # Reuse the test venv's dependencies; a .pth line adds the folder without running its .pth files,
    # so this venv's editable `ouro` finder stays out.
    (site / "_reuse_test_venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(ROOT)],
        check=True, env=env, cwd=tmp_path, timeout=600,
    )
    probe = "import ouro, ouro.pipelines, ouro.cli.main, ouro.geometry; print(ouro.__file__)"
    where = subprocess.check_output([str(py), "-c", probe], text=True, env=env, cwd=tmp_path).strip()
    assert Path(where).is_relative_to(site), where
    assert not (site / "cli").exists() and not (site / "pipelines").exists()
    out = subprocess.run([str(venv / "bin" / "ouro"), "--help"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "eval-gso" in out.stdout
