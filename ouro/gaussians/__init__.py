"""ouro.gaussians: the Gaussian container and its 14-channel layout, and the differentiable rasterizer."""

from .gaussians import LAYOUT, Compat, Gaussians, covariances, quaternion_multiply, quaternion_to_matrix, rotate
from .rasterize import RenderOutput, render

__all__ = [
    "LAYOUT", "Compat", "Gaussians", "covariances", "quaternion_multiply", "quaternion_to_matrix", "rotate", "RenderOutput", "render",
]
