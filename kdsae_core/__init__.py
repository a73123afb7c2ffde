"""kdsae_core: the library behind the kdsae companion book (arXiv 2604.04037)."""

__version__ = "0.1.0"
