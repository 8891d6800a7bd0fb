"""Training engine: trainer, distributed setup, checkpoints, metrics, plots, experiments."""
