"""ouro.gaussians: the Gaussian container and its 14-channel layout, and the differentiable rasterizer."""

from .gaussians import LAYOUT, Compat, Gaussians, covariances, quaternion_to_matrix
from .rasterize import RenderOutput, render

__all__ = ["LAYOUT", "Compat", "Gaussians", "covariances", "quaternion_to_matrix", "RenderOutput", "render"]
