"""`ouro render`: inputs, shards, Objaverse cache, real BlenderProc renders and their cameras."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import render_assets as assets
from ouro.cli.main import app
from ouro.data.objaverse import ObjaverseCache, is_uid, parse_uid_lines
from ouro.geometry import blender_to_ours, intrinsics_from_fov, orbit_cameras, project_points
from ouro.pipelines import render as pipeline
from ouro.pipelines.render_inputs import collect_sources, parse_shard, select_shard, shard_index

runner = CliRunner()
RENDERED = ["basketball", "chicken", "rock1", "vc_box", "plain_box", assets.CACHED_UID]


def read_rgba(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.dtype == np.uint8 and image.shape[2] == 4, path
    return image[..., [2, 1, 0, 3]]


# -- fast: inputs, shards, ids, cache, usage errors -----------------------------------------------
def test_uid_lines_accept_plain_and_lgm_csv_rows():
    uids, bad = parse_uid_lines(f"# comment\n000-001,{assets.CACHED_UID}\n\n{assets.UNCACHED_UID}.glb\n"
                                f"{assets.CACHED_UID}\n000-130,kiDgUIcaC7c4YaIcLCJeq4kS7rK\n../../etc/passwd\n")
    assert uids == [assets.CACHED_UID, assets.UNCACHED_UID]
    assert [line for line, _ in bad] == [6, 7]
    assert is_uid(assets.CACHED_UID) and not is_uid(assets.CACHED_UID.upper()) and not is_uid("../x")


def test_inputs_resolve_files_gso_folders_and_folders_of_them(tmp_path):
    gso = tmp_path / "objs" / "Toy_Car"
    (gso / "meshes").mkdir(parents=True)
    (gso / "meshes" / "model.obj").write_text("v 0 0 0\n")
    (gso / "materials" / "textures").mkdir(parents=True)
    (tmp_path / "objs" / "a").mkdir()
    (tmp_path / "objs" / "a" / "chair.OBJ").write_text("v 0 0 0\n")
    (tmp_path / "objs" / "b").mkdir()
    (tmp_path / "objs" / "b" / "chair.glb").write_bytes(b"x")
    (tmp_path / "objs" / "notes.txt").write_text("x")
    (tmp_path / "objs" / ".hidden").mkdir()
    (tmp_path / "objs" / ".hidden" / "x.glb").write_bytes(b"x")
    (tmp_path / "my mesh.gltf").write_text("{}")
    sources = collect_sources([tmp_path / "objs", tmp_path / "my mesh.gltf", tmp_path / "objs" / "notes.txt",
                               tmp_path / "gone.glb", tmp_path / "objs" / "Toy_Car"])
    by_kind = {(s.kind, s.uid.split("-")[0]) for s in sources}
    assert ("gso", "Toy_Car") in by_kind and ("file", "my_mesh.gltf") not in by_kind
    uids = [s.uid for s in sources]
    assert len(uids) == len(set(uids)) == 6  # the GSO folder given twice is one object
    chairs = [s for s in sources if s.uid.startswith("chair")]
    assert len(chairs) == 2 and all(len(s.uid) == len("chair-") + 8 for s in chairs)  # collision -> path hash
    gso_src = next(s for s in sources if s.kind == "gso")
    assert gso_src.path == gso / "meshes" / "model.obj" and gso / "materials" / "textures" in gso_src.texture_dirs
    errors = {s.uid: s.error for s in sources if s.error}
    assert "unsupported file type .txt" in errors["notes"] and "no such file" in errors["gone"]
    assert "my_mesh" in uids


def test_shards_partition_exactly_and_do_not_depend_on_order(tmp_path):
    (tmp_path / "ids.txt").write_text("\n".join(f"{i:032x}" for i in range(200)))
    sources = collect_sources([], tmp_path / "ids.txt")
    parts = [select_shard(sources, (i, 3)) for i in range(3)]
    uids = [sorted(s.uid for s in part) for part in parts]
    assert sorted(sum(uids, [])) == sorted(s.uid for s in sources)
    assert all(len(u) > 40 for u in uids)  # roughly balanced
    assert select_shard(sources[::-1], (1, 3)) == parts[1][::-1]
    assert all(shard_index(s.uid, 3) == i for i, part in enumerate(parts) for s in part)
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_elevations_are_seeded_per_object_and_in_range():
    settings = pipeline.RenderSettings(seed=3)
    a = pipeline.orbit_elevations("chair", settings)
    assert a == pipeline.orbit_elevations("chair", settings) and len(a) == 2
    assert a != pipeline.orbit_elevations("table", settings)
    assert a != pipeline.orbit_elevations("chair", pipeline.RenderSettings(seed=4))
    many = [e for i in range(300) for e in pipeline.orbit_elevations(str(i), settings)]
    assert -5 <= min(many) < 0 and 25 < max(many) <= 30
    elevations, azimuths, c2w, c2w_blender = pipeline.plan_cameras("chair", settings)
    assert c2w.shape == (32, 4, 4) and azimuths[1] == 22.5
    torch.testing.assert_close(blender_to_ours(c2w_blender), c2w)


def test_objaverse_cache_offline(tmp_path):
    versioned = assets.fake_objaverse_cache(tmp_path, assets.plain_box(tmp_path / "box.glb"))
    cache = ObjaverseCache(versioned, download=False)
    path = cache.fetch(assets.CACHED_UID)
    assert path == versioned / "glbs" / "000-001" / f"{assets.CACHED_UID}.glb"
    assert cache.annotations(assets.CACHED_UID)["license"] == "cc0"
    with pytest.raises(LookupError, match="not in the local objaverse cache.*downloads are off"):
        cache.fetch(assets.UNCACHED_UID)
    with pytest.raises(LookupError, match="unknown Objaverse uid"):
        cache.fetch("ab" * 16)
    with pytest.raises(ValueError, match="not an Objaverse uid"):
        cache.fetch("../../etc/passwd")
    # without object-paths.json.gz the shard folders are searched
    (versioned / "object-paths.json.gz").unlink()
    assert ObjaverseCache(versioned).fetch(assets.CACHED_UID) == path
    with pytest.raises(LookupError, match="not in the local objaverse cache"):
        ObjaverseCache(versioned).fetch(assets.UNCACHED_UID)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to render"),
        (["--objaverse-ids", "ids.txt"], "--objaverse-ids ids.txt: no such file"),
        (["x.glb", "--shard", "2/2"], "--shard"),
        (["x.glb", "--elevation-min", "40", "--elevation-max", "30"], "elevation range"),
        (["x.glb", "--blender", "nowhere/blender"], "--blender"),
        (["x.glb", "--fov", "200"], "fov"),
    ],
)
def test_usage_errors_exit_2_in_one_line_and_write_nothing(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["render", *args, "-o", "out"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_an_ids_file_without_uids_is_a_usage_error(tmp_path):
    (tmp_path / "empty.txt").write_text("# no ids\nhello\n")
    result = runner.invoke(app, ["render", "--objaverse-ids", str(tmp_path / "empty.txt"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "holds no Objaverse uid" in result.output


def test_dry_run_shards_partition_the_command_line_inputs(tmp_path):
    for i in range(9):
        (tmp_path / f"m{i}.obj").write_text("v 0 0 0\n")
    (tmp_path / "ids.txt").write_text("\n".join(f"{i:032x}" for i in range(7)))
    base = ["render", str(tmp_path), "--objaverse-ids", str(tmp_path / "ids.txt"), "-o", str(tmp_path / "out"),
            "--dry-run"]
    everything = runner.invoke(app, base)
    assert everything.exit_code == 0
    all_uids = [line.split("\t")[0] for line in everything.output.splitlines()]
    assert len(all_uids) == 16
    shards = []
    for i in range(2):
        result = runner.invoke(app, [*base, "--shard", f"{i}/2"])
        assert result.exit_code == 0
        shards.append({line.split("\t")[0] for line in result.output.splitlines()})
    assert shards[0].isdisjoint(shards[1]) and shards[0] | shards[1] == set(all_uids)
    assert shards[0] and shards[1]


# -- slow: real renders -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def main(tmp_path_factory):
    return assets.main_render(tmp_path_factory)


@pytest.mark.slow
def test_render_writes_orbits_meta_and_failures(main):
    out, result = main["out"], main["result"]
    assert result.exit_code == 1, result.output  # some inputs fail on purpose
    assert "rendered 6" in result.output and "failed 4" in result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(RENDERED)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    reasons = {f["uid"]: f["reason"] for f in failures}
    # a bad ids line is recorded under "<ids file>-line<N>", never under its own text (it could hold ../)
    assert set(reasons) == {"corrupt", "missing", assets.UNCACHED_UID, "ids.csv-line3"}
    assert "GLB" in reasons["corrupt"] or "glTF" in reasons["corrupt"]
    assert "no such file" in reasons["missing"]
    assert "not in the local objaverse cache" in reasons[assets.UNCACHED_UID] and "downloads are off" in reasons[assets.UNCACHED_UID]
    assert "not an Objaverse uid" in reasons["ids.csv-line3"] and "'not-a-uid'" in reasons["ids.csv-line3"]


@pytest.mark.slow
@pytest.mark.parametrize("uid", RENDERED)
def test_frames_are_rgba_non_empty_centred_and_match_the_cameras(main, uid):
    folder = main["out"] / uid
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["uid"] == uid and meta["resolution"] == 128 and len(meta["locations"]) == 32
    assert meta["renderer"]["name"] == "BlenderProc" and meta["renderer"]["engine"] == "workbench"
    assert meta["renderer"]["blender"].startswith("4.2")
    assert len(meta["source"]["sha256"]) == 64
    elevations = [o["elevation"] for o in meta["orbits"]]
    assert len(elevations) == 2 and all(-5 <= e <= 30 for e in elevations)
    assert elevations == pipeline.orbit_elevations(uid, pipeline.RenderSettings(seed=7))
    names = sorted(p.relative_to(folder).as_posix() for p in folder.glob("[0-9]*/*.png"))
    assert names == sorted(f"{o:03d}/{f:03d}.png" for o in range(2) for f in range(16))
    assert [loc["frames"][0]["name"] for loc in meta["locations"]] == [f"{o:03d}/{f:03d}.png" for o in range(2) for f in range(16)]

    c2w = blender_to_ours(torch.tensor([loc["transform_matrix"] for loc in meta["locations"]], dtype=torch.float64))
    expected = torch.cat([orbit_cameras(16, e, 0.0, meta["radius"], dtype=torch.float64) for e in elevations])
    torch.testing.assert_close(c2w, expected)
    K = intrinsics_from_fov(np.rad2deg(meta["camera_angle_x"]), 128, 128, dtype=torch.float64).expand(32, 3, 3)
    lo = torch.tensor(meta["normalization"]["bbox_min"], dtype=torch.float64)
    hi = torch.tensor(meta["normalization"]["bbox_max"], dtype=torch.float64)
    assert torch.linalg.norm(hi - lo).item() == pytest.approx(1.0, abs=1e-4)  # diagonal normalisation
    uv, depth = project_points(((lo + hi) / 2)[None], c2w, K)
    torch.testing.assert_close(uv[:, 0], torch.full((32, 2), 64.0, dtype=torch.float64), atol=1e-3, rtol=0)
    corners = torch.stack(torch.meshgrid(*[torch.stack([lo[i], hi[i]]) for i in range(3)], indexing="ij"), -1).reshape(8, 3)
    uv_corners, _ = project_points(corners, c2w, K)
    for i, loc in enumerate(meta["locations"]):
        rgba = read_rgba(folder / loc["frames"][0]["name"])
        assert rgba.shape == (128, 128, 4)
        alpha = rgba[..., 3] > 0
        assert alpha.mean() > 0.02, f"{loc['frames'][0]['name']} is nearly empty"
        assert rgba[0, 0, 3] == 0 and not alpha[[0, -1]].any() and not alpha[:, [0, -1]].any()  # transparent, in frame
        ys, xs = np.nonzero(alpha)
        assert abs(xs.mean() + 0.5 - 64) < 16 and abs(ys.mean() + 0.5 - 64) < 16  # centred
        # every foreground pixel lies inside the projected bounding box (2 px for antialiasing)
        lo_uv, hi_uv = uv_corners[i].min(0).values.numpy(), uv_corners[i].max(0).values.numpy()
        assert xs.min() >= lo_uv[0] - 2 and xs.max() + 1 <= hi_uv[0] + 2
        assert ys.min() >= lo_uv[1] - 2 and ys.max() + 1 <= hi_uv[1] + 2


@pytest.mark.slow
def test_depth_and_xyz_maps_agree_with_the_object_box(main):
    folder = main["out"] / "vc_box"
    meta = json.loads((folder / "meta.json").read_text())
    lo, hi = np.array(meta["normalization"]["bbox_min"]), np.array(meta["normalization"]["bbox_max"])
    for loc in meta["locations"][::7]:
        frame = loc["frames"][0]
        depth = cv2.imread(str(folder / frame["depth"]), cv2.IMREAD_UNCHANGED)
        xyz = cv2.imread(str(folder / frame["xyz"]), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and xyz.dtype == np.uint16 and xyz.shape == (128, 128, 4)
        xyz = xyz[..., [2, 1, 0, 3]].astype(np.float64)
        fg = xyz[..., 3] > 0
        assert fg.sum() > 100 and ((depth > 0) == fg).all()
        points = (xyz[..., :3][fg] / 65535 * 2 - 1) * meta["depth"]["xyz_bound"]
        assert (points >= lo - 0.01).all() and (points <= hi + 0.01).all()
        z = depth[fg] * meta["depth"]["depth_scale"]
        assert meta["radius"] - 0.87 < z.min() and z.max() < meta["radius"] + 0.87
    # frame 0 looks at the +z face (z = bbox max) straight on: its XYZ z is constant there
    frame = meta["locations"][0]["frames"][0]
    xyz = cv2.imread(str(folder / frame["xyz"]), cv2.IMREAD_UNCHANGED)[..., [2, 1, 0, 3]].astype(np.float64)
    centre_z = (xyz[60:68, 60:68, 2] / 65535 * 2 - 1).mean()
    assert centre_z == pytest.approx(hi[2], abs=2e-3)


@pytest.mark.slow
def test_textures_and_vertex_colours_survive(main):
    out = main["out"]
    vc = read_rgba(out / "vc_box" / "000" / "000.png").astype(float)
    fg = vc[..., 3] > 200
    cols = np.nonzero(fg.any(0))[0]
    left, right = vc[:, cols[0]:cols[0] + 10][fg[:, cols[0]:cols[0] + 10]], vc[:, cols[-1] - 9:cols[-1] + 1][fg[:, cols[-1] - 9:cols[-1] + 1]]
    assert right[:, 0].mean() > left[:, 0].mean() + 60  # red where x > 0 (image right at azimuth 0)
    assert left[:, 2].mean() > right[:, 2].mean() + 60  # blue where x < 0
    for uid in ("basketball", "rock1", assets.CACHED_UID):
        meta = json.loads((out / uid / "meta.json").read_text())
        assert meta["mesh"]["image_textures"] >= 1 and meta["mesh"]["missing_textures"] == 0, uid
    meta = json.loads((out / assets.CACHED_UID / "meta.json").read_text())
    assert meta["source"]["kind"] == "objaverse" and meta["source"]["annotations"]["license"] == "cc0"
    basketball = read_rgba(out / "basketball" / "000" / "000.png")[..., :3][read_rgba(out / "basketball" / "000" / "000.png")[..., 3] > 200]
    assert basketball[:, 0].mean() > basketball[:, 2].mean() + 40  # orange leather, not grey
    gso = json.loads((out / "rock1" / "meta.json").read_text())
    assert gso["source"]["kind"] == "gso" and gso["source"]["path"].endswith("meshes/model.obj")
    # the GSO copy is stored +z up (as GSO ships meshes); rendered, it stands as the +y-up original:
    # the normalised box in ouro's frame has the original's extents, axis by axis
    original = np.array([[float(v) for v in line.split()[1:4]] for line in
                         (main["models"]["rock1"] / "rock1.obj").read_text().splitlines() if line.startswith("v ")])
    extent = original.max(0) - original.min(0)
    norm = gso["normalization"]
    assert norm["up_axis"] == "z"
    np.testing.assert_allclose(np.subtract(norm["bbox_max"], norm["bbox_min"]), gso["normalization"]["scale"] * extent, rtol=1e-3)


@pytest.mark.slow
def test_second_run_renders_nothing_new(main):
    out = main["out"]
    stamps = {uid: (out / uid / "meta.json").stat().st_mtime_ns for uid in RENDERED}
    result = runner.invoke(app, main["args"])
    assert result.exit_code == 1, result.output
    assert "rendered 0, skipped 6" in result.output
    assert stamps == {uid: (out / uid / "meta.json").stat().st_mtime_ns for uid in RENDERED}
    assert not (out / ".staging").exists()


@pytest.mark.slow
def test_cycles_engine(tmp_path, main, monkeypatch):
    """Also a relative --output: the workers run in their own folder, so it must be made absolute."""
    glb = main["root"] / "glb" / "vc_box.glb"
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["render", str(glb), "-o", "out", "--resolution", "48", "--orbits", "1",
                                 "--frames", "3", "--engine", "cycles"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "out" / "vc_box" / "meta.json").read_text())
    assert meta["renderer"]["engine"] == "cycles" and meta["renderer"]["samples"] == 16
    assert meta["renderer"]["denoiser"] is None
    rgba = read_rgba(tmp_path / "out" / "vc_box" / "000" / "001.png")
    assert rgba[0, 0, 3] == 0 and (rgba[..., 3] > 0).mean() > 0.05


@pytest.mark.slow
def test_blender_option_runs_blenderproc_with_that_blender(tmp_path, main):
    """`--blender DIR` goes through `blenderproc run --custom-blender-path DIR`; DIR here is a shim
    whose `blender` runs the bpy wheel (the same launcher, in its `--as-blender` mode)."""
    shim = tmp_path / "blender-4.2"
    (shim / "4.2").mkdir(parents=True)
    exe = shim / "blender"
    exe.write_text(f"#!/bin/sh\nexec '{sys.executable}' '{pipeline.LAUNCHER}' --as-blender \"$(dirname \"$0\")\" \"$@\"\n")
    exe.chmod(0o755)
    glb = main["root"] / "glb" / "vc_box.glb"
    result = runner.invoke(app, ["render", str(glb), "-o", str(tmp_path / "out"), "--resolution", "32", "--orbits", "1",
                                 "--frames", "2", "--engine", "workbench", "--blender", str(exe)])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "out" / "vc_box" / "meta.json").read_text())
    assert meta["renderer"]["backend"].startswith("blender: ")
    assert (read_rgba(tmp_path / "out" / "vc_box" / "000" / "001.png")[..., 3] > 0).any()


@pytest.mark.slow
def test_timeout_kills_the_worker_and_leaves_no_partial_folder(tmp_path, main):
    glb = main["root"] / "glb" / "vc_box.glb"
    result = runner.invoke(app, ["render", str(glb), "-o", str(tmp_path / "out"), "--resolution", "32", "--orbits", "1",
                                 "--frames", "2", "--engine", "workbench", "--timeout", "0.5"])
    assert result.exit_code == 1
    record = json.loads((tmp_path / "out" / "failures.jsonl").read_text())
    assert record["uid"] == "vc_box" and record["reason"] == "timed out after 0.5 s"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["failures.jsonl"]
