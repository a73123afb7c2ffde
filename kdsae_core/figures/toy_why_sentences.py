"""What the 'why' figures say: each sentence computed from the same toy evidence (`toy_analysis.ToyEvidence`) its
figure plots (`figures.toy_why`). `figures.catalog` pairs each sentence with its figure.
"""

from __future__ import annotations

from kdsae_core.figures.style import percent
from kdsae_core.figures.toy import ALPHA, L_INF, PAPER_PERCENT
from kdsae_core.figures.toy_why import affine_data, profiles_data
from kdsae_core.toy import analysis as ta


# ---- (1) the teachers --------------------------------------------------------------------------------------------
def teachers_sentence(ev: ta.ToyEvidence) -> str:
    t = ta.teacher_summary(ev.grid)
    rel = ", ".join(f"{percent(v)} at {ALPHA} = {a:g}" for a, v in t["teacher_accuracy_rel"].items() if v is not None)
    norm = ", ".join(f"{percent(v)}" for v in t["teacher_accuracy_norm"].values())
    far = t["median_teacher_over_L_inf"] > ta.ORDER_TOLERANCE
    inherit = abs(t["median_student_over_teacher"] - 1) <= 0.1
    return (
        f"Before any distillation, the teachers of the {t['configs']} configurations (seed medians) sit at a median "
        f"{percent(t['median_teacher_over_L_inf'])} of {L_INF}; the prediction for their own width reaches a median "
        f"accuracy_rel of {rel} (accuracy_norm {norm} over all levels). Students as wide as their teacher end at "
        f"a median {t['median_student_over_teacher']:.2f}x the teacher's floor"
        + (
            ": the gap to the prediction is already there before distillation, and students inherit it."
            if far and inherit
            else "."
        )
    )


# ---- (2) represented features against the budget -----------------------------------------------------------------
def represented_sentence(ev: ta.ToyEvidence) -> str:
    s, t = ta.budget_summary(ev.grid), ta.budget_summary(ev.grid, role="teacher")
    teachers = (
        f" Their teachers, trained on the task, represent a median {t['median_represented_over_budget']:.2f} of "
        f"the budget of their own width ({t['above_budget']:,} of {t['models']:,} above it)."
        if t
        else ""
    )
    other = "; ".join(
        f"{v['median_represented_over_budget']:.2f} at ||W_i|| >= {t}"
        for t, v in s["by_threshold"].items()
        if t != s["threshold"]
    )
    dropped = s["median_dropped_over_predicted_below_d_star"]
    kept = s["median_interference_share_below_d_star"]
    effect = (
        "both push the measured floor above the prediction"
        if dropped > 1 and kept > 0
        else "the loss on represented features pushes the floor above the prediction"
        if kept > 0
        else "the floor stays near the prediction"
    )
    return (
        f"Of {s['models']:,} trained students whose budget F_S is below n ({s['trivial']:,} more have F_S = n and "
        f"cannot exceed it), {s['above_budget']:,} represent more features than F_S (||W_i|| >= {s['threshold']}), "
        f"{s['at_budget']:,} exactly as many and {s['below_budget']:,} fewer; the median student represents "
        f"{s['median_represented_over_budget']:.2f} of its budget ({other}). The loss on the features they drop is a "
        f"median {dropped:.2f}x the predicted floor, and the loss on the features they keep (interference and "
        f"shrinkage) is a median {percent(kept)} of the measured floor: {effect}." + teachers
    )


# ---- (3) importance profiles -------------------------------------------------------------------------------------
def profiles_sentence(ev: ta.ToyEvidence) -> str:
    d = profiles_data(ev)
    parts, any_clears = [], False
    for imp, s in d.groupby("importance", sort=False):
        ok = ta.clears(
            {
                "rel": dict(zip(s.alpha, s.accuracy_rel_median.where(s.accuracy_rel_median.notna(), None))),
                "norm": dict(zip(s.alpha, s.accuracy_norm_median)),
            }
        )
        any_clears |= ok["rel"] or ok["norm"]
        lowest = s.loc[s.accuracy_norm_median.idxmin()]
        parts.append(
            f"{imp} ({s.seeds.iloc[0]} seeds): lowest accuracy_norm {percent(lowest.accuracy_norm_median)} at "
            f"{ALPHA} = {lowest.alpha:g}, {'clears' if ok['rel'] or ok['norm'] else 'does not clear'} "
            f"{PAPER_PERCENT} at every level "
            f"under "
            f"{'one reading' if ok['rel'] or ok['norm'] else 'either reading'}"
        )
    if len(parts) == 1:
        return parts[0] + "; the other importance profiles are not committed in this checkout."
    return "; ".join(parts) + (
        f". At least one reading reaches {PAPER_PERCENT} under some profile."
        if any_clears
        else f". No importance profile we tried reaches {PAPER_PERCENT} at every sparsity level under either reading."
    )


# ---- (4) the affine reading --------------------------------------------------------------------------------------
def affine_sentence(ev: ta.ToyEvidence) -> str:
    fits = affine_data(ev)["fits"]
    per = "; ".join(
        f"{ALPHA} = {r.alpha:g}: accuracy_rel {percent(r.accuracy_rel_median)}, accuracy_norm "
        f"{percent(r.accuracy_norm_median)}"
        for r in fits.itertuples()
    )
    return (
        f"Calibrated on n = 10 and 20 and judged on the held-out n = 40: {per}. This reading needs two fitted "
        "constants per sparsity level, so it is a calibration, not the paper's prediction."
    )


# ---- (5) the knee, in direct mode --------------------------------------------------------------------------------
def knee_sentence(ev: ta.ToyEvidence) -> str:
    k = ta.knee_summary(ev.direct)
    distill = ta.knee_summary(ev.grid)
    still = (
        f" In {k['lowest_at_widest']} of {k['configs']} configurations the lowest floor is at the widest student "
        "trained, so the loss is still falling there, past the predicted knee."
        if k["lowest_at_widest"]
        else ""
    )
    return (
        f"Trained on the task, {k['within_one']} of {k['testable']} configurations that can test it have their knee "
        f"within one width of ceil(d*_S) and {k['exact']} exactly at it (median |knee - ceil(d*_S)| = "
        f"{k['median_abs_diff']:g}).{still} Distilled students cannot show this: their lowest floor is at d_S = d_T "
        f"in {distill['lowest_at_widest']} of {distill['configs']} configurations."
    )
