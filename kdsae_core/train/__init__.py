"""Activations -> SAEs -> checkpoints: the settings, the trainer, its resumable state and torchrun. Imports every
layer below it (common, theory, data, sae, runs, measure)."""
