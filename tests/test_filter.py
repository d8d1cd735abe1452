"""`ouro filter`: keep/drop with reasons from metadata and renders; kept list and CSV report."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import render_assets as assets
from ouro.cli.main import app
from ouro.pipelines.filter import FilterSettings, filter_renders, judge_object

runner = CliRunner()
RES = 32


def disc(colour_fn, radius=9.0, centre=(16, 16)) -> np.ndarray:
    """An RGBA uint8 frame with a disc of foreground coloured by ``colour_fn(ys, xs) -> [H, W, 3]``."""
    ys, xs = np.mgrid[0:RES, 0:RES]
    inside = (ys + 0.5 - centre[0]) ** 2 + (xs + 0.5 - centre[1]) ** 2 < radius**2
    rgba = np.zeros((RES, RES, 4), np.uint8)
    rgba[..., :3] = colour_fn(ys, xs)
    rgba[..., 3] = inside * 255
    return rgba


def textured(ys, xs):
    return np.stack([(xs * 8) % 256, (ys * 8) % 256, ((xs + ys) * 4) % 256], -1)


def flat(ys, xs):
    return np.broadcast_to(np.array([180, 120, 60]), ys.shape + (3,))


def write_object(root: Path, uid: str, frame_fn, mesh: dict | None = None, annotations: dict | None = None,
                 orbits: int = 2, frames: int = 3) -> Path:
    """A render folder in ``ouro render``'s layout (meta.json + <orbit>/<frame>.png)."""
    folder = root / uid
    locations = []
    for o in range(orbits):
        for f in range(frames):
            name = f"{o:03d}/{f:03d}.png"
            (folder / f"{o:03d}").mkdir(parents=True, exist_ok=True)
            rgba = frame_fn(o, f)
            cv2.imwrite(str(folder / name), rgba[..., [2, 1, 0, 3]])
            locations.append({"orbit": o, "frame": f, "transform_matrix": np.eye(4).tolist(), "frames": [{"name": name}]})
    mesh = {"faces": 1000, "vertices": 600, "animated": False, "image_textures": 1, "missing_textures": 0,
            "vertex_colors": False, "base_colors": 1, **(mesh or {})}
    meta = {"camera_angle_x": 0.69, "locations": locations, "uid": uid, "resolution": RES,
            "orbits": [{"index": o} for o in range(orbits)], "frames_per_orbit": frames,
            "source": {"kind": "objaverse", "annotations": annotations}, "mesh": mesh}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture()
def planted(tmp_path):
    root = tmp_path / "renders"
    good = lambda o, f: disc(textured)  # noqa: E731
    write_object(root, "good", good)
    write_object(root, "good_by", good, annotations={"license": "by", "faceCount": 5000, "animationCount": 0})
    write_object(root, "empty", lambda o, f: np.zeros((RES, RES, 4), np.uint8))
    write_object(root, "tiny", lambda o, f: disc(textured, radius=1.5))
    write_object(root, "flat", lambda o, f: disc(flat))
    write_object(root, "clipped", lambda o, f: disc(textured, radius=12, centre=(16, 4)))
    write_object(root, "nc", good, annotations={"license": "by-nc", "faceCount": 100, "animationCount": 0})
    write_object(root, "heavy", good, mesh={"faces": 3_000_000})
    write_object(root, "animated", good, annotations={"license": "cc0", "animationCount": 2})
    write_object(root, "untextured", good, mesh={"image_textures": 0, "base_colors": 1})
    write_object(root, "two_colours", good, mesh={"image_textures": 0, "base_colors": 2})
    write_object(root, "vertex_coloured", good, mesh={"image_textures": 0, "vertex_colors": True, "base_colors": 0})
    (write_object(root, "missing_frame", good) / "001" / "002.png").unlink()
    (root / ".staging" / "half").mkdir(parents=True)  # an unfinished object is not an object
    (root / "failures.jsonl").write_text(
        json.dumps({"uid": "broken", "reason": "RuntimeError: Bad GLB"}) + "\n"
        + json.dumps({"uid": "good", "reason": "timed out"}) + "\nnot json\n")
    return root


def test_each_rule_drops_with_its_reason(planted):
    reports = {r.uid: r for r in filter_renders(planted, FilterSettings(licenses=("by", "cc0")))}
    kept = sorted(uid for uid, r in reports.items() if r.keep)
    assert kept == ["good", "good_by", "two_colours", "vertex_coloured"]
    why = {uid: "; ".join(r.reasons) for uid, r in reports.items()}
    assert "empty or tiny render" in why["empty"] and "empty or tiny render" in why["tiny"]
    assert "near-constant colour" in why["flat"]
    assert "clipped by the frame border" in why["clipped"]
    assert "licence by-nc not in the allow-list" == why["nc"]
    assert "too many faces" in why["heavy"] and why["animated"] == "animated"
    assert why["untextured"].startswith("texture-less")
    assert "missing or unreadable frames: 1 of 6 (e.g. 001/002.png)" in why["missing_frame"]
    assert why["broken"] == "render failed: RuntimeError: Bad GLB"  # failed, no folder
    assert "half" not in reports and reports["good"].keep  # a later success wins over an old failure
    assert reports["good"].frames == 6 and reports["good"].color_std > 0.1 and reports["flat"].color_std < 1e-6


def test_thresholds_and_switches_are_options(planted):
    loose = FilterSettings(min_alpha=0.0, max_border_alpha=1.0, min_color_std=0.0, max_faces=None,
                           drop_animated=False, drop_untextured=False)
    reports = {r.uid: r for r in filter_renders(planted, loose, workers=2)}
    assert {uid for uid, r in reports.items() if not r.keep} == {"missing_frame", "broken"}
    assert judge_object(planted / "nc", FilterSettings(licenses=None)).keep


