"""Bad input, every command: one clear line (exit 2) naming the file and the fix, nothing lost, nothing left.

Issue 26's sweep, case by case (ids that would name paths outside the output, unwritable outputs,
broken training data, NaN Gaussians, 16-bit and huge images, malformed meta.json, out-of-range
seeds, bad prediction views, stale failure records, file modes, export folders). The data are
hand-written in the real layouts (tests/handmade.py); only the failed-then-fixed render needs Blender.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from plyfile import PlyData, PlyElement
from typer.testing import CliRunner

import handmade
from ouro.cli.main import app

runner = CliRunner()
SEED_TOO_BIG = "99999999999999999999999"


def error_line(result) -> str:
    """The one ``ouro: error:`` line of a failed command (and no traceback)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), (result.exception, result.output)
    errors = [line for line in result.output.splitlines() if line.startswith("ouro: error:")]
    assert len(errors) == 1, result.output
    return " ".join(result.output[result.output.index("ouro: error:"):].split())  # soft-wrapped: one logical line


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def object_png(path: Path, size: int = 96) -> Path:
    Image.fromarray(handmade.object_frame(size), "RGBA").save(path)
    return path


def sphere_columns(n: int = 337) -> dict[str, np.ndarray]:
    """Stored 3DGS columns of ``n`` Gaussians on a sphere of radius 0.5 (sigma 0.02, opacity 0.9, grey)."""
    from ouro.gaussians import Gaussians
    from ouro.gaussians.ply import gaussians_to_ply_arrays

    k = torch.arange(n, dtype=torch.float64) + 0.5
    y = 1 - 2 * k / n
    r = (1 - y * y).sqrt()
    phi = np.pi * (3 - np.sqrt(5)) * k
    means = 0.5 * torch.stack([r * phi.cos(), y, r * phi.sin()], -1)
    g = Gaussians(means=means.float(), scales=torch.full((n, 3), 0.02), rotations=torch.tensor([1.0, 0, 0, 0]).expand(n, 4).clone(),
                  opacities=torch.full((n,), 0.9), colors=torch.full((n, 3), 0.6))
    return gaussians_to_ply_arrays(g)


def save_columns(cols: dict[str, np.ndarray], path: Path) -> Path:
    data = np.empty(len(cols["x"]), dtype=[(k, "<f4") for k in cols])
    for k, v in cols.items():
        data[k] = v
    PlyData([PlyElement.describe(data, "vertex")]).write(str(path))
    return path


def stored_rows(path: Path) -> np.ndarray:  # [N, 14] as stored
    v = PlyData.read(str(path))["vertex"]
    return np.stack([np.asarray(v[n], dtype=np.float64) for n in v.data.dtype.names], 1)


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> Path:
    """A clean render folder of two hand-written objects (64 px, one orbit of 16 frames)."""
    root = tmp_path_factory.mktemp("renders") / "renders"
    for uid in ("good1", "good2"):
        handmade.render_folder_object(root, uid)
    return root


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory) -> dict:
    """A cached eval-gso ground truth of one object at 32 px, and white predictions for it."""
    from ouro.pipelines.evaluate import EvalCameras, EvalSettings, gt_tag

    root = tmp_path_factory.mktemp("eval")
    gt = root / "gt"
    handmade.gt_object(gt / gt_tag(EvalCameras(), EvalSettings(resolution=32, engine="workbench")), "Obj", 32)
    (root / "objects.txt").write_text("Obj\n")
    views = root / "white" / "Obj" / "views"
    views.mkdir(parents=True)
    for k in range(8):
        Image.new("RGB", (32, 32), (255, 255, 255)).save(views / f"{k:03d}.png")
    return {"root": root, "gt": gt, "objects": root / "objects.txt", "white": root / "white"}


def eval_args(inputs: dict, predictions: Path, out: Path, *extra: str) -> list[str]:
    return ["eval-gso", "--objects", str(inputs["objects"]), "--gt-dir", str(inputs["gt"]), "--predictions", str(predictions),
            "--engine", "workbench", "--resolution", "32", "--points", "0", "--no-download",
            "--gso-root", str(inputs["root"] / "no-gso"), "-o", str(out), *extra]


