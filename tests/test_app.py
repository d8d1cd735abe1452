"""`ouro app`: the page served in-process on a free port, called with gradio_client and driven in a
real headless Chromium (Debian's package, fetched by tests/browser.py when it is not installed).

The served model is the embedded demo at a few steps; the expected outputs are computed here by
calling the sample pipeline directly with the same settings.
"""

import io
import json
import os
import socket
import zipfile
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from browser import FLAGS, BrowserUnavailable, chromium
from ouro.data.preprocess import InputImageError, prepare_image
from ouro.gaussians.ply import read_ply
from ouro.paths import cache_dir
from ouro.pipelines.app import DEMO_LABEL, AppRequest, OuroApp, launch
from ouro.pipelines.export import MeshSettings
from ouro.pipelines.sample import SampleSettings, load_pipeline

ROOT = Path(__file__).resolve().parents[1]
CHAIR = ROOT / "examples" / "chair.png"
STEPS = 2
VIDEO_SIZE = 96
VIDEO_FRAMES = 12
MESH = MeshSettings(image_size=96, voxels=96)  # a coarse mesh: seconds, not tens of seconds
PRUNE = 0.005  # write_ply's opacity floor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(app, url)``: the demo served on loopback with the repository's chair as its example."""
    app = OuroApp(tmp_path_factory.mktemp("app") / "out", {DEMO_LABEL: ("demo", None)}, video_frames=VIDEO_FRAMES, mesh_settings=MESH)
    blocks, url = launch(app, [CHAIR], port=free_port())
    assert url.startswith("http://127.0.0.1:")
    yield app, url
    blocks.close()


@pytest.fixture(scope="module")
def expected():
    """What the sample pipeline itself gives for the chair: ``{seed: Gaussians}`` (pruned as written)."""
    pipe, _ = load_pipeline("demo")
    image = prepare_image(CHAIR, pipe.config.generator.image_size).image
    out = {}
    for seed in (0, 1, 2):
        g = pipe(image, SampleSettings(num_steps=STEPS, seed=seed)).gaussians
        out[seed] = g.index(g.opacities >= PRUNE)
    return out


def generate(client, seed=0, video_size=VIDEO_SIZE, mesh=True, submit=False):
    from gradio_client import handle_file

    args = (handle_file(str(CHAIR)), DEMO_LABEL, STEPS, seed, True, False, "auto", video_size, mesh)
    return client.submit(*args, api_name="/generate") if submit else client.predict(*args, api_name="/generate")


def request_folder(status: str) -> Path:
    return Path(status.split("Outputs: `")[1].rstrip("`"))


@pytest.mark.slow
def test_client_gets_the_splats_the_mesh_and_the_video(served, expected):
    from gradio_client import Client

    app, url = served
    status, prepared, mask, views, video, splats, mesh, downloads = generate(Client(url, verbose=False))
    want = expected[0]
    by_name = {Path(p).name: Path(p) for p in downloads}
    folder = request_folder(status)
    archive = f"ouro-{folder.name}.zip"
    assert sorted(by_name) == sorted(["gaussians.ply", "mesh.glb", "orbit.mp4", archive])
    # the PLY: the pipeline's Gaussians, all of them, bit for bit up to float32
    ply = read_ply(by_name["gaussians.ply"])
    assert ply.num_gaussians == want.num_gaussians > 0
    torch.testing.assert_close(ply.means, want.means, rtol=0, atol=1e-6)
    # the viewer's copy: the same splats half a turn about x (y down), nothing else changed
    shown = read_ply(splats)
    torch.testing.assert_close(shown.means, want.means * torch.tensor([1.0, -1.0, -1.0]), rtol=0, atol=1e-6)
    torch.testing.assert_close(shown.colors, want.colors, rtol=0, atol=1e-5)
    # the mesh: a coloured triangle mesh trimesh reads
    loaded = trimesh.load(by_name["mesh.glb"], force="mesh")
    assert len(loaded.faces) > 100 and loaded.visual.vertex_colors.shape == (len(loaded.vertices), 4)
    assert Path(mesh).read_bytes() == by_name["mesh.glb"].read_bytes()
    # the turntable: the requested size, not the model's 64 px
    frames = [f for f in imageio.get_reader(by_name["orbit.mp4"])]  # (list() asks its infinite len())
    assert len(frames) == VIDEO_FRAMES and frames[0].shape == (VIDEO_SIZE, VIDEO_SIZE, 3)
    # the page's images and the zip of the whole result folder
    assert len(views) == 8 and Image.open(views[0]["image"]).size == (64, 64)
    assert Image.open(prepared).size == (64, 64) and Image.open(mask).mode == "L"
    with zipfile.ZipFile(by_name[archive]) as z:
        names = set(z.namelist())
        meta = json.loads(z.read("meta.json"))
    assert {"gaussians.ply", "mesh.glb", "orbit.mp4", "input.png", "mask.png", "views.png", "views/007.png", "meta.json"} <= names
    assert meta["settings"]["num_steps"] == STEPS and meta["outputs"]["gaussians"] == want.num_gaussians
    assert meta["outputs"]["video_size"] == VIDEO_SIZE and meta["outputs"]["mesh"] == "mesh.glb"
    assert folder.parent == app.output_root and (folder / "result" / "gaussians.ply").is_file()


