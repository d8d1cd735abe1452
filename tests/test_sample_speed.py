"""Sampling at lower cost: each sampler and sparse feedback inside Algorithm 2 (tiny model, CPU), and `--speed`."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import make_tiny_models
from ouro.cli.main import app
from ouro.diffusion import SAMPLERS, num_evaluations
from ouro.pipelines.sample import SamplePipeline, SampleSettings
from ouro.pipelines.speed import SPEEDS, resolve_sampling

runner = CliRunner()


@pytest.fixture(scope="module")
def pipe():
    return SamplePipeline(make_tiny_models())


@pytest.fixture(scope="module")
def image():
    return torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))


class Calls:
    """Counts F's forward calls, the adapters' encodings and G's forward calls (hooks, nothing replaced)."""

    def __init__(self, pipe):
        self.unet = self.adapters = self.recon = 0
        gen, rec = pipe.models.generator, pipe.models.reconstructor
        self.handles = [
            gen.register_forward_pre_hook(lambda *a: self._add("unet")),
            rec.register_forward_pre_hook(lambda *a: self._add("recon")),
        ]
        original = gen.encode_feedback

        def counted(feedback, *args, **kwargs):
            if feedback is not None:  # real maps (zero maps are encoded once and cached)
                self._add("adapters")
            return original(feedback, *args, **kwargs)

        gen.encode_feedback = counted
        self.gen = gen

    def _add(self, name):
        setattr(self, name, getattr(self, name) + 1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        del self.gen.encode_feedback  # back to the class's method


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_each_sampler_is_deterministic_per_seed(pipe, image, name):
    a = pipe(image, SampleSettings(num_steps=2, seed=5, sampler=name))  # Heun: 3 calls, one a corrector
    b = pipe(image, SampleSettings(num_steps=2, seed=5, sampler=name))
    c = pipe(image, SampleSettings(num_steps=2, seed=6, sampler=name))
    assert torch.equal(a.views, b.views) and torch.equal(a.gaussians.means, b.gaussians.means)
    assert not torch.equal(a.views, c.views)
    assert a.views.shape == (8, 3, 64, 64) and torch.isfinite(a.views).all()


@pytest.mark.slow
def test_samplers_differ_and_call_f_as_often_as_they_say(pipe, image):
    views = {}
    for name in SAMPLERS:
        with Calls(pipe) as calls:
            views[name] = pipe(image, SampleSettings(num_steps=3, seed=1, sampler=name)).views
        # F once per evaluation; G once per step (Heun's two calls of a step share one reconstruction);
        # the adapters once per reconstruction that a later call reads (steps 1-2)
        assert (calls.unet, calls.recon, calls.adapters) == (num_evaluations(name, 3), 3, 2), name
    assert not torch.equal(views["euler"], views["heun"]) and not torch.equal(views["euler"], views["dpm++2m"])


def test_heun_calls_of_a_step_read_the_same_maps(pipe, image):
    seen = []
    hook = pipe.models.generator.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append(kwargs["adapter_features"]), with_kwargs=True)
    try:
        pipe(image, SampleSettings(num_steps=3, seed=2, sampler="heun"))
    finally:
        hook.remove()
    # calls: step 0 (x0, x'), step 1 (x1, x'), step 2 (x2); step 0 reads zero maps
    assert len(seen) == 5
    assert seen[0] is seen[1] and seen[2] is seen[3]  # one step, one set of maps
    assert seen[1] is not seen[2] and seen[3] is not seen[4]  # a new reconstruction for each step
    assert not torch.equal(seen[2][0], seen[4][0])


def test_feedback_schedule_by_hand():
    """Which steps read feedback, refresh it, and run G after them. Step 0 never reads feedback (no maps yet);
    the two-stage baseline never does; with ``feedback_every`` K the refreshes are every K-th step from the
    window's first feedback step, and G runs only after the steps before a refresh and after the last step."""
    settings = SampleSettings(num_steps=7, feedback_every=3)
    assert [settings.uses_feedback(i) for i in range(7)] == [False] + [True] * 6
    assert [settings.refreshes_feedback(i) for i in range(7)] == [False, True, False, False, True, False, False]
    assert [settings.reconstructs_after(i) for i in range(7)] == [True, False, False, True, False, False, True]
    window = SampleSettings(num_steps=8, feedback_steps=(3, 8), feedback_every=2)
    assert [i for i in range(8) if window.refreshes_feedback(i)] == [3, 5, 7]
    late = SampleSettings(num_steps=9, feedback_steps=(2, 9), feedback_every=3)
    assert [i for i in range(9) if late.refreshes_feedback(i)] == [2, 5, 8]
    assert [i for i in range(9) if late.reconstructs_after(i)] == [1, 4, 7, 8]
    baseline = SampleSettings(num_steps=4, feedback=False)
    assert not any(baseline.uses_feedback(i) or baseline.refreshes_feedback(i) or baseline.reconstructs_after(i) for i in range(4))


