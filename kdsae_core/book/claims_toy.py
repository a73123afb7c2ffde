"""Experiment 1's claims in the ledger: each judged on the toy evidence (the sweep's grid, the direct-mode knee
sweep, the other importance profiles), with the quantities of the toy model's analysis (toy/analysis.py)."""

from __future__ import annotations

from kdsae_core.book.ledger import (
    ABSTRACT,
    CALIBRATED_FAILS,
    CALIBRATED_HOLDS,
    NOT_TESTABLE,
    THEORY,
    Claim,
    Ledger,
    percent,
    reproduced_if,
)
from kdsae_core.common.errors import MissingData
from kdsae_core.toy import analysis as ta
from kdsae_core.toy.analysis import ToyEvidence


def _grid_note(results: dict) -> str:
    s = results.get("settings", {})
    return (
        f"{len(results['configs'])} configurations, {s.get('seeds')} seeds, {s.get('steps')} steps, importance "
        f"{s.get('importance')}, mode {s.get('mode')}"
    )


def _medians_text(m: dict) -> str:
    return "; ".join(f"alpha {a:g}: rel {percent(m['rel'][a])}, norm {percent(m['norm'][a])}" for a in m["norm"])


def toy_claims(ledger: Ledger, toy: ToyEvidence) -> None:
    """Experiment 1's claims, in the ledger's order."""
    _prediction_claims(ledger, toy)
    _floor_claims(ledger, toy)


def _prediction_claims(ledger: Ledger, toy: ToyEvidence) -> None:
    """What the theory predicts of the measured floors: their accuracy, their order in sparsity, the knee."""
    results, on_paper_grid = toy.grid, ta.on_paper_grid(toy.grid)
    grid = _grid_note(results)
    ledger.add(
        Claim(
            "toy-accuracy",
            "Median prediction accuracy above 93% at all sparsity levels (48 configurations).",
            ABSTRACT,
            "median over (configuration, width) pairs of accuracy_rel and of accuracy_norm, per alpha",
            "> 0.93 at every alpha, under at least one of the two readings",
            toy.grid_source,
        ),
        lambda: _accuracy(toy, grid, on_paper_grid),
    )
    ledger.add(
        Claim(
            "toy-sparsity-order",
            "Higher sparsity yields lower floors at every width.",
            THEORY,
            "seed-median floor / L_inf at each (n, d_T, width), adjacent sparsity levels",
            f"no rise of more than {ta.ORDER_TOLERANCE:g} L_inf",
            toy.grid_source,
        ),
        lambda: _sparsity_order(results, grid, on_paper_grid),
    )
    ledger.add(
        Claim(
            "toy-knee",
            "The predicted d*_S is where the loss bottoms out.",
            THEORY,
            "measured knee width vs ceil(d*_S), direct-mode students at widths 1 .. ceil(1.5 d*_S) + 1",
            "median |difference| <= 1 width",
            toy.direct_source or "results/toy/direct (missing)",
        ),
        lambda: _knee(toy),
    )


def _floor_claims(ledger: Ledger, toy: ToyEvidence) -> None:
    """What bounds the floor and where it comes from: the lower bound, the feature budget, the affine reading."""
    results = toy.grid
    ledger.add(
        Claim(
            "toy-lower-bound",
            "The importance-weighted floor over the dropped features bounds the loss.",
            ABSTRACT,
            "seed-median floor vs the refined floor L*(d_S), pairs with L*(d_S) > 0",
            "every such pair at or above",
            toy.grid_source,
        ),
        lambda: _lower_bound(results),
    )
    ledger.add(
        Claim(
            "toy-feature-budget",
            "A student of width d_S encodes at most d_S g(alpha) of the features.",
            ABSTRACT,
            "features with ||W_i|| >= 0.5 per trained student vs F_S = min(n, floor(d_S g(alpha)))",
            f"at most {100 * ta.BUDGET_TOLERANCE:g}% of students above F_S",
            toy.grid_source,
        ),
        lambda: _feature_budget(results),
    )
    ledger.add(
        Claim(
            "toy-affine-reading",
            "Read onto the toy model: floor = a x (predicted floor) + a width-independent baseline.",
            ABSTRACT + ", its affine decomposition",
            "accuracy of the calibrated prediction on held-out feature counts, per alpha, both readings",
            "> 0.93 at every alpha under one reading",
            toy.grid_source,
        ),
        lambda: _affine_reading(results),
    )