@pytest.mark.slow
def test_two_requests_at_once_each_get_their_own_outputs(served, expected):
    from gradio_client import Client

    app, url = served
    jobs = {seed: generate(Client(url, verbose=False), seed=seed, video_size=64, mesh=False, submit=True) for seed in (1, 2)}
    results = {seed: job.result(timeout=300) for seed, job in jobs.items()}
    folders = {seed: request_folder(r[0]) for seed, r in results.items()}
    assert folders[1] != folders[2]
    for seed, result in results.items():
        downloads = {Path(p).name: Path(p) for p in result[-1]}
        assert "mesh.glb" not in downloads and result[6] is None
        ply = read_ply(downloads["gaussians.ply"])
        torch.testing.assert_close(ply.means, expected[seed].means, rtol=0, atol=1e-6)  # its own seed's splats
        meta = json.loads((folders[seed] / "result" / "meta.json").read_text())
        assert meta["settings"]["seed"] == seed
        torch.testing.assert_close(read_ply(folders[seed] / "result" / "gaussians.ply").means, expected[seed].means, rtol=0, atol=1e-6)
    assert not torch.equal(expected[1].means, expected[2].means)  # so the check above tells them apart


def test_a_bad_image_or_option_is_refused_and_leaves_no_folder(tiny_checkpoint, tmp_path):
    app = OuroApp(tmp_path / "out", {"tiny": ("auto", tiny_checkpoint)})
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(InputImageError, match="notes.png: not an image"):
        app.run(AppRequest(tmp_path / "notes.png", "tiny", steps=1, mesh=False))
    with pytest.raises(ValueError, match="turntable size 100000: choose 64 to 1024 pixels"):  # what the API could send
        app.run(AppRequest(CHAIR, "tiny", steps=1, video_size=100_000, mesh=False))
    with pytest.raises(ValueError, match="unknown model 'other'"):
        app.run(AppRequest(CHAIR, "other", steps=1, mesh=False))
    with pytest.raises(ValueError, match="seed -1: choose a whole number from 0 to 9223372036854775807"):  # as ouro sample --seed
        app.run(AppRequest(CHAIR, "tiny", steps=1, seed=-1, mesh=False))
    with pytest.raises(ValueError, match="background 'remove': choose one of \\('auto', 'rembg', 'grabcut', 'border', 'keep'\\)"):
        app.run(AppRequest(CHAIR, "tiny", steps=1, background="remove", mesh=False))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_requests_write_into_folders_of_their_own(tiny_checkpoint, tmp_path):
    app = OuroApp(tmp_path / "out", {"tiny": ("auto", tiny_checkpoint)}, video_frames=2)
    a = app.run(AppRequest(CHAIR, "tiny", steps=1, seed=3, video_size=64, mesh=False))
    b = app.run(AppRequest(CHAIR, "tiny", steps=1, seed=3, video_size=64, mesh=False))
    assert a.folder != b.folder and sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([a.folder.name, b.folder.name])
    assert sorted(p.name for p in a.folder.iterdir()) == sorted(["result", a.archive.name, "splats-viewer.ply"])
    assert a.files.folder == a.folder / "result" and a.files.mesh is None
    # the writer of ouro sample: mask.png is the mask the input was cut with, in the input file's frame (the chair's alpha)
    np.testing.assert_array_equal(np.asarray(Image.open(a.files.mask)), np.asarray(Image.open(CHAIR))[..., 3])
    meta = json.loads(a.files.meta.read_text())
    assert meta["background"] == {"method": "alpha", "mask": "mask.png", "check": meta["background"]["check"], "problems": []}
    assert a.warning is None
    kept = app.run(AppRequest(CHAIR, "tiny", steps=1, seed=3, video_size=64, mesh=False, background="keep"))
    assert kept.files.mask is None and not (kept.files.folder / "mask.png").exists()
    assert json.loads(kept.files.meta.read_text())["background"] == {"method": "keep"}
    assert (a.folder / "result" / "gaussians.ply").read_bytes() == (b.folder / "result" / "gaussians.ply").read_bytes()  # same seed
    with zipfile.ZipFile(a.archive) as z:
        assert sorted(z.namelist()) == sorted(
            str(p.relative_to(a.files.folder)) + ("/" if p.is_dir() else "") for p in a.files.folder.rglob("*")
        )