@pytest.mark.slow
def test_feedback_every_k_reuses_the_last_maps(pipe, image):
    with Calls(pipe) as calls:
        out = pipe(image, SampleSettings(num_steps=5, seed=3, feedback_every=3, save_intermediate=True))
    assert (calls.unet, calls.recon, calls.adapters) == (5, 3, 2)  # G after steps 0, 3 and 4 (the output)
    fed = out.feedback_inputs
    assert sorted(fed) == [1, 2, 3, 4]  # every step after the first reads maps ...
    for reused, fresh in ((2, 1), (3, 1)):  # ... refreshed at steps 1 and 4 only
        assert all(torch.equal(a, b) for a, b in zip(fed[reused], fed[fresh]))
    assert not torch.equal(fed[4][0], fed[1][0])
    # K = 1 is today's schedule, output for output
    a = pipe(image, SampleSettings(num_steps=3, seed=4, feedback_every=1))
    b = pipe(image, SampleSettings(num_steps=3, seed=4))
    assert torch.equal(a.views, b.views)
    assert not torch.equal(a.views, pipe(image, SampleSettings(num_steps=3, seed=4, feedback_every=2)).views)


def test_bad_sampler_settings_raise(pipe, image):
    with pytest.raises(ValueError, match="sampler must be one of euler, heun, dpm"):
        pipe(image, SampleSettings(num_steps=2, sampler="ddim"))
    with pytest.raises(ValueError, match="feedback_every must be >= 1"):
        pipe(image, SampleSettings(num_steps=2, feedback_every=0))


def test_speeds_are_fixed_combinations():
    assert tuple(SPEEDS) == ("quality", "fast", "fastest")
    quality = resolve_sampling("quality")
    assert quality == resolve_sampling(None) | {"speed": "quality"}  # quality = the defaults
    assert quality["num_steps"] is None and quality["sampler"] == "euler" and quality["feedback_every"] == 1
    # `fast` as measured (benchmarks/README.md, "Sampling: quality against cost"): change it with the table
    assert resolve_sampling("fast") == {"speed": "fast", "sampler": "dpm++2m", "num_steps": 4, "feedback_every": 1,
                                        "feedback_steps": None, "decode_reconstructor_views_only": False}
    assert resolve_sampling("fastest") == {"speed": "fastest", "sampler": "dpm++2m", "num_steps": 2, "feedback_every": 1,
                                           "feedback_steps": None, "decode_reconstructor_views_only": False}
    fast = resolve_sampling("fast")
    assert fast["speed"] == "fast" and fast["sampler"] == SPEEDS["fast"].sampler and fast["num_steps"] == SPEEDS["fast"].num_steps
    with pytest.raises(ValueError, match="--speed fast fixes .* drop --steps, --fast or --speed"):
        resolve_sampling("fast", steps=4, fast=True)
    assert resolve_sampling(None, sampler="heun", steps=4, feedback_every=2)["feedback_every"] == 2


def _input(path):
    arr = np.zeros((96, 96, 4), dtype=np.uint8)
    arr[20:76, 30:66] = (200, 60, 40, 255)
    Image.fromarray(arr, "RGBA").save(path)
    return path


def test_cli_speed_is_recorded_in_meta_json_and_refuses_overrides(tiny_checkpoint, tmp_path):
    src = _input(tmp_path / "in.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["sample", str(src), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--speed", "fastest",
                                 "--video-frames", "2"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    s = SPEEDS["fastest"]
    assert meta["settings"]["speed"] == "fastest" and meta["settings"]["sampler"] == s.sampler
    assert meta["settings"]["num_steps"] == s.num_steps and meta["settings"]["feedback_every"] == s.feedback_every
    assert meta["evaluations"] == num_evaluations(s.sampler, s.num_steps)
    bad = runner.invoke(app, ["sample", str(src), "-o", str(tmp_path / "bad"), "--checkpoint", str(tiny_checkpoint),
                              "--speed", "fast", "--sampler", "heun"])
    assert bad.exit_code == 2 and "drop --sampler or --speed" in " ".join(bad.output.split()), bad.output
    assert not (tmp_path / "bad").exists()


def test_cli_sampler_and_feedback_every(tiny_checkpoint, tmp_path):
    src = _input(tmp_path / "in.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["sample", str(src), "-o", str(out), "--checkpoint", str(tiny_checkpoint), "--steps", "3",
                                 "--sampler", "heun", "--feedback-every", "2", "--video-frames", "2"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["settings"]["sampler"], meta["settings"]["feedback_every"], meta["evaluations"]) == ("heun", 2, 5)
    assert meta["settings"]["speed"] is None