def _accuracy(toy: ToyEvidence, grid: str, on_paper_grid: bool) -> tuple[str, str, str]:
    results = toy.grid
    m = ta.accuracy_medians(ta.pairs(results))
    ok = ta.clears(m)
    others = "".join(
        f" Under importance {imp} ({r['settings']['seeds']} seeds, {src}): "
        f"{_medians_text(ta.accuracy_medians(ta.pairs(r)))}."
        for imp, (r, src) in toy.profiles.items()
    )
    readings = (
        f"accuracy_rel {'clears' if ok['rel'] else 'does not clear'} 93% at every level, accuracy_norm "
        f"{'clears' if ok['norm'] else 'does not clear'} it"
    )
    if not on_paper_grid:
        return (
            _medians_text(m),
            NOT_TESTABLE,
            (
                f"these results are not the paper grid ({grid}); the committed "
                f"paper-grid results give the verdict. Here {readings}."
            ),
        )
    return (
        _medians_text(m),
        reproduced_if(ok["rel"] or ok["norm"]),
        f"medians recomputed from the per-seed floors of {grid}; {readings}.{others} Which reading the "
        "paper uses is not known to us, so either would do; the section 'Why the toy model misses 93%' "
        "of the toy chapter shows where the gap comes from.",
    )


def _sparsity_order(results: dict, grid: str, on_paper_grid: bool) -> tuple[str, str, str]:
    o = ta.sparsity_order(results)
    if not o["pairs"]:
        raise MissingData("these toy results have no width trained at two sparsity levels")
    worst = max(o["beyond"], key=lambda b: b["fraction"][1] - b["fraction"][0], default=None)
    example = (
        f"; largest: n={worst['n']}, d_T={worst['d_teacher']}, d_S={worst['width']}, alpha "
        f"{worst['alpha'][0]:g} -> {worst['alpha'][1]:g}: {worst['fraction'][0]:.3f} -> "
        f"{worst['fraction'][1]:.3f} L_inf"
        if worst
        else ""
    )
    return (
        f"{o['pairs'] - o['wrong_fraction']}/{o['pairs']} adjacent sparsity pairs have a lower floor / L_inf "
        f"at higher alpha; {len(o['beyond'])} rise by more than {o['tolerance']:g} L_inf{example}. As absolute "
        f"floors {o['pairs'] - o['wrong_absolute']}/{o['pairs']} are ordered, but those fall with 1 - alpha by "
        "construction (L_inf does).",
        reproduced_if(not o["beyond"]),
        "judged on floor / L_inf, the quantity the theory is about" + ("" if on_paper_grid else f" ({grid})"),
    )


def _knee(toy: ToyEvidence) -> tuple[str, str, str]:
    results = toy.grid
    distill = ta.knee_summary(results)
    why_not_distill = (
        f" Distill mode cannot test it: the lowest floor is at the widest student, d_S = d_T, in "
        f"{distill['lowest_at_widest']} of {distill['configs']} configurations, so the knee there "
        "measures the teacher's width."
        if results["settings"].get("mode") == "distill"
        else ""
    )
    if toy.direct is None:
        raise MissingData(
            f"no direct-mode knee sweep (results/toy/direct, `kdsae toy --profile direct`).{why_not_distill}"
        )
    k = ta.knee_summary(toy.direct)
    if not k["testable"]:
        return "no configuration has a width more than one away from ceil(d*_S)", NOT_TESTABLE, "widen the widths"
    diffs = ", ".join(f"n={n} alpha {a:g}: {d:+d}" for (n, a), d in k["diffs"].items())
    return (
        f"{k['within_one']}/{k['testable']} configurations have the knee within 1 of ceil(d*_S), "
        f"{k['exact']} exactly; median |knee - ceil(d*_S)| = {k['median_abs_diff']:g} (knee - ceil(d*_S): "
        f"{diffs}); the lowest floor is at the widest student in {k['lowest_at_widest']} of {k['configs']} "
        "configurations",
        reproduced_if(k["median_abs_diff"] <= 1),
        f"direct mode ({_grid_note(toy.direct)}); knee: first width within {k['tolerance']:g} L_inf of the "
        f"best seed-median floor; {k['configs'] - k['testable']} configurations whose widths all lie within "
        f"one of ceil(d*_S) cannot fail and are left out.{why_not_distill}",
    )


