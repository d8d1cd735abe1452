"""ouro.models: the multi-view generator F and the Gaussian reconstructor G."""

from ouro.models.reconstructor import Reconstructor, ReconstructorOutput, noise_level
from ouro.models.adapter import FeedbackAdapter
from ouro.models.mv_unet import MultiViewUNet, MultiViewUNetOutput
from ouro.models.plucker_embedding import PluckerEmbedding, harmonic_embedding, unet_plucker_rays
from ouro.models.build import COMPAT_MODES, build_models

__all__ = [
    "Reconstructor",
    "ReconstructorOutput",
    "noise_level",
    "FeedbackAdapter",
    "MultiViewUNet",
    "MultiViewUNetOutput",
    "PluckerEmbedding",
    "harmonic_embedding",
    "unet_plucker_rays",
    "build_models",
    "COMPAT_MODES",
]