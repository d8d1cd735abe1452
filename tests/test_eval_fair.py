"""`ouro eval-gso` cannot flatter: a view that is the input is never scored as generated, the
ground-truth cache is keyed on every setting that changes its pixels, and report.md says what
differs from the paper's rows it lists. Fast: a hand-written ground-truth cache (tests/handmade.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import handmade
from ouro.cli.main import app
from ouro.pipelines.evaluate import PSNR_CAP_DB, EvalCameras, EvalSettings, gt_tag

runner = CliRunner()
SIZE = 32


@pytest.fixture(scope="module")
def gt(tmp_path_factory) -> dict:
    """One object's cached ground truth (z up, workbench, 32 px) and its objects list."""
    root = tmp_path_factory.mktemp("fair")
    gt_dir = root / "gt"
    tagged = gt_dir / gt_tag(EvalCameras(), EvalSettings(resolution=SIZE, engine="workbench"))
    handmade.gt_object(tagged, "Obj", SIZE)
    (root / "objects.txt").write_text("Obj\n")
    return {"root": root, "gt": gt_dir, "tagged": tagged, "objects": root / "objects.txt"}


def args(gt: dict, out: Path, *extra: str) -> list[str]:
    return ["eval-gso", "--objects", str(gt["objects"]), "--gt-dir", str(gt["gt"]), "--engine", "workbench",
            "--resolution", str(SIZE), "--points", "0", "--no-download", "--gso-root", str(gt["root"] / "no-gso"),
            "-o", str(out), *extra]


def predictions(folder: Path, gt: dict, view0: str) -> Path:
    """White views 1..7; view 0 white, or an exact copy of the input (ground-truth view 0 on white)."""
    views = folder / "Obj" / "views"
    views.mkdir(parents=True)
    for k in range(8):
        if k == 0 and view0 == "copy":
            Image.fromarray(handmade.gt_view(gt["tagged"], "Obj", 0)).save(views / "000.png")
        else:
            Image.new("RGB", (SIZE, SIZE), (255, 255, 255)).save(views / f"{k:03d}.png")
    return folder


def white_psnr(gt: dict, k: int) -> float:
    """PSNR of a white view against ground-truth view ``k`` (8-bit, on white), by hand."""
    target = handmade.gt_view(gt["tagged"], "Obj", k).astype(np.float64) / 255
    return -10 * math.log10(np.mean((1.0 - target) ** 2))


# -- (a) a view that is the input is never scored as generated ------------------------------------
def test_a_predicted_view_0_that_copies_the_input_is_not_scored(gt, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, args(gt, out, "--predictions", str(predictions(tmp_path / "pred", gt, "copy"))))
    assert result.exit_code == 0, result.output  # --count-input is the default
    summary = json.loads((out / "summary.json").read_text())
    expected = np.mean([white_psnr(gt, k) for k in range(1, 8)])
    assert summary["means"]["views"]["psnr"] == pytest.approx(expected, abs=1e-4)  # the 7 generated views only
    assert summary["views_counted"] == list(range(1, 8)) and summary["view0_is_input"] == ["Obj"]
    res = json.loads((out / "objects" / "Obj" / "result.json").read_text())
    assert res["views"]["psnr"][0] == PSNR_CAP_DB and res["view0_is_input"] is True  # kept per view, flagged
    report = " ".join((out / "report.md").read_text().split())
    assert "view 0 is the input image itself" in report and "never scored as a generated view" in report
    assert f"{expected:.3f}" in report and "100.00" not in report


def test_a_generated_view_0_still_counts_with_count_input(gt, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, args(gt, out, "--predictions", str(predictions(tmp_path / "pred", gt, "white"))))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["views_counted"] == list(range(8)) and summary["view0_is_input"] == []
    assert summary["means"]["views"]["psnr"] == pytest.approx(np.mean([white_psnr(gt, k) for k in range(8)]), abs=1e-4)


