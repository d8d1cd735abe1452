"""The `ouro` command line: subcommands, the lines users type, defaults that chain."""

import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

import ouro
from ouro.cli.main import app
from ouro.paths import DEFAULT_RENDER_DIR, GSO_ROOT_ENV, default_gso_root, resolve_gso_root

SUBCOMMANDS = ["render", "filter", "train", "sample", "eval-gso", "export", "app"]
runner = CliRunner()


def parse(line: str) -> dict:
    """Parse a command line exactly as click would, returning the subcommand's parameters."""
    group = typer.main.get_command(app)
    name, *args = line.split()
    command = group.commands[name]
    with command.make_context(name, args) as ctx:
        return ctx.params


def test_help_lists_every_subcommand():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output
    assert sorted(typer.main.get_command(app).commands) == sorted(SUBCOMMANDS)


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"ouro {ouro.__version__}"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help_for_every_option(name):
    command = typer.main.get_command(app).commands[name]
    assert command.help
    for param in command.params:
        if param.name != "help":
            assert getattr(param, "help", None), f"{name}: {param.name} has no help"


def test_render_line_parses_and_defaults_to_data_renders():
    params = parse("render --objaverse-ids ids.txt")
    assert params["objaverse_ids"] == Path("ids.txt")
    assert params["output"] == DEFAULT_RENDER_DIR == Path("data/renders")
    assert params["resolution"] == 512 and params["orbits"] == 2 and params["frames"] == 16
    assert (params["elevation_min"], params["elevation_max"]) == (-5.0, 30.0)


def test_filter_and_train_read_the_render_folder_by_default():
    assert parse("filter")["render_dir"] == DEFAULT_RENDER_DIR
    params = parse("train --gpus 8")
    assert params["gpus"] == 8 and params["data"] == DEFAULT_RENDER_DIR
    assert params["output"] is None  # -> runs/<name>/, resolved by the pipeline


def test_sample_and_eval_lines_parse():
    params = parse("sample img.png -o out/")
    assert params["images"] == (Path("img.png"),) or list(params["images"]) == [Path("img.png")]
    assert params["output"] == Path("out/")
    assert params["steps"] is None and params["seed"] == 0  # None: the model's own step count
    assert params["anchor_input"] is None  # None: the model's own setting (the demo anchors view 0)
    assert parse("sample img.png --no-anchor-input")["anchor_input"] is False
    assert parse("eval-gso")["gso_root"] is None and parse("eval-gso")["anchor_input"] is None
    assert parse("eval-gso --anchor-input")["anchor_input"] is True
    assert parse("export g.ply -o m.glb --format obj")["format"].value == "obj"
    assert parse("sample img.png")["video_size"] == 512 and parse("sample img.png")["mesh"] is False
    assert parse("sample img.png --mesh --video-size 256")["video_size"] == 256


def test_app_serves_loopback_only_and_shares_nothing_by_default():
    params = parse("app")
    assert params["host"] == "127.0.0.1" and params["share"] is False and params["port"] is None
    assert params["output"] == Path("out/app")


def test_bad_option_values_are_usage_errors():
    result = runner.invoke(app, ["render", "--engine", "eevee"])
    assert result.exit_code == 2 and "eevee" in result.output
    result = runner.invoke(app, ["train", "--gpus", "0"])
    assert result.exit_code == 2


def test_bare_train_says_what_it_needs_in_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--gpus", "8"])
    assert result.exit_code == 2
    assert "--init-svd" in result.output and "Usage" not in result.output
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_gso_root_resolution_order(monkeypatch, tmp_path):
    monkeypatch.delenv(GSO_ROOT_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("OURO_CACHE", raising=False)
    assert resolve_gso_root() == default_gso_root() == tmp_path / "xdg" / "ouro" / "gso"
    monkeypatch.setenv(GSO_ROOT_ENV, str(tmp_path / "env"))
    assert resolve_gso_root() == tmp_path / "env"
    assert resolve_gso_root(tmp_path / "opt") == tmp_path / "opt"


def test_console_script_runs():
    exe = Path(sys.executable).with_name("ouro")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "eval-gso" in out.stdout


def test_the_command_line_loads_without_torch():
    """`ouro --help` must not wait for torch (~2.5 s here): option vocabularies and camera defaults
    come from torch-free modules (ouro.pipelines.choices, ouro.conventions); torch loads in a command."""
    code = "import sys, ouro.cli.main; print(sorted(m for m in ('torch', 'numpy', 'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
