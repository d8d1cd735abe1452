"""`ouro train` (paper Algorithm 1) on CPU: data, the step, data-parallel and ZeRO-2 runs, resume, ablations, checkpoints.

The training data is real: two objects (a textured OBJ from Debian's sweethome3d-furniture and a
vertex-coloured GLB) rendered once per session by ``ouro render --engine workbench`` at 64 px, one
orbit of 16 frames each. Runs use the ``tiny`` preset (random tiny VAE / CLIP, as the tests'
stand-in for SVD's). LPIPS (the vendored AlexNet weights) is on in the overfit run and off
(``--lpips-weight 0``) in the multi-process and ablation runs to keep this file within minutes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import render_assets as assets
from ouro.cli.main import app
from ouro.data.dataset import (
    DatasetError,
    PositionSampler,
    PositionStream,
    RenderFolderDataset,
    collate_samples,
    frame_indices,
    read_kept,
)
from ouro.io.checkpoint import CheckpointError, load_checkpoint
from ouro.pipelines.train import TrainConfig, build_models_for, lr_factor, read_run_config, run_training, write_run_config
from ouro.pipelines.train_state import read_state
from ouro.pipelines.train_step import JointModel, make_perceptual

OURO = str(Path(sys.executable).with_name("ouro"))
runner = CliRunner()


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def renders(tmp_path_factory) -> Path:
    """Two real objects rendered by `ouro render` (workbench, 64 px, 1 orbit x 16 frames)."""
    if importlib.util.find_spec("bpy") is None:
        pytest.skip("needs the render extra (bpy) to make the training renders")
    root = tmp_path_factory.mktemp("train-data")
    models = assets.furniture_models(root / "furniture")
    box = assets.vertex_colored_box(root / "vc_box.glb")
    out = root / "renders"
    args = ["render", str(models["chicken"] / "chicken.obj"), str(box), "-o", str(out), "--engine", "workbench",
            "--resolution", "64", "--orbits", "1", "--workers", "2", "--seed", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if (p / "meta.json").is_file()) == ["chicken", "vc_box"]
    (root / "one.txt").write_text("chicken\n")
    return out


def tiny_config(data: Path, output: Path, **fields) -> TrainConfig:
    base = dict(data=str(data), output=str(output), batch_size=1, lr=1e-3, sample_every=0, workers=0,
                mixed_precision="no", lpips_weight=0.0, checkpoint_every=1000, seed=0)
    return TrainConfig.create("tiny", **{**base, **fields})


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """F and G of a final/ folder (ouro checkpoint format) as one flat dict."""
    out = {}
    for part in ("generator", "reconstructor"):
        out |= {f"{part}.{k}": v for k, v in load_file(folder / part / "diffusion_pytorch_model.safetensors").items()}
    return out


def initial_weights(config: TrainConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(config.seed)
    generator, reconstructor, *_ = build_models_for(config)
    return {f"generator.{k}": v for k, v in generator.state_dict().items()} | {
        f"reconstructor.{k}": v for k, v in reconstructor.state_dict().items()}


def differing(a: dict, b: dict, tol: float = 1e-5) -> float:
    """Fraction of all weights that differ by more than ``tol``."""
    total = sum(v.numel() for v in a.values())
    return sum(int(((a[k].float() - b[k].float()).abs() > tol).sum()) for k in a) / total


def changed(a: dict, b: dict, prefix: str) -> float:
    """Largest absolute difference over the tensors whose name starts with ``prefix``."""
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if k.startswith(prefix))


# ---------------------------------------------------------------------------------------- data
def test_frame_choices_and_positions_partition_the_global_batch():
    assert frame_indices(0, 16, 8, "every2") == [0, 2, 4, 6, 8, 10, 12, 14]
    assert frame_indices(5, 16, 8, "every2") == [5, 7, 9, 11, 13, 15, 1, 3]
    assert frame_indices(0, 16, 8, "linspace") == [0, 2, 4, 6, 8, 10, 12, 15]  # the public code's views
    assert frame_indices(4, 16, 8, "linspace") == [4, 6, 8, 10, 12, 14, 0, 3]
    with pytest.raises(ValueError):
        frame_indices(0, 6, 8)
    # 2 ranks x batch 3: micro-step k of both ranks = positions [6k, 6k + 6) of one process with batch 6
    ranks = [PositionSampler(3, r, 2) for r in range(2)]
    for k in range(3):
        assert sorted(ranks[0].positions(k) + ranks[1].positions(k)) == PositionSampler(6).positions(k)
        assert not set(ranks[0].positions(k)) & set(ranks[1].positions(k))


def test_dataset_samples_views_cameras_on_white(renders):
    ds = RenderFolderDataset(renders, image_size=64, frame_choice="every2")
    assert ds.uids == ["chicken", "vc_box"]
    sample = ds.load(0, orbit=0, start=3)
    assert sample.images.shape == (8, 3, 64, 64) and sample.frames.tolist() == [3, 5, 7, 9, 11, 13, 15, 1]
    assert float(sample.images.min()) >= 0 and float(sample.images.max()) <= 1
    assert torch.allclose(sample.images[:, :, 0, 0], torch.ones(8, 3))  # transparent corners -> white
    # cameras: relative to the condition view, which sits at (0, 0, r) looking at the origin
    c2w, meta = sample.c2w, json.loads((renders / "chicken" / "meta.json").read_text())
    r = meta["radius"]
    assert torch.allclose(c2w[0], torch.tensor([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, r], [0, 0, 0, 1.0]]), atol=1e-5)
    assert torch.allclose(c2w[:, :3, 3].norm(dim=-1), torch.full((8,), r), atol=1e-5)
    forward = c2w[:, :3, 2]  # every camera still looks at the origin
    assert torch.allclose((forward * -c2w[:, :3, 3]).sum(-1) / r, torch.ones(8), atol=1e-5)
    f = 0.5 / math.tan(meta["camera_angle_x"] / 2)
    assert torch.allclose(sample.K_norm[0], torch.tensor([[f, 0, 0.5], [0, f, 0.5], [0, 0, 1.0]]), atol=1e-5)
    # the public code's views, and the seeded stream (same position, same sample)
    lin = RenderFolderDataset(renders, 64, frame_choice="linspace").load(1, orbit=0, start=0)
    assert lin.frames.tolist() == [0, 2, 4, 6, 8, 10, 12, 15]
    stream = PositionStream(ds, seed=1)
    a, b = stream[5], stream[5]
    assert a.uid == b.uid and torch.equal(a.frames, b.frames) and torch.equal(a.images, b.images)
    batch = collate_samples([stream[0], stream[1]])
    assert batch["images"].shape == (2, 8, 3, 64, 64) and batch["positions"].tolist() == [0, 1]
    assert {stream.object_index(0), stream.object_index(1)} == {0, 1}  # an epoch visits every object once


def test_dataset_validates_kept_lists_uids_and_paths(renders, tmp_path):
    kept = tmp_path / "kept.txt"
    kept.write_text("# kept by ouro filter\nchicken\n\nvc_box\n")
    assert read_kept(kept) == ["chicken", "vc_box"]
    assert RenderFolderDataset(renders, kept=kept).uids == ["chicken", "vc_box"]
    kept.write_text("chicken\nnot_rendered\n")
    with pytest.raises(DatasetError, match="not_rendered"):
        RenderFolderDataset(renders, kept=kept)
    assert RenderFolderDataset(renders, kept=kept, missing="skip").missing == ["not_rendered"]
    kept.write_text("../etc\n")
    with pytest.raises(DatasetError, match="not a valid uid"):
        RenderFolderDataset(renders, kept=kept)
    # a meta.json that points outside its object folder is refused
    bad = tmp_path / "renders"
    shutil.copytree(renders / "chicken", bad / "chicken")
    meta = json.loads((bad / "chicken" / "meta.json").read_text())
    meta["locations"][3]["frames"][0]["name"] = "../../secret.png"
    (bad / "chicken" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="inside"):
        RenderFolderDataset(bad).load(0)


# ------------------------------------------------------------------------------------ training
@pytest.mark.slow
def test_overfit_loss_falls_both_models_learn_and_feedback_is_taken_half_the_time(renders, tmp_path):
    """One object, LPIPS on, lr 2e-3, 40 steps (1-2 min on the shared 2-core CI machine; the loss falls
    mostly in the first 25 steps at this rate, so a few hundred would only cost time)."""
    steps = 40
    run = tmp_path / "overfit"
    config = tiny_config(renders, run, kept=str(renders.parent / "one.txt"), max_steps=steps, lr=2e-3, lpips_weight=1.0,
                         sample_every=steps, checkpoint_every=steps)
    write_run_config(config)
    result = run_training(config)
    assert result.step == steps and result.micro_steps == steps and result.world_size == 1

    # the feedback pass: Binomial(40, 0.5) lies in [11, 29] with probability > 0.999
    assert 11 <= result.feedback_micro_steps <= 29, result.feedback_micro_steps
    rows = metrics(run)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert sum(r["feedback"] for r in rows) == result.feedback_micro_steps

    # the total loss falls: on the same held-out noise draws, and over the training log
    def evaluate(generator, reconstructor, conditioner) -> float:
        model = JointModel(generator, reconstructor, conditioner, config.step_settings(), make_perceptual(1.0))
        stream = PositionStream(RenderFolderDataset(config.data, 64, kept=config.kept), seed=99)
        losses = []
        with torch.no_grad():
            for k in range(3):  # fixed positions and coins: the same sigmas and noise before and after
                b = collate_samples([stream[10_000 + k]])
                losses.append(float(model(b["images"], b["c2w"], b["K_norm"], b["positions"], torch.tensor(k)).loss))
        return statistics.mean(losses)

    torch.manual_seed(config.seed)
    before = evaluate(*build_models_for(config)[:3])
    final = load_checkpoint(run / "final")
    after = evaluate(final.generator, final.reconstructor, final.conditioner)
    assert after < 0.7 * before, (before, after)
    first = statistics.mean(r["loss"] for r in rows[:8])
    last = statistics.mean(r["loss"] for r in rows[-8:])
    assert last < 0.75 * first, (first, last)
    assert statistics.mean(r["recon"] for r in rows[-8:]) < 0.7 * statistics.mean(r["recon"] for r in rows[:8])

    # both models learnt
    trained, init = weights(run / "final"), initial_weights(config)
    assert changed(trained, init, "generator.") > 1e-3
    assert changed(trained, init, "reconstructor.") > 1e-3
    assert changed(trained, init, "generator.cond_encoder.1.") > 0  # the CCM adapter (fed half the time) too

    # logs: TensorBoard scalars, sample images, config.json, and the final folder samples
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "samples" / f"step-{steps:06d}.png").is_file()
    assert read_run_config(run / "config.json") == config
    out = runner.invoke(app, ["sample", str(_condition_png(renders, tmp_path)), "--checkpoint", str(run / "final"),
                              "-o", str(tmp_path / "sampled"), "--steps", "2", "--video-frames", "2", "--video-size", "64",
                              "--keep-background"])
    assert out.exit_code == 0, out.output


def _condition_png(renders: Path, tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "cond.png"
    Image.open(renders / "chicken" / "000" / "000.png").convert("RGB").save(path)
    return path


@pytest.mark.slow
def test_two_processes_average_gradients(renders, tmp_path):
    """`--gpus 2` on CPU: two gloo ranks with different samples end equal to one process on their union batch."""
    two = tmp_path / "two"
    args = [OURO, "train", "--preset", "tiny", "--data", str(renders), "-o", str(two), "--gpus", "2", "--max-steps", "1",
            "--batch-size", "1", "--lr", "1e-3", "--lpips-weight", "0", "--sample-every", "0", "--workers", "0",
            "--mixed-precision", "no"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((two / "final" / "training.json").read_text())
    assert info["world_size"] == 2 and info["params_in_sync"] is True
    assert metrics(two)[0]["world_size"] == 2
    # rank 0 drew position 0, rank 1 position 1: different objects of this 2-object set
    stream = PositionStream(RenderFolderDataset(renders, 64), seed=0)
    assert stream[0].uid != stream[1].uid

    union = tiny_config(renders, tmp_path / "union", max_steps=1, batch_size=2)
    write_run_config(union)
    run_training(union)
    w2, w1 = weights(two / "final"), weights(tmp_path / "union" / "final")
    # AdamW's first step moves each weight by about lr * sign(gradient): compare element by element.
    # Batch-1 and batch-2 kernels round differently (losses agree to ~1e-5), so weights whose gradient
    # is ~0 may flip sign: measured 0.6 % of the weights against the union batch, 28 % against rank 0 alone.
    assert differing(w2, initial_weights(union)) > 0.5  # the step moved most weights (zero-initialised layers block some)
    same_as_union = differing(w2, w1)
    alone = tiny_config(renders, tmp_path / "alone", max_steps=1, batch_size=1)  # control: rank 0's sample only
    write_run_config(alone)
    run_training(alone)
    same_as_rank0 = differing(w2, weights(tmp_path / "alone" / "final"))
    assert same_as_union < 0.03 and same_as_rank0 > 0.1, (same_as_union, same_as_rank0)
    assert math.isclose(metrics(two)[0]["loss"], metrics(tmp_path / "union")[0]["loss"], rel_tol=1e-4)


@pytest.mark.slow
def test_zero2_on_cpu_trains_a_few_steps(renders, tmp_path):
    run = tmp_path / "zero2"
    args = [OURO, "train", "--preset", "tiny", "--data", str(renders), "-o", str(run), "--gpus", "2", "--deepspeed",
            "--max-steps", "3", "--checkpoint-every", "3", "--batch-size", "1", "--lr", "1e-3", "--lpips-weight", "0",
            "--sample-every", "0", "--workers", "0"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["world_size"] == 2 for r in rows)
    assert all(math.isfinite(r["loss"]) for r in rows)
    state = read_state(run / "checkpoint-000003")
    assert state.meta["optimizer"]["kind"] == "deepspeed-zero"
    assert {"optimizer-rank0.safetensors", "optimizer-rank1.safetensors"} <= set(state.meta["files"])
    assert json.loads((run / "final" / "training.json").read_text())["params_in_sync"] is True
    assert load_checkpoint(run / "final").config.name == "tiny"
    assert_no_pickle(run)


# -------------------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def resumed(renders, tmp_path_factory) -> dict:
    """An uninterrupted 6-step run, and the same run killed (SIGKILL) after its first checkpoint, then resumed."""
    root = tmp_path_factory.mktemp("resume")
    fields = dict(max_steps=6, checkpoint_every=2, checkpoints_total_limit=2, ema=True, seed=3, kept=str(renders.parent / "one.txt"),
                  warmup_steps=2, lr_scheduler="cosine", deterministic=True)  # bit-exact whatever OMP_NUM_THREADS the caller set
    whole = tiny_config(renders, root / "whole", **fields)
    write_run_config(whole)
    run_training(whole)

    killed = root / "killed"
    args = [OURO, "train", "--preset", "tiny", "--data", str(renders), "--kept", str(renders.parent / "one.txt"),
            "-o", str(killed), "--max-steps", "6", "--checkpoint-every", "2", "--checkpoints-total-limit", "2", "--ema", "--seed", "3", "--batch-size", "1",
            "--warmup-steps", "2", "--lr-scheduler", "cosine",
            "--lr", "1e-3", "--lpips-weight", "0", "--sample-every", "0", "--workers", "0", "--mixed-precision", "no", "--deterministic"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while not (killed / "checkpoint-000002" / "state.json").is_file():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not (killed / "final").exists()  # it really died before the end
    result = run_training(read_run_config(killed / "config.json"), resume=True)
    return {"whole": root / "whole", "killed": killed, "result": result}


@pytest.mark.slow
def test_resume_after_a_kill_continues_exactly(resumed):
    result = resumed["result"]
    assert result.resumed_from is not None and result.resumed_from >= 2 and result.step == 6
    whole, again = metrics(resumed["whole"]), metrics(resumed["killed"])
    assert [r["step"] for r in again] == list(range(1, 7))  # steps logged after the checkpoint were dropped and redone
    # the learning rate each step used: warm-up over 2 steps, then a cosine to 0 after step 6
    assert [round(r["lr"] / 1e-3, 4) for r in whole] == [0.5, 1.0, 1.0, 0.8536, 0.5, 0.1464]
    for a, b in zip(whole, again):
        for key in ("loss", "diffusion", "recon", "feedback", "lr"):
            assert math.isclose(a[key], b[key], rel_tol=1e-6, abs_tol=1e-9), (a["step"], key, a[key], b[key])
    assert changed(weights(resumed["whole"] / "final"), weights(resumed["killed"] / "final"), "") < 1e-6  # EMA weights
    assert not [p for p in resumed["killed"].iterdir() if p.name.startswith(".")]  # no temporary folders left


def assert_no_pickle(run: Path) -> None:
    """Every file of every checkpoint-<N>/ and final/ is JSON or safetensors (no pickle, no torch zip)."""
    folders = [p for p in run.iterdir() if p.name.startswith("checkpoint-") or p.name == "final"]
    assert folders
    for folder in folders:
        for file in folder.rglob("*"):
            if not file.is_file():
                continue
            data = file.read_bytes()
            assert file.suffix in (".json", ".safetensors"), file
            if file.suffix == ".safetensors":  # u64 header length, a JSON header, raw tensor bytes
                n = int.from_bytes(data[:8], "little")
                assert isinstance(json.loads(data[8 : 8 + n]), dict), file
                assert len(load_file(file)) > 0
            else:
                assert not data.startswith(b"\x80") and not data.startswith(b"PK"), file  # pickle 2+ / torch.save zip
                json.loads(data)


@pytest.mark.slow
def test_checkpoints_hold_no_pickle_and_a_corrupted_one_is_refused(resumed, tmp_path):
    run = resumed["whole"]
    assert_no_pickle(run)
    state = read_state(run / "checkpoint-000006")
    assert {"models.safetensors", "optimizer.safetensors", "ema.safetensors", "rng-rank0.safetensors"} <= set(state.meta["files"])
    assert [p.name for p in sorted(run.glob("checkpoint-*"))] == ["checkpoint-000004", "checkpoint-000006"]  # checkpoints_total_limit 2

    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(run / "config.json", bad / "config.json")
    shutil.copytree(run / "checkpoint-000006", bad / "checkpoint-000006")
    models = bad / "checkpoint-000006" / "models.safetensors"
    data = bytearray(models.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: still a valid safetensors file, wrong weights
    models.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        read_state(bad / "checkpoint-000006")
    out = runner.invoke(app, ["train", "--output", str(bad), "--resume", "--max-steps", "7"])
    assert out.exit_code == 1 and "corrupted" in out.output and "checkpoint-000006" in out.output, out.output
    models.write_bytes(bytes(data[: len(data) // 3]))  # truncated
    with pytest.raises(CheckpointError, match="truncated"):
        read_state(bad / "checkpoint-000006")
    (bad / "checkpoint-000006" / "state.json").unlink()  # never finished
    with pytest.raises(CheckpointError, match="incomplete"):
        read_state(bad / "checkpoint-000006")


@pytest.mark.slow
def test_resume_with_more_steps_trains_to_the_new_total(resumed, tmp_path):
    """``--resume --max-steps N`` overrides the stored total (config.json is rewritten with it)."""
    run = tmp_path / "more"
    shutil.copytree(resumed["whole"], run)
    out = runner.invoke(app, ["train", "--output", str(run), "--resume", "--max-steps", "7"])
    assert out.exit_code == 0, out.output
    rows = metrics(run)
    assert [r["step"] for r in rows][-2:] == [6, 7] and rows[-1]["max_steps"] == 7
    assert read_run_config(run / "config.json").max_steps == 7
    assert read_state(run / "checkpoint-000007").step == 7
    refused = runner.invoke(app, ["train", "--output", str(run), "--resume", "--lr", "0.5"])
    assert refused.exit_code == 2 and "cannot change --lr" in refused.output, refused.output


# ------------------------------------------------------------------------------------ ablations
ROWS = {"separate": (), "joint": (), "ccm": ("ccm",), "rgb": ("rgb",), "full": ("rgb", "ccm")}


@pytest.mark.slow
@pytest.mark.parametrize("ablation", list(ROWS))
def test_every_table2_switch_trains_and_is_recorded(renders, tmp_path, ablation):
    run = tmp_path / ablation
    accum = 2 if ablation == "rgb" else 1  # one row also accumulates gradients over 2 micro-steps
    config = tiny_config(renders, run, ablation=ablation, max_steps=2, checkpoint_every=2, feedback_prob=1.0, grad_accum=accum)
    write_run_config(config)
    result = run_training(config)
    assert result.step == 2 and result.micro_steps == 2 * accum
    assert [r["micro_steps"] for r in metrics(run)] == [accum, 2 * accum]
    state = read_state(run / "checkpoint-000002")
    assert state.config["ablation"] == ablation and state.meta["ablation"] == ablation
    assert tuple(state.config["model"]["generator"]["feedback"]) == ROWS[ablation]
    final = load_checkpoint(run / "final")
    assert tuple(final.config.generator.feedback) == ROWS[ablation]
    assert len(final.generator.cond_encoder) == len(ROWS[ablation])
    assert json.loads((run / "final" / "training.json").read_text())["ablation"] == ablation
    trained, init = weights(run / "final"), initial_weights(config)
    assert changed(trained, init, "generator.") > 1e-4
    if ablation == "separate":  # G frozen and unused
        assert changed(trained, init, "reconstructor.") == 0
        assert all(r["recon"] == 0 for r in metrics(run))
    else:
        assert changed(trained, init, "reconstructor.") > 1e-4
    # feedback_prob 1: every step of a feedback row takes the feedback pass; the others never do
    assert result.feedback_micro_steps == (2 * accum if ROWS[ablation] else 0)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_usage_errors_exit_2_and_write_nothing(renders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = [
        (["train", "--preset", "tiny", "--data", "missing"], "no such render folder"),
        (["train", "--preset", "tiny", "--data", str(renders), "--resume"], "--resume needs"),
        (["train", "--preset", "paper", "--data", str(renders)], "--init-svd"),
        (["train", "--preset", "huge", "--data", str(renders)], "unknown preset"),
        (["train", "--preset", "tiny", "--data", str(renders), "--kept", str(renders.parent / "nope.txt")], "kept list"),
        (["train", "--preset", "tiny", "--data", str(renders), "--init-lgm", "nope.safetensors"], "no such file"),
    ]
    for args, message in cases:
        out = runner.invoke(app, args)
        assert out.exit_code == 2, (args, out.output)
        assert message in out.output, (args, out.output)
    assert list(tmp_path.iterdir()) == []


def test_cli_config_reproduces_a_run_into_a_new_folder(renders, tmp_path):
    """``--config`` with a run's config.json trains the same model and settings into ``--output``
    (the stored run folder is not reused); options given on the command line win. A model config
    (``ouro.json``'s ``config``) sets the model only."""
    original = tiny_config(renders, tmp_path / "original", lr=2e-3, seed=3, max_steps=5)
    original = dataclasses.replace(original, model=dataclasses.replace(
        original.model, generator=dataclasses.replace(original.model.generator, layers_per_block=2)))
    (tmp_path / "run.json").write_text(original.to_json())
    out = runner.invoke(app, ["train", "--config", str(tmp_path / "run.json"), "--output", str(tmp_path / "again"),
                              "--max-steps", "1"])
    assert out.exit_code == 0, out.output
    again = read_run_config(tmp_path / "again" / "config.json")
    assert again == dataclasses.replace(original, output=str(tmp_path / "again"), max_steps=1)
    assert not (tmp_path / "original").exists()
    assert load_checkpoint(tmp_path / "again" / "final").config.generator.layers_per_block == 2

    (tmp_path / "model.json").write_text(json.dumps(original.model.to_dict()))
    out = runner.invoke(app, ["train", "--config", str(tmp_path / "model.json"), "--data", str(renders), "--output",
                              str(tmp_path / "model-only"), "--max-steps", "1", "--batch-size", "1", "--workers", "0",
                              "--sample-every", "0", "--lpips-weight", "0"])
    assert out.exit_code == 0, out.output
    from_model = read_run_config(tmp_path / "model-only" / "config.json")
    assert from_model.model == original.model and from_model.lr != original.lr  # the model only, the rest defaults


def test_learning_rate_schedules():
    """Warm-up ``(s + 1) / w``; after it constant, or a decay that ends at 0 after the last step."""
    assert [lr_factor(s, 4, 10) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [lr_factor(s, 0, 4, "linear") for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_factor(4, 0, 4, "linear") == 0.0 and lr_factor(9, 0, 4, "linear") == 0.0  # past the end: 0, not negative
    cosine = [lr_factor(s, 10, 110, "cosine") for s in range(10, 111)]
    assert cosine[0] == 1.0 and math.isclose(cosine[50], 0.5) and abs(cosine[-1]) < 1e-12
    assert all(a > b for a, b in zip(cosine, cosine[1:]))
    with pytest.raises(ValueError, match="step"):
        lr_factor(20, 0, 10, "step")
    config = TrainConfig.create("tiny", data="d", output="r", lr_scheduler="cosine")
    assert TrainConfig.from_dict(json.loads(config.to_json())).lr_scheduler == "cosine"
    with pytest.raises(ValueError, match="lr_scheduler"):
        dataclasses.replace(config, lr_scheduler="exponential").check()


def test_run_config_round_trips_and_records_the_ablation(tmp_path):
    config = TrainConfig.create("tiny", data="d", output=str(tmp_path / "r"), ablation="rgb", init_official="w")
    assert config.compat == "official" and config.model.generator.feedback == ("rgb",)
    write_run_config(config)
    assert read_run_config(tmp_path / "r" / "config.json") == config
    with pytest.raises(ValueError, match="does not match"):
        dataclasses.replace(config, ablation="full").check()


def test_init_from_svd_lgm_and_official_weights(tmp_path, tiny_checkpoint):
    """--init-svd (diffusers folder), --init-lgm (safetensors, new time-embedding tensors start fresh), --init-official."""
    from safetensors.torch import save_file

    from ouro.models import build_models
    from ouro.models.svd_parts import SVDConditioner

    svd = tmp_path / "svd"
    cond = SVDConditioner.tiny(32, seed=7)
    cond.save_pretrained(svd)
    torch.manual_seed(11)
    src_f, src_g = build_models("tiny")
    src_f.unet.save_pretrained(svd / "unet", safe_serialization=True)
    lgm = {k: v for k, v in src_g.state_dict().items() if "time_embed" not in k and "emb_layers" not in k}
    save_file(lgm, str(tmp_path / "lgm.safetensors"))

    config = TrainConfig.create("tiny", data="d", output=str(tmp_path / "r"), init_svd=str(svd), init_lgm=str(tmp_path / "lgm.safetensors"))
    generator, reconstructor, conditioner, _, notes = build_models_for(config)
    assert all(torch.equal(v, src_f.unet.state_dict()[k]) for k, v in generator.unet.state_dict().items())
    own = reconstructor.state_dict()
    assert all(torch.equal(own[k], v) for k, v in lgm.items()) and len(own) > len(lgm)
    assert all(torch.equal(v, cond.vae.state_dict()[k]) for k, v in conditioner.vae.state_dict().items())
    assert any("start fresh" in n for n in notes)

    (tmp_path / "g.pth").write_bytes(b"\x80\x04not a tensor file")
    with pytest.raises(CheckpointError, match="safetensors only"):
        build_models_for(dataclasses.replace(config, init_lgm=str(tmp_path / "g.pth")))
    save_file({"conv.weight": torch.zeros(3, 3)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(CheckpointError, match="shape"):
        build_models_for(dataclasses.replace(config, init_lgm=str(tmp_path / "wrong.safetensors")))

    # --init-official with an ouro checkpoint; an ablation keeps only the adapters it feeds
    ckpt = load_checkpoint(tiny_checkpoint)
    for ablation, kept in (("full", (0, 1)), ("rgb", (0,)), ("ccm", (1,)), ("joint", ())):
        config = TrainConfig.create("tiny", data="d", output=str(tmp_path / "o"), init_official=str(tiny_checkpoint), ablation=ablation)
        assert config.compat is None  # the checkpoint's own mode (ours), not the public weights'
        generator, reconstructor, *_ = build_models_for(config)
        assert len(generator.cond_encoder) == len(kept)
        for new, old in enumerate(kept):
            a, b = generator.cond_encoder[new].state_dict(), ckpt.generator.cond_encoder[old].state_dict()
            assert all(torch.equal(a[k], b[k]) for k in a)
        assert all(torch.equal(v, ckpt.reconstructor.state_dict()[k]) for k, v in reconstructor.state_dict().items())
    # fine-tuning under new diffusion settings (no weights): the run's win over the checkpoint's, same preset only
    diffusion = dataclasses.replace(ckpt.config.diffusion, sigma_data=0.5, p_mean=-1.2)
    tuned = TrainConfig.create(dataclasses.replace(ckpt.config, diffusion=diffusion), data="d", output=str(tmp_path / "t"),
                               init_official=str(tiny_checkpoint))
    assert build_models_for(tuned)[3].diffusion == diffusion
    other = TrainConfig.create("demo", data="d", output=str(tmp_path / "t"), init_official=str(tiny_checkpoint))
    assert build_models_for(other)[3].diffusion == ckpt.config.diffusion


def test_init_official_from_a_checkpoint_without_adapters(tmp_path, tiny_checkpoint):
    """A `separate` run's weights (F without feedback adapters) start a `full` run: everything they hold
    is loaded, the two adapters start fresh; any other tensor missing from the weights is refused."""
    from ouro.io.checkpoint import OuroModels, save_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    separate = TrainConfig.create("tiny", data="d", output=str(tmp_path / "s"), init_official=str(tiny_checkpoint), ablation="separate")
    generator, reconstructor, conditioner, model_cfg, _ = build_models_for(separate)
    assert len(generator.cond_encoder) == 0
    folder = save_checkpoint(tmp_path / "separate", OuroModels(generator, reconstructor, conditioner, model_cfg))

    torch.manual_seed(3)
    full = TrainConfig.create("tiny", data="d", output=str(tmp_path / "f"), init_official=str(folder))
    generator, reconstructor, _, _, notes = build_models_for(full)
    assert len(generator.cond_encoder) == 2 and any("rgb, ccm" in n and "starts fresh" in n for n in notes)
    own = generator.state_dict()
    for k, v in ckpt.generator.state_dict().items():
        if k.startswith("cond_encoder."):  # fresh: T2I-Adapter init (zero residual branch), not the old weights
            assert not torch.equal(own[k], v) or not v.any(), k
        else:
            assert torch.equal(own[k], v), k
    zero = [k for k in own if k.startswith("cond_encoder.") and k.endswith("block2.weight")]
    assert zero and all(not own[k].any() for k in zero)
    assert all(torch.equal(v, ckpt.reconstructor.state_dict()[k]) for k, v in reconstructor.state_dict().items())

    # only the adapters the weights lack may be missing
    from ouro.pipelines.train_init import _models_with_fresh_adapters

    state = {f"generator.{k}": v for k, v in ckpt.generator.state_dict().items() if not k.startswith("cond_encoder.")}
    state |= {f"reconstructor.{k}": v for k, v in ckpt.reconstructor.state_dict().items()}
    state.pop(next(k for k in state if k.startswith("generator.unet.")))
    with pytest.raises(CheckpointError, match="1 tensors missing or unexpected"):
        _models_with_fresh_adapters(ckpt.config, state, ("rgb", "ccm"))


# ------------------------------------------------------------------------------- several machines
def test_machines_come_from_options_then_slurm_then_torchrun_variables():
    from ouro.pipelines.machines import DEFAULT_PORT, Machines, resolve_machines

    assert resolve_machines(env={}) == Machines(1, 0, None, None)
    slurm = {"SLURM_NNODES": "4", "SLURM_NODEID": "2", "MASTER_ADDR": "node001", "MASTER_PORT": "6000", "NNODES": "9"}
    assert resolve_machines(env=slurm) == Machines(4, 2, "node001", 6000)
    assert resolve_machines(env={"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"}) == Machines(2, 1, "10.0.0.1", DEFAULT_PORT)
    # options win over the environment
    assert resolve_machines(2, 0, "head", 1234, env=slurm) == Machines(2, 0, "head", 1234)
    assert resolve_machines(env={}, default_num_machines=3, machine_rank=1, main_process_ip="h") == Machines(3, 1, "h", DEFAULT_PORT)
    for kwargs, message in [
        (dict(num_machines=2, machine_rank=2, main_process_ip="h"), "--machine-rank 2: the machine rank must be 0 .. 1"),
        (dict(env={"SLURM_NNODES": "2", "SLURM_NODEID": "5", "MASTER_ADDR": "h"}), r"\$SLURM_NODEID 5"),
        (dict(num_machines=2, machine_rank=1), "--main-process-ip HOST"),
        (dict(env={"NNODES": "two"}), r"\$NNODES='two' is not a whole number"),
    ]:
        with pytest.raises(ValueError, match=message):
            resolve_machines(**{"env": {}, **kwargs})


def test_launch_command_uses_accelerates_own_multi_node_arguments(tmp_path):
    from ouro.pipelines.machines import Machines
    from ouro.pipelines.train import launch_command

    config = tiny_config(tmp_path, tmp_path / "run", gpus=8, num_machines=2)
    cmd = launch_command(config, machines=Machines(2, 1, "10.1.2.3", 29555))
    flags = {cmd[i]: cmd[i + 1] for i in range(len(cmd) - 1) if cmd[i].startswith("--")}
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--multi_gpu" in cmd
    assert flags["--num_processes"] == "16" and flags["--num_machines"] == "2" and flags["--machine_rank"] == "1"
    assert flags["--main_process_ip"] == "10.1.2.3" and flags["--main_process_port"] == "29555"
    ds = launch_command(dataclasses.replace(config, deepspeed=True), machines=Machines(2, 0, "10.1.2.3", 29555))
    assert ds[ds.index("--deepspeed_multinode_launcher") + 1] == "standard"  # every machine launches its own ranks, no SSH
    one = launch_command(dataclasses.replace(config, num_machines=1), port=29001)
    assert "--machine_rank" not in one and one[one.index("--num_processes") + 1] == "8" and one[one.index("--num_machines") + 1] == "1"
    with pytest.raises(ValueError, match="spans 2 machine"):
        launch_command(config, machines=Machines())


def test_cli_several_machines_need_the_main_address_and_a_run_folder(renders, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("SLURM_NNODES", "SLURM_NODEID", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    base = ["train", "--preset", "tiny", "--data", str(renders)]
    out = runner.invoke(app, base + ["-o", "run", "--num-machines", "2", "--machine-rank", "1"])
    assert out.exit_code == 2 and "--main-process-ip HOST" in out.output
    out = runner.invoke(app, base + ["--num-machines", "2", "--main-process-ip", "127.0.0.1"])
    assert out.exit_code == 2 and "all machines share" in out.output
    out = runner.invoke(app, base + ["-o", "run", "--num-machines", "2", "--machine-rank", "2", "--main-process-ip", "h"])
    assert out.exit_code == 2 and "--machine-rank 2" in out.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_two_machines_on_localhost_match_one_machine(renders, tmp_path):
    """`--num-machines 2` on this one host: two `ouro train` commands (machine ranks 0 and 1, one
    gloo process each) through accelerate's multi-node launch, 2 steps, against one machine with the
    same total batch (`--gpus 2`, batch 1 each; test_two_processes_average_gradients shows that run
    equals one process with batch 2): the same losses and the same weights, bit for bit."""
    import socket as socket_lib

    common = ["train", "--preset", "tiny", "--data", str(renders), "--max-steps", "2", "--batch-size", "1", "--lr", "1e-3",
              "--lpips-weight", "0", "--sample-every", "0", "--workers", "0", "--mixed-precision", "no"]
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_NNODES", "SLURM_NODEID", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")}
    with socket_lib.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = tmp_path / "two-machines"
    args = [OURO, *common, "-o", str(run), "--gpus", "1", "--num-machines", "2", "--main-process-ip", "127.0.0.1",
            "--main-process-port", str(port)]
    machines = [subprocess.Popen(args + ["--machine-rank", str(r)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for r in (0, 1)]
    outputs = [m.communicate(timeout=900) for m in machines]
    for m, (_, err) in zip(machines, outputs):
        assert m.returncode == 0, err[-3000:]
    assert "on machine 1 of 2 (main: 127.0.0.1:" in " ".join(outputs[1][1].split())  # Rich wraps long lines
    info = json.loads((run / "final" / "training.json").read_text())
    assert info["world_size"] == 2 and info["params_in_sync"] is True
    assert read_run_config(run / "config.json").num_machines == 2
    two = metrics(run)
    assert [r["step"] for r in two] == [1, 2] and all(r["world_size"] == 2 for r in two)

    single = tmp_path / "one-machine"
    done = subprocess.run([OURO, *common, "-o", str(single), "--gpus", "2"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["loss"] for r in two] == [r["loss"] for r in metrics(single)]
    w2, w1 = weights(run / "final"), weights(single / "final")
    assert all(torch.equal(w2[k], w1[k]) for k in w1)
