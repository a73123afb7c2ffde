"""Every figure of the book: one style, one catalog (figure -> data -> drawing -> sentence) for both experiments,
and the figure-data regression. Imports every layer below it, never book or cli. The style applies on import."""

from kdsae_core.figures import style
from kdsae_core.figures.style import new_figure, save_figure, suptitle

style.apply()

__all__ = ["new_figure", "save_figure", "suptitle", "style"]