@pytest.mark.parametrize("anchor", [True, False])
def test_an_anchored_view_0_is_left_out_of_views_and_splats(anchor, gt, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    flag = "--anchor-input" if anchor else "--no-anchor-input"
    result = runner.invoke(app, args(gt, out, "--checkpoint", str(tiny_checkpoint), "--steps", "1", flag))
    assert result.exit_code == 0, result.output
    res = json.loads((out / "objects" / "Obj" / "result.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    first = 1 if anchor else 0
    for part in ("views", "splats"):  # the same views for both, so the deltas compare like with like
        assert summary["means"][part]["psnr"] == pytest.approx(np.mean(res[part]["psnr"][first:]), rel=1e-9)
        assert summary["means"][part]["lpips"] == pytest.approx(np.mean(res[part]["lpips"]["alex"][first:]), rel=1e-9)
    assert summary["views_counted"] == list(range(first, 8)) and res["view0_is_input"] is anchor
    assert ("view 0 is the input image itself" in " ".join((out / "report.md").read_text().split())) is anchor


# -- (b) the ground-truth cache is keyed on every setting that changes its pixels -----------------
def test_the_cache_tag_names_every_setting_that_changes_the_pixels():
    cams = EvalCameras()
    base = EvalSettings(resolution=64, engine="cycles", samples=16, up_axis="z")
    tags = {gt_tag(cams, base)}
    for change in ({"up_axis": "y"}, {"samples": 64}, {"resolution": 128}, {"engine": "workbench"}):
        tags.add(gt_tag(cams, EvalSettings(**{**base.__dict__, **change})))
    tags.add(gt_tag(EvalCameras(radius=2.0), base))
    tags.add(gt_tag(EvalCameras(fov_deg=30.0), base))
    tags.add(gt_tag(EvalCameras(num_views=6), base))
    assert len(tags) == 8
    # the workbench engine takes no samples: its renders are shared across --samples
    wb = EvalSettings(resolution=64, engine="workbench")
    assert gt_tag(cams, wb) == gt_tag(cams, EvalSettings(resolution=64, engine="workbench", samples=64))


def test_a_run_with_another_up_axis_does_not_reuse_the_cached_ground_truth(gt, tmp_path):
    pred = predictions(tmp_path / "pred", gt, "white")
    first = runner.invoke(app, args(gt, tmp_path / "z", "--predictions", str(pred)))
    assert first.exit_code == 0 and "0 rendered, 1 reused" in first.output, first.output
    second = runner.invoke(app, args(gt, tmp_path / "y", "--predictions", str(pred), "--up-axis", "y"))
    # the y-up ground truth is not cached and its GSO folder is not here: nothing can be scored
    assert second.exit_code == 2, second.output
    assert "reused" not in second.output and "not in" in " ".join(second.output.split())
    assert not (tmp_path / "y" / "summary.json").exists()


# -- (c) report.md says what differs from the paper's rows -----------------------------------------
def test_report_says_resolution_objects_and_protocol_differ_from_the_papers_rows(gt, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, args(gt, out, "--predictions", str(predictions(tmp_path / "pred", gt, "white"))))
    assert result.exit_code == 0, result.output
    report = " ".join((out / "report.md").read_text().split())
    assert "Ouroboros3D (paper) | 512 |" in report
    assert "Not like for like with the paper's rows:" in report
    assert "Resolution: ours at 32 px, the paper's at 512 px" in report
    assert "Objects: ours are 1 GSO object of this run's list; the paper scored 100 GSO objects it did not publish" in report
    assert "Protocol: the paper did not publish its evaluation protocol" in report and "all views" in report
    # the notes sit between Table 1 and Table 2, beside the rows they qualify
    assert report.index("Not like for like") < report.index("## Table 2")


def test_at_the_papers_resolution_only_objects_and_protocol_are_flagged():
    from ouro.pipelines.eval_report import comparability_notes

    summary = {"objects": {"scored": 100}, "count_input": False, "views_counted": list(range(1, 8)), "view0_is_input": []}
    notes = comparability_notes(summary, 512)
    assert [n.split(":")[0] for n in notes] == ["Objects", "Protocol"]
    assert "views 1-7 (input view excluded)" in notes[1]
