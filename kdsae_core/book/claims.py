"""The claims ledger: each quantitative claim of the paper, the check that tests it, its inputs and a verdict
(book/ledger.py), built from Experiment 1's claims (book/claims_toy.py) and the language-model claims
(book/claims_lm.py); printed by `kdsae verify`, shown on the book's claims page and summed up on its first page.
Every quantity is defined on the book's methods page (book/methods.md).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable

import numpy as np

from kdsae_core.book.claims_lm import (
    embedded_claims,
    not_testable_claims,
    paper_scale_claims,
    pythia_claims,
    reference_measurement,
)
from kdsae_core.book.claims_toy import toy_claims
from kdsae_core.book.ledger import (
    CALIBRATED_FAILS,
    CALIBRATED_HOLDS,
    CONSISTENT,
    ERROR,
    INCONSISTENT,
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    Ledger,
    percent,
)
from kdsae_core.common.errors import MissingData
from kdsae_core.common.paths import reference_dir
from kdsae_core.toy import analysis as ta
from kdsae_core.toy.analysis import ToyEvidence


def build_ledger(
    toy: ToyEvidence | dict,
    source: str = "local",
    embedded_run: Path | None = None,
    hub_measurements: Callable[[str], list] | None = None,
) -> Ledger:
    """Every claim with its verdict. `toy` is the evidence of Experiment 1 (a bare results dict stands for a grid
    with no direct-mode sweep and no other profiles)."""
    if isinstance(toy, dict):
        toy = ToyEvidence(toy, "toy results given")
    ledger = Ledger()
    toy_claims(ledger, toy)
    pythia_claims(ledger)
    paper_scale_claims(ledger, source, hub_measurements)
    embedded_claims(ledger, embedded_run)
    not_testable_claims(ledger)
    return ledger


def render_text(ledger: Ledger) -> str:
    lines = []
    for c in ledger.claims:
        lines.append(f"[{c.verdict.upper()}] {c.id}: {c.text} ({c.source})")
        if c.measured:
            lines.append(f"    measured: {c.measured}")
        lines.append(f"    check: {c.check}; tolerance: {c.tolerance}")
        if c.inputs:
            lines.append(f"    inputs: {c.inputs}")
        if c.why:
            lines.append(f"    note: {c.why}")
    lines.append(summary_line(ledger))
    lines.append("Every quantity is defined on the book's methods page (book/methods.md).")
    return "\n".join(lines)


def summary_line(ledger: Ledger) -> str:
    return ", ".join(f"{v} {k}" for k, v in ledger.counts().items() if v)


COLOURS = {
    REPRODUCED: "#c8e6c9",
    NOT_REPRODUCED: "#ffcdd2",
    CONSISTENT: "#e3f2fd",
    INCONSISTENT: "#f8bbd0",
    CALIBRATED_HOLDS: "#fff9c4",
    CALIBRATED_FAILS: "#ffe0b2",
    NOT_TESTABLE: "#e0e0e0",
    ERROR: "#ffab91",
}


def render_html(ledger: Ledger) -> str:
    rows = "".join(
        f"<tr id='claim-{html.escape(c.id)}' style='background:{COLOURS[c.verdict]}'><td><b>{html.escape(c.verdict)}"
        f"</b></td><td>{html.escape(c.text)}<br><small>{html.escape(c.source)}</small></td>"
        f"<td>{html.escape(c.check)}<br><small>tolerance: {html.escape(c.tolerance)}</small>"
        f"<br><small>inputs: {html.escape(c.inputs or 'none')}</small></td>"
        f"<td>{html.escape(c.measured)}</td><td><small>{html.escape(c.why)}</small></td></tr>"
        for c in ledger.claims
    )
    return (
        "<table class='claims-ledger'><thead><tr><th>verdict</th><th>claim</th><th>check</th>"
        f"<th>measured</th><th>why</th></tr></thead><tbody>{rows}</tbody></table>"
    )


# ---- the verdict in one place (the book's first page) -------------------------------------------------------
def headline(ledger: Ledger, toy: ToyEvidence) -> list[tuple[str, str]]:
    """The ledger's verdict as a few Markdown sentences, each with the claim id whose row holds its evidence. Every
    clause follows the verdict or number it cites."""
    claims = {c.id: c for c in ledger.claims}
    lines = [_released_sentence(ledger)]
    floor = _toy_floor_sentence(claims, toy)
    if floor:
        lines.append(floor)
    lines += _toy_claim_sentences(claims, toy)
    lines.append(_language_model_sentence())
    return lines


def _released_sentence(ledger: Ledger) -> tuple[str, str]:
    """How the formula's arithmetic fares against the authors' released numbers."""
    released = [c for c in ledger.claims if c.id.startswith("pythia-")]
    ok = sum(c.verdict == CONSISTENT for c in released)
    agree = (
        ("agrees with" if ok == len(released) else f"agrees in {ok} of {len(released)} checks with")
        if ok
        else "could not be checked against"
    )
    return (
        f"**The formula's arithmetic {agree} the authors' released numbers** (F, α, d\\*_S and the features "
        f"a width-128 student drops; {', '.join(sorted({c.verdict for c in released}))}): a consistency "
        "check of their files, not a new measurement.",
        "pythia-l12-F",
    )


def _toy_floor_sentence(claims: dict, toy: ToyEvidence) -> tuple[str, str] | None:
    """Whether the predicted floor bounds the toy model's measured loss, and how tightly; None without a pair whose
    prediction is non-zero."""
    rows = [r for r in ta.pairs(toy.grid) if r["predicted"] > 0]
    if not rows:
        return None
    gap = float(np.median([(r["measured"] - r["predicted"]) / r["L_inf"] for r in rows]))
    b = ta.lower_bound(toy.grid)
    holds = claims["toy-lower-bound"].verdict == REPRODUCED
    kind = (
        ("a lower bound" + (", but a loose one" if gap > ta.ORDER_TOLERANCE else "")) if holds else "not a lower bound"
    )
    return (
        f"**In the toy model the predicted floor is {kind}**: {b['nonzero_at_or_above']} of "
        f"{b['nonzero']} pairs with a non-zero prediction measure at or above it; the median pair sits "
        f"{percent(gap)} of L∞ {'above' if gap >= 0 else 'below'} it.",
        "toy-lower-bound",
    )


def _toy_claim_sentences(claims: dict, toy: ToyEvidence) -> list[tuple[str, str]]:
    """The toy model's accuracy and knee verdicts, and the feature budget that explains them."""
    acc = claims["toy-accuracy"]
    knee = claims["toy-knee"]
    lines = [
        (f"**The 93% accuracy claim: {acc.verdict}** ({_md(acc.measured)}).", "toy-accuracy"),
        (
            f"**The knee at d\\*_S: {knee.verdict}**" + (f" ({_md(knee.measured)})." if knee.measured else "."),
            "toy-knee",
        ),
    ]
    budget = ta.budget_summary(toy.grid)
    if budget:
        fewer = budget["median_represented_over_budget"] < 1
        lines.append(
            (
                f"**{'Why' if acc.verdict == NOT_REPRODUCED else 'Where the floor comes from'}**: trained "
                f"students represent a median {budget['median_represented_over_budget']:.2f} of the features "
                f"their budget allows{' (fewer than the theory assumes)' if fewer else ''}, and the loss on "
                f"the features they keep is a median {percent(budget['median_interference_share'])} of their "
                "floor, which the theory sets to zero.",
                "toy-feature-budget",
            )
        )
    return lines


def _language_model_sentence() -> tuple[str, str]:
    """What the companion does not test on a language model, with layer 12's dropped share when the released file is
    there."""
    text = (
        "**On a language model nothing is distilled here**: the abstract's distillation and probing results "
        "need experiments this companion does not run."
    )
    layer12 = _layer12_dropped_share()
    if layer12:
        text += (
            f" At layer 12, the {layer12[0]:.0%} of latents a width-128 student must drop "
            f"carry {layer12[1]:.2%} of L∞ by the released importances."
        )
    return text, "distill-floor-order"


def _md(text: str) -> str:
    """Plain text made safe inside Markdown (d*_S would start an emphasis)."""
    return text.replace("*", "\\*")


def _layer12_dropped_share() -> tuple[float, float] | None:
    """(share of layer 12's alive latents a width-128 student drops, their share of L_inf), from the released file."""
    try:
        m = reference_measurement(reference_dir(), 12)
    except MissingData:
        return None
    p = m.predictions([128])[128]
    return p["features_dropped"] / m.F_alive, p["predicted_floor"] / m.L_inf
