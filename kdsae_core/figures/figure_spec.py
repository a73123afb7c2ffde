"""What one entry of the figure catalog is: `FigureSpec`, a figure's chapter, heading and rationale with the functions
that compute its data, draw it and say one sentence about it, and the file stem it is saved under.
`figures.catalog` and `figures.catalog_exp2` list the entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from docutils.nodes import make_id
from matplotlib.figure import Figure


@dataclass(frozen=True)
class FigureSpec:
    key: str  # file stem (for a per-trial figure, after the trial prefix), e.g. "training_curves"
    chapter: str  # notebook stem, e.g. "02_trial_a"
    heading: str  # the heading above the figure (the gallery links to it)
    rationale: str  # why this figure / variant, for the gallery
    data: Callable  # the exact table(s) it plots (arguments: see the module docstring)
    draw: Callable[..., Figure]
    sentence: Callable[..., str]  # one sentence of interpretation, computed from the same numbers
    trial: str | None = None  # the trial its chapter draws it for (None: all trials, or not a run figure)
    formats: tuple[str, ...] = ("png",)
    in_paper: bool = False  # the variant the paper uses

    @property
    def anchor(self) -> str:
        return make_id(self.heading)  # the id the book gives the heading, so the gallery can link to it

    def stem(self, trial: str | None = None) -> str:
        trial = trial or self.trial
        return f"trial{trial}_{self.key}" if trial else self.key
