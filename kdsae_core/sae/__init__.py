"""The sparse autoencoder: its weights, the trials' L1 regimes and controller, the fused dense and sparse steps,
and the memory plan a run is checked against. Imports common and theory."""
