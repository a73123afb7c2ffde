"""Experiment 1, the toy model: the batched model and its data, the sweep's settings and profiles, the sweep
(resumable, parallel), and every verdict quantity computed from its results. Imports common and theory."""
