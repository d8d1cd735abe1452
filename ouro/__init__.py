"""ouro: Ouroboros3D image-to-3D generation by 3D-aware recursive diffusion."""

__version__ = "0.1.0"
