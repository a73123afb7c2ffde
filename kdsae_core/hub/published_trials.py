"""The authors' published trials (repository and description of each) and the snapshots they hold: what
`kdsae download --help` lists, kept free of torch so that the command starts without it."""

from __future__ import annotations

from dataclasses import dataclass

from kdsae_core.runs.layout import FINAL


@dataclass(frozen=True)
class PublishedTrial:
    trial: str
    repo: str
    about: str


PUBLISHED = {
    "A": PublishedTrial("A", "nileshsarkar-ai/colm-run-exp-2-t1", "lambda 3e-4 fixed"),
    "B": PublishedTrial("B", "nileshsarkar-ai/colm-run-exp-2-t2", "lambda 8e-5 fixed, paper-exact"),
    "C": PublishedTrial("C", "nileshsarkar-ai/colm-run-trial-2", "adaptive lambda, target L0 ~ 150"),
}
PUBLISHED_SNAPSHOTS = ("50M", "100M", "150M", "200M", "250M", FINAL)
