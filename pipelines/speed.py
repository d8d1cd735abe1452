"""Named speed settings (``--speed``): fixed combinations of sampler, steps, feedback schedule and decode.

=========  ======================================================================================
name       what it runs (FLOPs per object at paper size, benchmarks/flops.py, against the public
           pipeline's 1,262 TFLOP)
=========  ======================================================================================
quality    today's default: Euler, the model's steps (25 public, 20 demo), feedback at every step,
           all 8 views decoded (0.95x on the public weights' 25 steps; 0.76x at the demo's 20)
fast       DPM-Solver++(2M), 4 steps, feedback at every step (0.15x): the cheapest setting measured
           whose held-out scores stayed within the 3-seed spread of `quality` on views and splats
           (benchmarks/README.md, "Sampling: quality against cost"; Euler 4 ties on cost and was
           within too, with views LPIPS nearer the edge)
fastest    DPM-Solver++(2M), 2 steps, feedback at every step (0.08x): the cheapest setting measured;
           outside the spread (views 18.98 dB PSNR against the default's 20.12-20.34, splats 18.81
           against 18.95-19.16; same table). DPM-Solver++ 3 steps (0.11x) was outside it too
=========  ======================================================================================

Measured on the demo model only (schedule 80 -> 1.5, 35 held-out objects): the public weights'
schedule (700 -> 0.002) is far longer, and how `fast` and `fastest` score on it is not measured.

A speed fixes every field it names, so it cannot be combined with ``--sampler``, ``--steps``,
``--feedback-every``, ``--feedback-steps`` or ``--fast`` (:func:`resolve_sampling` refuses); seed,
guidance and anchoring stay free. The name is written into meta.json (``settings.speed``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .choices import SAMPLERS, SPEEDS as SPEED_NAMES

__all__ = ["Speed", "SPEEDS", "resolve_sampling"]


@dataclass(frozen=True)
class Speed:
    """One named speed setting (the fields of :class:`ouro.pipelines.sample.SampleSettings` it fixes)."""

    name: str
    description: str  #: one line for ``--help``
    sampler: str = "euler"
    num_steps: int | None = None  #: None: the model's (``DiffusionConfig.num_steps``)
    feedback_every: int = 1
    feedback_steps: tuple[int, int] | None = None
    decode_reconstructor_views_only: bool = False


SPEEDS: dict[str, Speed] = {
    s.name: s
    for s in (
        Speed("quality", "Euler, the model's steps, feedback at every step (the default)"),
        Speed("fast", "DPM-Solver++(2M), 4 steps, feedback at every step (0.15x the public pipeline's FLOPs)",
              sampler="dpm++2m", num_steps=4),
        Speed("fastest", "DPM-Solver++(2M), 2 steps, feedback at every step (0.08x the public pipeline's FLOPs; "
              "below `quality`'s 3-seed spread)", sampler="dpm++2m", num_steps=2),
    )
}
assert tuple(SPEEDS) == SPEED_NAMES, "ouro.pipelines.choices.SPEEDS names the CLI's choices"


def resolve_sampling(
    speed: str | None,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    feedback_every: int | None = None,
    feedback_steps: tuple[int, int] | None = None,
    fast: bool = False,
) -> dict:
    """The :class:`~ouro.pipelines.sample.SampleSettings` fields of a speed, or of the single options.

    Returns ``{"speed", "sampler", "num_steps", "feedback_every", "feedback_steps",
    "decode_reconstructor_views_only"}``; ``num_steps`` None means the model's.

    Raises:
        ValueError: an unknown speed or sampler, ``feedback_every < 1``, or a speed combined with
            an option it fixes (the message names both).
    """
    if sampler is not None and sampler not in SAMPLERS:
        raise ValueError(f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if feedback_every is not None and feedback_every < 1:
        raise ValueError(f"--feedback-every {feedback_every}: must be >= 1")
    if speed is None:
        return {"speed": None, "sampler": sampler or "euler", "num_steps": steps, "feedback_every": feedback_every or 1,
                "feedback_steps": feedback_steps, "decode_reconstructor_views_only": bool(fast)}
    if speed not in SPEEDS:
        raise ValueError(f"--speed {speed!r}: choose one of {', '.join(SPEEDS)}")
    given = [name for name, value in (("--sampler", sampler), ("--steps", steps), ("--feedback-every", feedback_every),
                                      ("--feedback-steps", feedback_steps), ("--fast", fast or None)) if value is not None]
    if given:
        raise ValueError(f"--speed {speed} fixes the sampler, steps, feedback schedule and decode; drop {', '.join(given)} "
                         "or --speed")
    s = SPEEDS[speed]
    return {"speed": s.name, "sampler": s.sampler, "num_steps": s.num_steps, "feedback_every": s.feedback_every,
            "feedback_steps": s.feedback_steps, "decode_reconstructor_views_only": s.decode_reconstructor_views_only}
