"""Constants of the public Ouroboros3D checkpoint's camera setup, importable without torch.

The CLI reads these to build its option defaults; importing :mod:`ouro.geometry` for them would load
torch (about 2.5 s here) before ``ouro --help`` could answer. :mod:`ouro.geometry.cameras`
re-exports them.
"""

from __future__ import annotations

import math

__all__ = ["FRAME_CHOICES", "OFFICIAL_FOV_DEG", "OFFICIAL_FRAME_INDICES", "OFFICIAL_RADIUS", "SEED_MAX", "check_seed"]

#: Field of view (deg) of the public checkpoint's cameras: 2 * atan(18 / 50), a 50 mm lens on a 36 mm sensor.
OFFICIAL_FOV_DEG = math.degrees(2 * math.atan(18 / 50))
#: Camera distance of the public checkpoint's inference cameras (hyper/c2w.npy), object units.
OFFICIAL_RADIUS = 1.741697
#: Frames of a 16-frame orbit used as the 8 views, ``linspace(0, 15, 8).astype(int)``.
OFFICIAL_FRAME_INDICES = (0, 2, 4, 6, 8, 10, 12, 15)
#: How a training sample picks its views from an orbit: ``every2`` (the paper: every
#: ``frames // views``-th frame from the condition frame) or ``linspace`` (the public code:
#: :data:`OFFICIAL_FRAME_INDICES` for 16 frames). See :func:`ouro.data.dataset.frame_indices`.
FRAME_CHOICES = ("every2", "linspace")

#: Largest seed (``2**63 - 1``): every seed is a whole number in ``[0, SEED_MAX]``, which torch's
#: ``Generator.manual_seed``, numpy's ``SeedSequence`` and an int64 tensor all take as it is.
SEED_MAX = 2**63 - 1


def check_seed(seed: int, name: str = "seed") -> int:
    """``seed`` if it is an int in ``[0, SEED_MAX]``, else ``ValueError`` saying the range."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"{name} {seed}: choose a whole number from 0 to {SEED_MAX} (2^63 - 1)")
    return seed
