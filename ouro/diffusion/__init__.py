"""ouro.diffusion"""
