"""Figures: one module per figure family, each a pure function of result data -> matplotlib Figure,
with a `*_data` function returning the exact table it plots. All share `style` (applied on import)."""

from . import style
from .style import new_figure, save_figure, suptitle

style.apply()

__all__ = ["new_figure", "save_figure", "suptitle", "style"]
