"""Pipelines: render, filter, train, sample, evaluate, export. Usable from Python without the CLI."""
