"""Model offloading: keep only the model a stage runs on the accelerator (``ouro sample --offload``).

Sampling runs four frozen models in turn: CLIP and the VAE encoder (conditioning), F (every
denoising step), the VAE decoder and G (every step with 3D feedback). With offloading, all of
them live on the CPU and each is moved to the accelerator when its stage starts, after the one
there before it has been moved back (as diffusers' ``enable_model_cpu_offload``: one model
resident at a time). The outputs are identical (the same weights, the same kernels); the cost is
the transfers: at paper size in float16, F (3.5 GB), the VAE (0.2 GB) and G (0.85 GB) each cross
PCIe twice per step with feedback.

    >>> placer = ModelPlacer("cuda", offload=True)                        # doctest: +SKIP
    >>> placer.activate(models.generator)       # F on the GPU, whatever was there back on the CPU
    >>> out = models.generator(...)                                        # doctest: +SKIP
"""

from __future__ import annotations

from collections import deque

import torch
from torch import nn

__all__ = ["ModelPlacer", "HISTORY"]

HISTORY = 256  #: activations remembered in ``ModelPlacer.history``


class ModelPlacer:
    """Where the models are while a stage runs.

    Args:
        device: the compute device.
        offload: keep idle models on ``idle_device``; False: every model stays where it is
            (on ``device``) and :meth:`activate` only records the stage.
        idle_device: where idle models wait (the CPU).

    Attributes:
        resident: the model now on ``device`` under offloading (None before the first stage).
        history: the class name of the model each :meth:`activate` call asked for, in order (the
            last :data:`HISTORY` calls).
    """

    def __init__(self, device: torch.device | str, offload: bool = False, idle_device: torch.device | str = "cpu") -> None:
        self.device, self.offload, self.idle_device = torch.device(device), bool(offload), torch.device(idle_device)
        self.resident: nn.Module | None = None
        self.history: deque[str] = deque(maxlen=HISTORY)

    def activate(self, module: nn.Module) -> nn.Module:
        """Make ``module`` runnable on the compute device. Under offloading the model there before
        goes back to ``idle_device`` first, so one model is resident at a time; a part of the
        resident model (the VAE inside the conditioner) is already there and nothing moves."""
        self.history.append(type(module).__name__)
        if not self.offload or module is self.resident:
            return module
        if self.resident is not None:
            if any(sub is module for sub in self.resident.modules()):
                return module
            self.resident.to(self.idle_device)
        module.to(self.device)
        self.resident = module
        return module

    def release(self) -> None:
        """Move the resident model back to ``idle_device`` (nothing stays on the accelerator)."""
        if self.offload and self.resident is not None:
            self.resident.to(self.idle_device)
            self.resident = None
