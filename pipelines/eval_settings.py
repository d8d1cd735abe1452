"""What ``ouro eval-gso`` evaluates with: the evaluation cameras, the settings, and its one-line error.

See :mod:`ouro.pipelines.evaluate` for the protocol these settings drive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from ouro.geometry.cameras import OFFICIAL_FOV_DEG, OFFICIAL_FRAME_INDICES, OFFICIAL_RADIUS, intrinsics_from_fov
from ouro.metrics import DEFAULT_FSCORE_THRESHOLDS

from .sample import view_cameras

__all__ = ["DEFAULT_POINTS", "PSNR_CAP_DB", "EvalCameras", "EvalError", "EvalSettings", "Log", "sampling_options"]

#: PSNR of identical images (MSE 0) is +inf; every per-view PSNR is capped here (dB).
PSNR_CAP_DB = 100.0
#: Points sampled on each side for Chamfer distance and F-score.
DEFAULT_POINTS = 10_000

Log = Callable[[str], None]


class EvalError(ValueError):
    """Nothing can be evaluated as asked (one line; the CLI exits 2)."""


@dataclass(frozen=True)
class EvalCameras:
    """The V evaluation cameras: the generated views' (``ouro.pipelines.sample.view_cameras``).

    With 8 views: frames 0, 2, .., 12, 15 of a 16-frame orbit at elevation 0 (OFFICIAL.md 12.2);
    otherwise all frames of a V-frame orbit.
    """

    num_views: int = 8
    radius: float = OFFICIAL_RADIUS
    fov_deg: float = OFFICIAL_FOV_DEG

    @classmethod
    def from_config(cls, camera) -> "EvalCameras":
        return cls(int(camera.num_views), float(camera.radius), float(camera.fov_deg))

    @property
    def orbit_frames(self) -> int:
        return 16 if self.num_views == len(OFFICIAL_FRAME_INDICES) else self.num_views

    @property
    def frame_indices(self) -> tuple[int, ...]:
        return tuple(OFFICIAL_FRAME_INDICES) if self.num_views == len(OFFICIAL_FRAME_INDICES) else tuple(range(self.num_views))

    def c2w(self) -> Tensor:  # [V, 4, 4] OpenCV c2w
        return view_cameras(self.num_views, self.radius, self.fov_deg)[0]

    def K(self, size: int) -> Tensor:  # [V, 3, 3] pixel intrinsics
        return intrinsics_from_fov(self.fov_deg, size, size).expand(self.num_views, 3, 3)


@dataclass(frozen=True)
class EvalSettings:
    """How objects are rendered, sampled and scored.

    Attributes:
        resolution: ground-truth render size and the size metrics are computed at, pixels.
        engine, samples: ``ouro render`` engine (``cycles`` / ``workbench``) and Cycles samples.
        seed: sampling seed (same seed, same views).
        steps: sampling steps; None = the model config's (``paper``: 25).
        feedback: sample with 3D feedback (Algorithm 2); False = the two-stage baseline.
        sampler, feedback_every, feedback_steps, fast, speed: as ``SampleSettings``' ``sampler``,
            ``feedback_every``, ``feedback_steps``, ``decode_reconstructor_views_only`` and ``speed``
            (``ouro sample --sampler/--feedback-every/--feedback-steps/--fast/--speed``).
        anchor_input: hold view 0 to the condition image while sampling; None = the model's
            (``DiffusionConfig.anchor_input``).
        count_input: whether view 0 (the input view) counts in the means.
        lpips_net: ``alex`` (the public code) or ``vgg``.
        points: points per side for the geometry metrics; 0 turns them off.
        mesh: also fuse a mesh from the Gaussians (``ouro export``) and score its surface.
        up_axis: the GSO meshes' up axis (``z``; ``y`` for already +y-up copies).
        render_timeout, workers: per-object render limit (s) and parallel render workers.
    """

    resolution: int = 512
    engine: str = "cycles"
    samples: int = 16
    seed: int = 0
    steps: int | None = None
    feedback: bool = True
    sampler: str = "euler"
    feedback_every: int = 1
    feedback_steps: tuple[int, int] | None = None
    fast: bool = False
    speed: str | None = None
    anchor_input: bool | None = None
    count_input: bool = True
    lpips_net: str = "alex"
    points: int = DEFAULT_POINTS
    mesh: bool = False
    up_axis: str = "z"
    render_timeout: float = 900.0
    workers: int = 1
    thresholds: tuple[float, ...] = DEFAULT_FSCORE_THRESHOLDS


def sampling_options(settings: EvalSettings) -> dict:
    """The sampling options beyond steps and feedback, as recorded in run.json, summary.json and the report."""
    return {"sampler": settings.sampler, "feedback_every": settings.feedback_every,
            "feedback_steps": list(settings.feedback_steps) if settings.feedback_steps is not None else None,
            "fast": settings.fast, "speed": settings.speed}


def settings_line(settings: dict) -> str:
    """The report's line saying what was evaluated and how the ground truth was rendered.

    Args:
        settings: ``summary.json``'s ``settings`` (an unsharded run's, or the shards' merged); the
            sampling options that differ from the defaults are named.
    """
    cameras = settings["cameras"]
    defaults = sampling_options(EvalSettings())
    changed = "".join(f", {k} {settings[k]}" for k in defaults if k in settings and settings[k] != defaults[k])
    what = (f"predictions from {settings['predictions']}" if settings.get("predictions")
            else f"{settings['model']}, seed {settings['seed']}, {settings['steps']} steps"
            + ("" if settings["feedback"] else ", no feedback (two-stage)") + changed
            + (", view 0 anchored to the input" if settings["anchor_input"] else ""))
    return (f"{what}; ground truth: ouro render ({settings['engine']}), {cameras['num_views']} views at elevation 0, "
            f"radius {cameras['radius']:g}, fov {cameras['fov_deg']:.3f} deg, {settings['resolution']} px.")