def _lower_bound(results: dict) -> tuple[str, str, str]:
    b = ta.lower_bound(results)
    return (
        f"{b['nonzero_at_or_above']}/{b['nonzero']} pairs with a non-zero prediction measure at or above it "
        f"({b['trivial']} more are predicted 0 and pass trivially)",
        reproduced_if(b["nonzero_at_or_above"] == b["nonzero"] and b["nonzero"] > 0),
        "caveat: with its bias a model can drop feature i for I_i Var(x_i) instead of I_i E[x_i^2], up to "
        f"{100 * b['largest_bias_gap']:.0f}% less at these sparsities, so the formula is not strictly a lower "
        "bound for this model",
    )


def _feature_budget(results: dict) -> tuple[str, str, str]:
    s = ta.budget_summary(results)
    if not s:
        raise MissingData("these toy results predate per-model feature counts: regenerate them (make results-toy)")
    others = ", ".join(
        f"{v['above_budget']} at ||W_i|| >= {t}" for t, v in s["by_threshold"].items() if t != s["threshold"]
    )
    allowed = int(ta.BUDGET_TOLERANCE * s["models"])
    return (
        f"{s['above_budget']} of {s['models']:,} students whose budget is below n represent more than F_S "
        f"features (||W_i|| >= {s['threshold']}; {others}); {s['below_budget']:,} represent fewer, median "
        f"represented / F_S = {s['median_represented_over_budget']:.2f}; {s['trivial']:,} students with "
        "F_S = n cannot exceed it and are left out",
        reproduced_if(s["above_budget"] <= allowed),
        f"{'the bound holds' if s['above_budget'] <= allowed else 'students exceed the bound'}. The loss on "
        f"the features students keep (interference and shrinkage) is a median "
        f"{percent(s['median_interference_share'])} of their floor, which the prediction sets to zero (toy "
        "chapter, 'Why the toy model misses 93%')",
    )


def _affine_reading(results: dict) -> tuple[str, str, str]:
    r = ta.affine_reading(results)
    m = r["accuracy"]
    if m is None:
        raise MissingData(
            f"these toy results lack pairs at n = {', '.join(map(str, ta.FIT_NS))} (fit) and "
            f"n = {', '.join(map(str, ta.HELD_OUT_NS))} (held out)"
        )
    ok = ta.clears(m)
    fits = "; ".join(
        f"alpha {a:g}: a={v['a']:.2f}, b={v['b']:.3f} ({v['fit']}), held-out R^2 "
        f"{'n/a' if v['r2_held_out'] is None else format(v['r2_held_out'], '.2f')}"
        for a, v in r["per_alpha"].items()
    )
    return (
        f"held-out n = {', '.join(map(str, r['held_out_ns']))}: {_medians_text(m)}",
        CALIBRATED_HOLDS if ok["rel"] or ok["norm"] else CALIBRATED_FAILS,
        f"floor / L_inf ~ a (predicted / L_inf) + b fitted per alpha on n = "
        f"{', '.join(map(str, r['fit_ns']))} ({fits}). A calibrated reading needs fitted constants: it is "
        "not the paper's claim reproduced.",
    )
