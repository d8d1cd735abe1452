"""Pipelines: render, filter, train, sample, evaluate, export, and the app's page. Usable from Python without the CLI."""