def test_cli_writes_the_kept_list_and_report(planted):
    result = runner.invoke(app, ["filter", str(planted), "--licenses", "by,cc0"])
    assert result.exit_code == 0, result.output
    kept = (planted / "kept.txt").read_text().split()
    assert kept == ["good", "good_by", "two_colours", "vertex_coloured"]
    with open(planted / "filter_report.csv", newline="") as f:
        rows = {row["uid"]: row for row in csv.DictReader(f)}
    assert rows["good"]["keep"] == "1" and rows["good"]["reasons"] == "ok"
    assert rows["flat"]["keep"] == "0" and "near-constant colour" in rows["flat"]["reasons"]
    assert rows["nc"]["license"] == "by-nc" and rows["broken"]["keep"] == "0"
    assert f"kept 4 of {len(rows)} objects" in result.output
    custom = planted.parent / "lists"
    result = runner.invoke(app, ["filter", str(planted), "-o", str(custom / "k.txt"), "--report", str(custom / "r.csv"),
                                 "--keep-untextured", "--keep-animated", "--max-faces", "0"])
    assert result.exit_code == 0 and {"untextured", "animated", "heavy", "nc"} <= set((custom / "k.txt").read_text().split())


def test_annotations_file_supplies_licences(planted, tmp_path):
    import gzip

    with gzip.open(tmp_path / "000-000.json.gz", "wt") as f:
        json.dump({"good": {"license": "by-nc-sa", "faceCount": 10, "animationCount": 0}}, f)
    result = runner.invoke(app, ["filter", str(planted), "--licenses", "by", "--annotations", str(tmp_path)])
    assert result.exit_code == 0
    assert "good" not in (planted / "kept.txt").read_text().split()


@pytest.mark.parametrize("args", [["nowhere"], ["EMPTY"], ["RENDERS", "--min-alpha", "2"], ["RENDERS", "--annotations", "nope.json"]])
def test_usage_errors_exit_2(args, planted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").mkdir()
    args = [str(planted) if a == "RENDERS" else a for a in args]
    result = runner.invoke(app, ["filter", *args])
    assert result.exit_code == 2 and "ouro: error:" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_filter_on_real_renders_drops_planted_empty_and_textureless(tmp_path_factory, tmp_path):
    main = assets.main_render(tmp_path_factory)
    renders = tmp_path / "renders"
    shutil.copytree(main["out"], renders)
    # plant an empty render and a texture-less (constant colour) one, from a real object's folder
    for uid, change in (("planted_empty", "alpha"), ("planted_flat", "colour")):
        shutil.copytree(renders / "basketball", renders / uid)
        for png in (renders / uid).glob("[0-9]*/*.png"):
            image = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
            if change == "alpha":
                image[..., 3] = 0
            else:
                image[..., :3] = (40, 90, 160)
            cv2.imwrite(str(png), image)
    result = runner.invoke(app, ["filter", str(renders)])
    assert result.exit_code == 0, result.output
    kept = (renders / "kept.txt").read_text().split()
    assert sorted(kept) == sorted(["basketball", "chicken", "rock1", "vc_box", assets.CACHED_UID])
    with open(renders / "filter_report.csv", newline="") as f:
        rows = {row["uid"]: row for row in csv.DictReader(f)}
    assert "empty or tiny render" in rows["planted_empty"]["reasons"]
    assert "near-constant colour" in rows["planted_flat"]["reasons"]
    assert rows["plain_box"]["reasons"].startswith("texture-less")  # rendered, but one plain colour
    assert rows["corrupt"]["reasons"].startswith("render failed")


def _with_mesh_hash(folder: Path, digest: str) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta["source"]["sha256"] = digest
    (folder / "meta.json").write_text(json.dumps(meta))


def test_holdout_split_follows_the_mesh_hash(tmp_path):
    """Copies of one mesh land on one side; the fraction is met; an object's side ignores the others."""
    from ouro.pipelines.filter import holdout_uids

    root = tmp_path / "renders"
    uids = [f"obj{i:03d}" for i in range(400)]
    for i, uid in enumerate(uids):
        (root / uid).mkdir(parents=True)
        meta = {"uid": uid, "source": {"kind": "file", "sha256": f"{i // 2:064x}"}}  # pairs share a mesh
        (root / uid / "meta.json").write_text(json.dumps(meta))
    held = holdout_uids(root, uids, 0.1)
    assert 20 <= len(held) <= 60  # 10 % of 400, pairs move together (binomial over 200 meshes)
    for i in range(0, 400, 2):
        assert (uids[i] in held) == (uids[i + 1] in held)
    assert holdout_uids(root, uids[:50], 0.1) == held & set(uids[:50])  # independent of the other objects
    assert holdout_uids(root, uids, 0.0) == set()
    with pytest.raises(ValueError, match="fraction"):
        holdout_uids(root, uids, 1.0)


def test_cli_holdout_writes_both_lists(planted):
    for uid in ("good", "good_by", "two_colours", "vertex_coloured"):
        _with_mesh_hash(planted / uid, f"{uid}-mesh")
    result = runner.invoke(app, ["filter", str(planted), "--licenses", "by,cc0", "--holdout", "0.5"])
    assert result.exit_code == 0, result.output
    kept = (planted / "kept.txt").read_text().split()
    held = (planted / "heldout.txt").read_text().split()
    assert sorted(kept + held) == ["good", "good_by", "two_colours", "vertex_coloured"] and not set(kept) & set(held)
    assert held and kept  # with 4 meshes at 50 %, both sides are used for these hashes
    assert f"held out {len(held)} of the 4 good objects" in result.output
