"""One module per `kdsae` verb; see `kdsae_core.cli`."""
