"""Figures: one module per figure family, each a pure function of result data -> matplotlib Figure,
with a `*_data` function returning the exact table it plots. All share `style` (applied on import)."""

from kdsae_core.figures import style
from kdsae_core.figures.style import new_figure, save_figure, suptitle

style.apply()

__all__ = ["new_figure", "save_figure", "suptitle", "style"]