# ---------------------------------------------------------------------------------- the command
def _no_public_weights(monkeypatch, tmp_path):
    for var in ("OURO_WEIGHTS", "OURO_SVD", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))


@pytest.mark.parametrize("args,message", [
    (["--checkpoint", "nowhere"], "--checkpoint nowhere: not a checkpoint folder"),
    (["--examples", "nowhere"], "--examples nowhere: no such folder"),
    (["--model", "official"], "the public Ouroboros3D weights were not found"),
    (["-o", "a-file"], "--output a-file is a file; give a folder"),
])
def test_bad_options_exit_2_before_serving(monkeypatch, tmp_path, args, message):
    from typer.testing import CliRunner

    from ouro.cli.main import app as cli

    _no_public_weights(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder\n")
    result = CliRunner().invoke(cli, ["app", *args])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


# ------------------------------------------------------------------------------- the browser
#: Luminance variance (0-255 scale) above which a viewer shows something. A blank canvas, one flat
#: colour, has variance 0; the demo's 2-step chair measured 565 to 578 (splats on black) and 713
#: (mesh on white) in headless Chromium 156 with SwiftShader.
BLANK_VARIANCE = 4.0


def canvas_variance(png: bytes) -> float:
    """Variance of the central half (each way) of a screenshot: the viewers draw the object in the
    middle, and keep their label and buttons, drawn over the canvas, at the edges."""
    gray = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    h, w = gray.shape
    return float(gray[h // 4 : h - h // 4, w // 4 : w - w // 4].var())


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright. A missing browser fails the test, it never skips it."""
    from playwright.sync_api import sync_playwright

    try:
        found = chromium(cache_dir() / "chromium")
    except BrowserUnavailable as exc:
        pytest.fail(f"the browser test needs Debian's Chromium: {exc}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(found.executable), args=FLAGS, env={**os.environ, **found.env})
        yield b
        b.close()


def wait_for_pixels(locator, timeout_s: float = 90.0) -> bytes:
    """Screenshots of ``locator`` until it shows something (the viewers load and draw asynchronously)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        png = locator.screenshot()
        if canvas_variance(png) > BLANK_VARIANCE or time.monotonic() > deadline:
            return png
        time.sleep(1.0)


@pytest.mark.slow
def test_the_variance_bound_fails_a_blank_canvas(browser):
    page = browser.new_page()
    page.set_content(
        "<canvas id=c width=320 height=240></canvas><script>const gl = document.getElementById('c').getContext('webgl2');"
        "gl.clearColor(0, 0, 0, 1); gl.clear(gl.COLOR_BUFFER_BIT);</script>"
    )
    assert page.evaluate("() => !!document.getElementById('c').getContext('webgl2')")  # WebGL works here
    assert canvas_variance(page.locator("#c").screenshot()) <= BLANK_VARIANCE
    page.close()


@pytest.mark.slow
def test_the_page_runs_an_example_and_shows_the_splats_in_3d(served, browser, tmp_path):
    app, url = served
    page = browser.new_page(viewport={"width": 1400, "height": 1640})  # the whole page: no resize for the screenshot
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.locator("#examples .gallery-item").first.click()  # the chair
    page.wait_for_selector("#input-image img")
    page.locator("#steps input[type=number]").fill(str(STEPS))
    page.locator("#steps input[type=number]").press("Enter")
    page.locator("#generate").click()
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Sampled with')", timeout=240_000)
    assert f"{STEPS} steps" in page.inner_text("#status")
    splats = page.locator("#splats-viewer canvas")
    mesh = page.locator("#mesh-viewer canvas")
    splats.wait_for(timeout=60_000)
    mesh.wait_for(timeout=60_000)
    splats_png, mesh_png = wait_for_pixels(splats), wait_for_pixels(mesh)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(tmp_path / "app.png"))  # docs/app.png comes from here
    (tmp_path / "splats.png").write_bytes(splats_png)
    (tmp_path / "mesh.png").write_bytes(mesh_png)
    measured = {"splats": canvas_variance(splats_png), "mesh": canvas_variance(mesh_png)}
    assert measured["splats"] > BLANK_VARIANCE, f"the splat viewer stayed blank: {measured} (see {tmp_path})"
    assert measured["mesh"] > BLANK_VARIANCE, f"the mesh viewer stayed blank: {measured} (see {tmp_path})"
    # the same measure fails the same viewers with their canvases blanked (labels and buttons still drawn)
    for canvas in (splats, mesh):
        canvas.evaluate("c => { c.style.opacity = '0'; }")
        assert canvas_variance(canvas.screenshot()) <= BLANK_VARIANCE
    # offline: the page fetched nothing but from the app itself (and data:/blob: URLs it made)
    outside = [u for u in requests if not u.startswith((url, "data:", "blob:"))]
    assert not outside, outside[:5]
    page.close()
