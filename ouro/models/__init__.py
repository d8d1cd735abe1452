"""ouro.models: the multi-view generator F and the Gaussian reconstructor G."""

from ouro.models.reconstructor import Reconstructor, ReconstructorOutput, noise_level

__all__ = ["Reconstructor", "ReconstructorOutput", "noise_level"]