@pytest.fixture
def unwritable_dir(tmp_path) -> Path:
    """A folder this user cannot create files in: a 0o555 folder, or (as root, whom modes do not
    stop) sysfs, which refuses new files to everyone."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys/kernel")):
        try:
            fd, name = tempfile.mkstemp(dir=candidate)
        except OSError:
            yield candidate
            folder.chmod(0o755)
            return
        os.close(fd)
        os.unlink(name)
    folder.chmod(0o755)
    pytest.skip("no folder here refuses new files to this user")


# -- 1. ids from files never build a path outside the output ----------------------------------------
def test_an_ids_line_with_dot_dots_deletes_nothing_outside_the_output(tmp_path):
    """A line of --objaverse-ids is never used as a folder name: the staging folder of a bad line
    ``../../victim`` would be ``out/.staging/../../victim.<host>.<pid>``, i.e. the sentinel below."""
    from ouro.data.objaverse import ObjaverseCache
    from ouro.io.files import host_name
    from ouro.pipelines.render import RenderSettings, collect_sources, render_objects

    sentinel = tmp_path / f"victim.{host_name()}.{os.getpid()}"
    (sentinel / "keep").mkdir(parents=True)
    (sentinel / "keep" / "precious.txt").write_text("do not delete")
    ids = tmp_path / "ids.txt"
    ids.write_text("fedcba9876543210fedcba9876543210\n../../victim\n/etc/passwd\n")
    out = tmp_path / "out"
    summary = render_objects(collect_sources([], ids), out, RenderSettings(engine="workbench"),
                             cache=ObjaverseCache(tmp_path / "objaverse", download=False))
    assert (sentinel / "keep" / "precious.txt").read_text() == "do not delete"
    assert summary.failed == 3 and summary.rendered == 0
    records = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert sorted(r["uid"] for r in records) == ["fedcba9876543210fedcba9876543210", "ids.txt-line2", "ids.txt-line3"]
    reasons = {r["uid"]: r["reason"] for r in records}
    assert "line 2" in reasons["ids.txt-line2"] and "../../victim" in reasons["ids.txt-line2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.txt", "out", sentinel.name]


def test_kept_lists_and_object_lists_refuse_path_like_ids(tmp_path, renders):
    from ouro.data.dataset import DatasetError, RenderFolderDataset
    from ouro.pipelines import gso

    (tmp_path / "kept.txt").write_text("good1\n../good2\n")
    with pytest.raises(DatasetError, match=r"line 2 '\.\./good2' is not a valid uid"):
        RenderFolderDataset(renders, kept=tmp_path / "kept.txt")
    (tmp_path / "objects.txt").write_text("Obj\nObj/../../x\n")
    with pytest.raises(ValueError, match=r"line 2 'Obj/\.\./\.\./x' is not a GSO object name"):
        gso.read_object_list(tmp_path / "objects.txt")


def test_filter_never_keeps_a_folder_whose_name_is_not_a_uid(tmp_path, renders):
    root = tmp_path / "renders"
    shutil.copytree(renders, root)
    shutil.copytree(root / "good1", root / "bad name;rm")
    result = runner.invoke(app, ["filter", str(root)])
    assert result.exit_code == 0, result.output
    assert (root / "kept.txt").read_text().split() == ["good1", "good2"]
    rows = {row["uid"]: row for row in csv.DictReader(open(root / "filter_report.csv"))}
    assert rows["bad name;rm"]["keep"] == "0" and "not a valid uid" in rows["bad name;rm"]["reasons"]


# -- 2. outputs that cannot be written: one line before the work, nothing left ----------------------
def _command(name: str, out: str, tmp: Path, inputs: dict) -> list[str]:
    if name == "export":
        return ["export", str(inputs["ply"]), "-o", out if out.endswith(".glb") else out + ".glb"]
    if name == "render":
        return ["render", str(inputs["obj"]), "-o", out, "--engine", "workbench", "--resolution", "16", "--orbits", "1", "--frames", "1"]
    if name == "filter":
        return ["filter", str(inputs["renders"]), "-o", out]
    if name == "filter-report":
        return ["filter", str(inputs["renders"]), "-o", str(tmp / "kept.txt"), "--report", out]
    if name == "train":
        return ["train", "--preset", "tiny", "--data", str(inputs["renders"]), "--max-steps", "1", "--workers", "0", "-o", out]
    if name == "eval-gso":
        return eval_args(inputs["eval"], inputs["eval"]["white"], Path(out))
    if name == "sample":
        return ["sample", str(inputs["png"]), "--checkpoint", str(inputs["checkpoint"]), "--steps", "1", "-o", out]
    raise AssertionError(name)


COMMANDS = ["export", "render", "filter", "filter-report", "train", "eval-gso", "sample"]


@pytest.mark.parametrize("kind", ["read-only folder", "an existing file (a folder for filter)", "parent is a file"])
@pytest.mark.parametrize("name", COMMANDS)
def test_unwritable_outputs_exit_2_before_the_work(name, kind, tmp_path, renders, eval_inputs, tiny_checkpoint, request):
    data = tmp_path / "renders"
    shutil.copytree(renders, data)
    inputs = {"ply": save_columns(sphere_columns(), tmp_path / "in.ply"), "renders": data, "eval": eval_inputs,
              "png": object_png(tmp_path / "in.png"), "checkpoint": tiny_checkpoint,
              "obj": tmp_path / "box.obj"}
    inputs["obj"].write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("I am a file\n")
    if kind == "read-only folder":
        out = str(request.getfixturevalue("unwritable_dir") / "out")
    elif kind == "parent is a file":
        out = str(blocker / "out")
    elif name.startswith("filter"):
        out = str(tmp_path / "a-folder")
        Path(out).mkdir()
    else:
        out = str(blocker) if name != "export" else str(tmp_path / "x.glb" / "y")
        if name == "export":  # an export to a file is replaced, fine; a path under a file is not
            (tmp_path / "x.glb").write_text("a file")
    before = files_under(tmp_path)
    message = error_line(runner.invoke(app, _command(name, out, tmp_path, inputs)))
    if kind == "read-only folder":
        expected = "cannot write in"
    elif kind == "parent is a file":
        expected = "a-file is a file, not a folder; choose another"
    elif name.startswith("filter"):
        expected = "a-folder is a folder; give a file name"
    else:
        expected = "x.glb is a file, not a folder" if name == "export" else "a-file is a file; give a folder"
    assert expected in message, message
    assert files_under(tmp_path) == before  # no partial outputs, no staging or temporary files


# -- 3. training data checked before the first step -------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated frame", "null meta.json", "missing frame", "not an image"])
def test_train_refuses_broken_objects_before_the_first_step(damage, tmp_path, renders):
    data = tmp_path / "renders"
    shutil.copytree(renders, data)
    bad = handmade.render_folder_object(data, "broken")
    frame = bad / "000" / "011.png"
    if damage == "truncated frame":
        frame.write_bytes(frame.read_bytes()[:-40])
    elif damage == "null meta.json":
        (bad / "meta.json").write_text("null")
    elif damage == "missing frame":
        frame.unlink()
    else:
        frame.write_bytes(b"GIF89a this is not a picture")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--preset", "tiny", "--data", str(data), "--max-steps", "2", "--batch-size", "2",
                                 "--workers", "0", "--sample-every", "0", "--lpips-weight", "0", "-o", str(out)])
    message = error_line(result)
    named = "meta.json" if damage == "null meta.json" else "011.png"
    assert f"broken/{'meta.json' if damage == 'null meta.json' else '000/011.png'}" in message and named in message
    assert "1 of 3 training objects" in message and "ouro filter" in message
    assert not out.exists()  # no run folder: nothing was started


def test_the_data_check_lists_every_bad_object_and_filter_drops_them(tmp_path, renders):
    from ouro.data.dataset import RenderFolderDataset

    data = tmp_path / "renders"
    shutil.copytree(renders, data)
    (handmade.render_folder_object(data, "nullmeta") / "meta.json").write_text("null")
    cut = handmade.render_folder_object(data, "cut") / "000" / "003.png"
    cut.write_bytes(cut.read_bytes()[:100])
    problems = RenderFolderDataset(data, 64).verify()
    assert len(problems) == 2 and any("cut/000/003.png" in p for p in problems) and any("nullmeta" in p for p in problems)
    assert runner.invoke(app, ["filter", str(data)]).exit_code == 0
    assert (data / "kept.txt").read_text().split() == ["good1", "good2"]  # the fix the message names works
    assert RenderFolderDataset(data, 64, kept=data / "kept.txt").verify() == []


# -- 4. NaN / Inf Gaussians --------------------------------------------------------------------------
def test_export_of_all_nan_gaussians_is_refused(tmp_path):
    src = save_columns({k: np.full_like(v, np.nan) for k, v in sphere_columns().items()}, tmp_path / "nan.ply")
    for out in ("out.ply", "out.glb"):
        message = error_line(runner.invoke(app, ["export", str(src), "-o", str(tmp_path / out)]))
        assert "nan.ply" in message and "all 337 Gaussians hold NaN or Inf" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.ply"]


def _ten_bad_rows() -> dict[str, np.ndarray]:
    cols = {k: v.copy() for k, v in sphere_columns().items()}
    for i, key in enumerate(("x", "y", "z", "opacity", "f_dc_0", "scale_0", "rot_0", "x", "y", "z")):
        cols[key][i * 30] = np.nan if i % 2 == 0 else np.inf
    return cols


def test_export_drops_nonfinite_gaussians_and_says_how_many(tmp_path):
    cols = _ten_bad_rows()
    src = save_columns(cols, tmp_path / "some.ply")
    result = runner.invoke(app, ["export", str(src), "-o", str(tmp_path / "clean.ply")])
    assert result.exit_code == 0, result.output
    assert "dropped 10 of 337 Gaussians holding NaN or Inf" in " ".join(result.output.split())
    rows = stored_rows(tmp_path / "clean.ply")
    good = np.logical_and.reduce([np.isfinite(v) for v in cols.values()])
    expected = np.stack([cols[k][good] for k in cols], 1)
    assert rows.shape == (327, 14) and np.isfinite(rows).all()
    np.testing.assert_array_equal(rows, expected)  # the finite rows, exactly as stored


@pytest.mark.slow
def test_a_few_nonfinite_gaussians_no_longer_kill_the_mesh(tmp_path):
    """10 bad rows of 337 made the mesh's extent NaN ("no surface"); dropped, the mesh is exactly that
    of the 327 finite Gaussians alone, a closed shell about the radius-0.5 sphere."""
    import trimesh

    cols = _ten_bad_rows()
    good = np.logical_and.reduce([np.isfinite(v) for v in cols.values()])
    src = save_columns(cols, tmp_path / "some.ply")
    clean = save_columns({k: v[good] for k, v in cols.items()}, tmp_path / "clean.ply")
    meshes = []
    for ply, out in ((src, "m.glb"), (clean, "clean.glb")):
        result = runner.invoke(app, ["export", str(ply), "-o", str(tmp_path / out), "--resolution", "48", "--voxels", "48"])
        assert result.exit_code == 0, result.output
        meshes.append(trimesh.load(tmp_path / out, force="mesh"))
    np.testing.assert_array_equal(meshes[0].vertices, meshes[1].vertices)
    np.testing.assert_array_equal(meshes[0].faces, meshes[1].faces)
    extent = np.ptp(meshes[0].vertices, axis=0)
    assert len(meshes[0].faces) > 500 and np.all((extent > 0.95) & (extent < 1.25)), extent


# -- 5. every Pillow mode at its own scale ----------------------------------------------------------
GREY = 0.3  # the object's grey level on a white background


def _grey_picture() -> np.ndarray:  # [96, 96] in [0, 1]
    img = np.ones((96, 96))
    img[30:66, 20:76] = GREY
    return img


def _in_mode(mode: str) -> Image.Image:
    g = _grey_picture()
    if mode == "I;16":
        return Image.fromarray(np.round(g * 65535).astype(np.uint16))
    if mode == "I;16B":
        return Image.fromarray(np.round(g * 65535).astype(">u2"))
    if mode == "I":
        return Image.fromarray(np.round(g * 65535).astype(np.int32))
    if mode == "F":
        return Image.fromarray(g.astype(np.float32))
    if mode == "LA":  # grey + alpha: the object opaque, the background transparent (and black)
        return Image.fromarray(np.stack([np.round(g * 255), (g < 1) * 255], -1).astype(np.uint8), "LA")
    if mode == "P":  # palette, index 0 transparent
        idx = np.where(g < 1, 1, 0).astype(np.uint8)
        im = Image.fromarray(idx, "P")
        grey = round(GREY * 255)
        im.putpalette([0, 0, 0, grey, grey, grey] + [0] * (256 * 3 - 6))
        im.info["transparency"] = 0
        return im
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F", "LA", "P"])
def test_every_pillow_mode_is_prepared_as_it_looks(mode):
    from ouro.data.preprocess import prepare_image

    image = _in_mode(mode)
    assert image.mode == mode
    prepared = prepare_image(image, 64)  # segmented (alpha or border colour), centred, on white
    torch.testing.assert_close(prepared.image[:, 32, 32], torch.full((3,), GREY), atol=0.01, rtol=0)  # not clipped to white
    assert prepared.image[:, 1, 1].tolist() == [1.0, 1.0, 1.0]
    rows = torch.nonzero(prepared.mask[0].amax(1) > 0.5)[:, 0]
    cols = torch.nonzero(prepared.mask[0].amax(0) > 0.5)[:, 0]
    assert abs((cols.max() - cols.min() + 1).item() - round(64 * 0.6)) <= 1  # the 56 x 36 box spans 60 %, as any input
    assert abs((rows.max() - rows.min() + 1).item() - round(64 * 0.6 * 36 / 56)) <= 1
    kept = prepare_image(image, 96, keep_background=True)  # as is: grey on white (transparent = white)
    torch.testing.assert_close(kept.image[:, 48, 48], torch.full((3,), GREY), atol=0.01, rtol=0)
    assert kept.image[:, 5, 5].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F", "LA", "P"])
def test_every_pillow_mode_reads_at_its_own_scale(mode):
    from ouro.data.preprocess import image_to_rgba

    rgba = image_to_rgba(_in_mode(mode))
    assert rgba.shape == (96, 96, 4) and rgba.dtype == np.float32
    np.testing.assert_allclose(rgba[40, 40], [GREY, GREY, GREY, 1.0], atol=0.003)  # the object
    if mode in ("LA", "P"):
        assert rgba[5, 5, 3] == 0.0  # transparent background
    else:
        np.testing.assert_allclose(rgba[5, 5], 1.0)  # white background


def test_a_16_bit_grey_png_samples_as_it_looks(tmp_path, tiny_checkpoint):
    path = tmp_path / "grey16.png"
    Image.fromarray(np.round(_grey_picture() * 65535).astype(np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    for flag, out in (([], tmp_path / "seg"), (["--keep-background"], tmp_path / "kept")):
        result = runner.invoke(app, ["sample", str(path), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--steps", "1",
                                     "--video-frames", "2", *flag])
        assert result.exit_code == 0, result.output
        centre = np.asarray(Image.open(out / "input.png"))[32, 32]
        assert np.abs(centre.astype(int) - round(GREY * 255)).max() <= 2, centre  # grey, not white


# -- 6. a meta.json that is JSON but not an object --------------------------------------------------
@pytest.mark.parametrize("text,why", [
    ("null", "holds null, not a JSON object"),
    ("[1, 2]", "holds list, not a JSON object"),
    ('{"mesh": 5}', "'mesh' is int, not an object"),
    ('{"locations": 5}', "'locations' is not a list"),
    ('{"locations": [{"frames": [7]}]}', "'locations' is not a list"),
    ('{"source": {"annotations": [1]}}', "'source.annotations' is list"),
    ('{"frames_per_orbit": "16"}', "'frames_per_orbit' is str"),
])
def test_filter_records_a_malformed_meta_json_and_filters_the_rest(text, why, tmp_path, renders):
    root = tmp_path / "renders"
    shutil.copytree(renders, root)
    (handmade.render_folder_object(root, "odd") / "meta.json").write_text(text)
    result = runner.invoke(app, ["filter", str(root)])
    assert result.exit_code == 0, result.output
    assert (root / "kept.txt").read_text().split() == ["good1", "good2"]
    rows = {row["uid"]: row for row in csv.DictReader(open(root / "filter_report.csv"))}
    assert rows["odd"]["keep"] == "0" and why in rows["odd"]["reasons"], rows["odd"]


# -- 7. decompression bombs --------------------------------------------------------------------------
def test_a_15000_px_png_is_refused_with_the_limit_and_how_to_resize(tmp_path, tiny_checkpoint):
    huge = handmade.big_png(tmp_path / "huge.png", 15000, 15000)
    out = tmp_path / "out"
    message = error_line(runner.invoke(app, ["sample", str(huge), "-o", str(out), "--checkpoint", str(tiny_checkpoint)]))
    assert "huge.png: 225 megapixels" in message and "179-megapixel limit" in message and "resize" in message
    assert not out.exists()


# -- 8. seeds ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["sample", "x.png"], ["train"], ["eval-gso"], ["render", "x.glb"]])
@pytest.mark.parametrize("seed", [SEED_TOO_BIG, "-1"])
def test_out_of_range_seeds_are_refused_when_parsed(command, seed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = error_line(runner.invoke(app, [*command, "--seed", seed]))
    assert f"--seed {seed}: choose a whole number from 0 to 9223372036854775807" in message
    assert list(tmp_path.iterdir()) == []


def test_the_largest_seed_samples():
    from ouro.conventions import SEED_MAX
    from ouro.pipelines.sample import SamplePipeline, SampleSettings
    from conftest import make_tiny_models

    pipe = SamplePipeline(make_tiny_models())
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert pipe(image, SampleSettings(num_steps=1, seed=SEED_MAX)).views.shape == (8, 3, 64, 64)
    with pytest.raises(ValueError, match="seed"):
        pipe(image, SampleSettings(num_steps=1, seed=SEED_MAX + 1))


# -- 9. another method's views ------------------------------------------------------------------------
@pytest.mark.parametrize("damage,named,why", [
    ("mixed sizes", "001.png", "48x48 px, but 000.png is 32x32; save every view at one square size"),
    ("not square", "000.png", "48x32 px, not square"),
    ("truncated", "003.png", "damaged or truncated"),
])
def test_bad_prediction_views_fail_the_object_naming_the_file(damage, named, why, tmp_path, eval_inputs):
    pred = tmp_path / "pred"
    shutil.copytree(eval_inputs["white"], pred)
    views = pred / "Obj" / "views"
    if damage == "mixed sizes":
        Image.new("RGB", (48, 48), (255, 255, 255)).save(views / "001.png")
    elif damage == "not square":
        for k in range(8):
            Image.new("RGB", (48, 32), (255, 255, 255)).save(views / f"{k:03d}.png")
    else:
        Image.fromarray(handmade.object_frame(32)).save(views / "003.png")
        (views / "003.png").write_bytes((views / "003.png").read_bytes()[:120])
    out = tmp_path / "out"
    result = runner.invoke(app, eval_args(eval_inputs, pred, out))
    assert result.exit_code == 1, result.output  # the object failed; the run reports it
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objects"]["scored"] == 0
    reason = summary["failed"][0]["reason"]
    assert f"views/{named}" in reason and why in reason, reason
    assert f"views/{named}" in " ".join(result.output.split())


# -- 10. failures.jsonl forgets an object once it renders -------------------------------------------
@pytest.mark.slow
def test_an_object_that_failed_then_rendered_leaves_failures_jsonl(tmp_path):
    if importlib.util.find_spec("bpy") is None:
        pytest.skip("needs the render extra (bpy)")
    args = ["render", str(tmp_path / "box.obj"), "-o", str(tmp_path / "out"), "--engine", "workbench", "--resolution", "16",
            "--orbits", "1", "--frames", "2"]
    assert runner.invoke(app, args).exit_code == 1  # no such file yet
    failures = tmp_path / "out" / "failures.jsonl"
    with open(failures, "a") as f:  # another object's record and a cut line stay
        f.write(json.dumps({"uid": "someone_else", "reason": "timed out"}) + "\n" + '{"uid": "box", "rea\n')
    assert [json.loads(line)["uid"] for line in failures.read_text().splitlines()[:2]] == ["box", "someone_else"]
    (tmp_path / "box.obj").write_text("".join(f"v {x} {y} {z}\n" for x in (-.5, .5) for y in (-.5, .5) for z in (-.5, .5))
                                      + "f 1 2 4 3\nf 5 7 8 6\nf 1 5 6 2\nf 3 4 8 7\nf 1 3 7 5\nf 2 6 8 4\n")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "box" / "meta.json").is_file()
    assert failures.read_text().splitlines() == [json.dumps({"uid": "someone_else", "reason": "timed out"}), '{"uid": "box", "rea']


# -- 11. output paths and file modes -----------------------------------------------------------------
def test_an_output_under_a_file_says_so(tmp_path):
    src = save_columns(sphere_columns(), tmp_path / "in.ply")
    (tmp_path / "ok.glb").write_text("a file")
    message = error_line(runner.invoke(app, ["export", str(src), "-o", str(tmp_path / "ok.glb" / "x.glb")]))
    assert "ok.glb is a file, not a folder" in message and "does not exist" not in message


@pytest.mark.slow
def test_results_are_written_with_the_users_umask(tmp_path, tiny_checkpoint):
    from conftest import make_tiny_models
    from ouro.gaussians.ply import read_ply, write_ply
    from ouro.io.checkpoint import save_checkpoint

    src = save_columns(sphere_columns(), tmp_path / "in.ply")
    previous = os.umask(0o022)
    try:
        for out in ("m.glb", "m.obj", "m.ply"):
            assert runner.invoke(app, ["export", str(src), "-o", str(tmp_path / out), "--resolution", "32", "--voxels", "32"]).exit_code == 0
        write_ply(tmp_path / "g.ply", read_ply(src))
        save_checkpoint(tmp_path / "ckpt", make_tiny_models())
        result = runner.invoke(app, ["sample", str(object_png(tmp_path / "in.png")), "-o", str(tmp_path / "s"), "--checkpoint",
                                     str(tiny_checkpoint), "--steps", "1", "--video-frames", "2"])
        assert result.exit_code == 0, result.output
    finally:
        os.umask(previous)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    for name in ("m.glb", "m.obj", "m.ply", "g.ply", "s/gaussians.ply", "s/views.png"):
        assert mode(tmp_path / name) == 0o644, (name, oct(mode(tmp_path / name)))
    assert mode(tmp_path / "ckpt") == 0o755
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


# -- 12. export creates its output folder, as sample does -------------------------------------------
def test_export_creates_a_missing_output_folder(tmp_path):
    src = save_columns(sphere_columns(), tmp_path / "in.ply")
    result = runner.invoke(app, ["export", str(src), "-o", str(tmp_path / "new" / "dir"), "--format", "ply"])
    assert result.exit_code == 0, result.output
    assert stored_rows(tmp_path / "new" / "dir" / "in.ply").shape == (337, 14)
    result = runner.invoke(app, ["export", str(src), "-o", str(tmp_path / "newdir"), "--format", "glb", "--resolution", "32",
                                 "--voxels", "32"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "newdir").iterdir()) == ["in.glb"]
    # a refused export creates no folder
    bad = save_columns({k: np.full_like(v, np.inf) for k, v in sphere_columns().items()}, tmp_path / "inf.ply")
    error_line(runner.invoke(app, ["export", str(bad), "-o", str(tmp_path / "never"), "--format", "ply"]))
    assert not (tmp_path / "never").exists()
