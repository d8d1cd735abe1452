"""The vocabularies of the pipelines' string options, importable without torch.

Each pipeline checks its settings against these tuples and the CLI builds its option enums from
them (:func:`ouro.cli._common.choice_enum`), so a choice is added in one place.
"""

from __future__ import annotations

__all__ = ["ABLATIONS", "BACKGROUND_METHODS", "ENGINES", "EXPORT_FORMATS", "LR_SCHEDULERS", "MIXED_PRECISION", "NORMALIZE_MODES",
           "RECON_LOSSES", "SAMPLERS", "SPEEDS", "UP_AXES"]

#: Blender render engines of ``ouro render`` (and of eval's ground truth).
ENGINES = ("cycles", "workbench")
#: Object normalisation of ``ouro render``: unit bounding-box diagonal, or largest extent.
NORMALIZE_MODES = ("diagonal", "extent")
#: Up axis of GSO meshes: ``z`` (the scanned originals) or ``y`` (glTF-style exports).
UP_AXES = ("z", "y")
#: Files of ``ouro export``: ``ply`` (the splats) or a vertex-coloured mesh (``glb``, ``obj``).
EXPORT_FORMATS = ("ply", "glb", "obj")
#: How ``ouro sample`` separates the object from its background (ouro.data.segment): ``auto`` (an
#: RGBA image's alpha, else rembg when installed with its model on disk, else grabcut), ``rembg``,
#: ``grabcut`` (built in, offline), ``border`` (the border-colour rule), ``keep`` (no segmentation).
BACKGROUND_METHODS = ("auto", "rembg", "grabcut", "border", "keep")
#: Mixed-precision modes of accelerate.
MIXED_PRECISION = ("no", "fp16", "bf16")
#: Learning rate after the warm-up: constant (the paper), or decayed to 0 at the last step.
LR_SCHEDULERS = ("constant", "cosine", "linear")
#: Pixel term of the reconstruction loss: ``mse`` (the paper) or ``l1`` (the public code).
RECON_LOSSES = ("mse", "l1")
#: Samplers of ``ouro sample --sampler`` (ouro.diffusion.samplers): SVD's Euler (the default), EDM Heun
#: (2nd order) and DPM-Solver++(2M).
SAMPLERS = ("euler", "heun", "dpm++2m")
#: Named speed settings of ``--speed`` (ouro.pipelines.speed).
SPEEDS = ("quality", "fast", "fastest")
#: Paper Table 2 rows: name -> (G trained jointly, feedback maps fed to F, in adapter order).
#: separate: G frozen, no feedback; joint: joint training, no feedback; ccm / rgb: one map;
#: full: both (the paper's model).
ABLATIONS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "separate": (False, ()),
    "joint": (True, ()),
    "ccm": (True, ("ccm",)),
    "rgb": (True, ("rgb",)),
    "full": (True, ("rgb", "ccm")),
}
