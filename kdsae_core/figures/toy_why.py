"""Why the toy model misses the paper's 93%: five figures, each a pure function of the toy evidence
(`toy_analysis.ToyEvidence`) with a `*_data` function returning the table it plots; the sentence computed from
that table is in `figures.toy_why_sentences`. `figures.catalog` lists them with the others and draws them;
`missing` says why one cannot be drawn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from kdsae_core.figures.style import CRITICAL_COLOUR, PALETTE, PREDICTED_COLOUR, new_figure, suptitle
from kdsae_core.figures.toy import ALPHA, L_INF, PAPER_PERCENT, alpha_colours, describe
from kdsae_core.toy import analysis as ta
from kdsae_core.toy.config import REPRESENTED_THRESHOLDS


def _diagonal(ax, top: float) -> None:
    ax.plot([0, top], [0, top], "-", color=PREDICTED_COLOUR, lw=1)
    ax.set(xlim=(0, top), ylim=(0, top))
    ax.set_aspect("equal", adjustable="box")
    ax.grid(True)


# ---- (1) the teachers ---------------------------------------------------------------------------------------------
def teachers_data(ev: ta.ToyEvidence) -> pd.DataFrame:
    """Per configuration: teacher floor and the floor predicted at d_T, the widest student (d_S = d_T), all / L_inf."""
    d = pd.DataFrame(ta.teacher_rows(ev.grid))
    for col in ("teacher_floor", "predicted_at_d_teacher", "student_at_d_teacher"):
        d[f"{col}_over_L_inf"] = d[col] / d.L_inf
    return d


def teachers(ev: ta.ToyEvidence) -> Figure:
    d = teachers_data(ev)
    colours = alpha_colours(d.alpha.unique())
    fig = new_figure(7.6, 4.6)
    ax, bx = fig.subplots(1, 2)
    for a, c in colours.items():
        s = d[d.alpha == a]
        ax.scatter(
            s.predicted_at_d_teacher_over_L_inf, s.teacher_floor_over_L_inf, s=22, color=c, label=f"{ALPHA} = {a:g}"
        )
        bx.scatter(s.teacher_floor_over_L_inf, s.student_at_d_teacher_over_L_inf, s=22, color=c)
    top = (
        float(
            max(
                d.teacher_floor_over_L_inf.max(),
                d.predicted_at_d_teacher_over_L_inf.max(),
                d.student_at_d_teacher_over_L_inf.max(),
            )
        )
        * 1.08
    )
    _diagonal(ax, top)
    _diagonal(bx, top)
    ax.set(
        xlabel=f"floor predicted at the teacher's width / {L_INF}",
        ylabel=f"teacher's measured floor / {L_INF}",
        title="teachers (trained on the task)",
    )
    bx.set(
        xlabel=f"teacher's floor / {L_INF}",
        ylabel=f"student at d_S = d_T / {L_INF}",
        title="the widest student against its teacher",
    )
    fig.legend(loc="outside lower center", ncol=len(colours), frameon=False)
    suptitle(
        fig,
        "The teachers already sit far above the floor the theory predicts for their width, and distilled "
        "students inherit it (one point per configuration, seed medians; black: y = x)",
        describe(ev.grid),
    )
    return fig


# ---- (2) represented features against the budget ---------------------------------------------------------------
def represented_data(ev: ta.ToyEvidence) -> pd.DataFrame:
    """One row per trained student: represented features at each threshold, F_S, the predicted floor and the measured
    floor split at the figure's threshold, all floors / L_inf (the columns the figure plots, and no others)."""
    d = pd.DataFrame(ta.model_rows(ev.grid) + ta.model_rows(ev.grid, "teacher"))
    key = ta.REPRESENTED
    out = d[
        ["role", "n", "alpha", "d_teacher", "width", "seed", "budget"]
        + [f"represented_{t}" for t in REPRESENTED_THRESHOLDS]
    ]
    return out.assign(
        predicted_over_L_inf=d.predicted / d.L_inf,
        **{
            f"dropped_{key}_over_L_inf": d[f"dropped_{key}"] / d.L_inf,
            f"interference_{key}_over_L_inf": d[f"interference_{key}"] / d.L_inf,
        },
    )


def _represented_vs_budget(ax, d: pd.DataFrame, teachers: pd.DataFrame) -> None:
    """Left panel: features each model represents (jittered) against its budget F_S, with the students' median
    per budget at every threshold."""
    key = ta.REPRESENTED
    cells = (
        d.groupby(["budget"])
        .agg(**{f"rep_{t}": (f"represented_{t}", "median") for t in REPRESENTED_THRESHOLDS}, models=("seed", "size"))
        .reset_index()
    )
    rng = np.random.default_rng(0)  # jitter only: the counts are integers and would stack on one point
    ax.scatter(
        d.budget + rng.uniform(-0.25, 0.25, len(d)),
        d[f"represented_{key}"] + rng.uniform(-0.25, 0.25, len(d)),
        s=4,
        alpha=0.25,
        color=PALETTE[0],
        lw=0,
        label=f"one student (||W_i|| >= {key})",
    )
    if len(teachers):
        ax.scatter(
            teachers.budget + rng.uniform(-0.25, 0.25, len(teachers)),
            teachers[f"represented_{key}"] + rng.uniform(-0.25, 0.25, len(teachers)),
            s=9,
            marker="x",
            lw=0.8,
            alpha=0.5,
            color=PALETTE[4],
            label=f"one teacher (||W_i|| >= {key})",
        )
    for i, t in enumerate(REPRESENTED_THRESHOLDS):
        ax.plot(
            cells.budget,
            cells[f"rep_{t}"],
            "o-" if str(t) == key else ".--",
            ms=4,
            color=PALETTE[[1, 3, 2][i]],
            label=f"median, ||W_i|| >= {t}",
        )
    top = float(max(d.budget.max(), d[f"represented_{REPRESENTED_THRESHOLDS[0]}"].max())) + 1
    _diagonal(ax, top)
    ax.set(
        xlabel=f"feature budget F_S = min(n, floor(d_S g({ALPHA})))",
        ylabel="features the student represents",
        title="represented features vs the budget",
    )
    ax.legend(fontsize=7, loc="upper left")


def _floor_split(bx, d: pd.DataFrame) -> None:
    """Right panel: the measured floor of students with L* > 0, split into the loss on the features they drop and
    the loss on the features they keep, each against the predicted floor."""
    key = ta.REPRESENTED
    below = d[d.predicted_over_L_inf > 0]
    bx.scatter(
        below.predicted_over_L_inf,
        below[f"dropped_{key}_over_L_inf"],
        s=5,
        alpha=0.35,
        lw=0,
        color=PALETTE[0],
        label="loss on dropped features",
    )
    bx.scatter(
        below.predicted_over_L_inf,
        below[f"interference_{key}_over_L_inf"],
        s=5,
        alpha=0.35,
        lw=0,
        color=PALETTE[1],
        label="loss on represented features (interference, shrinkage)",
    )
    _diagonal(
        bx,
        float(
            max(
                below[[f"dropped_{key}_over_L_inf", f"interference_{key}_over_L_inf", "predicted_over_L_inf"]]
                .max()
                .max(),
                0.05,
            )
        )
        * 1.05,
    )
    bx.set(
        xlabel=f"predicted floor / {L_INF}",
        ylabel=f"part of the measured floor / {L_INF}",
        title="the measured floor, split (L* > 0)",
    )
    bx.legend(fontsize=7, loc="upper left", markerscale=3)


def represented(ev: ta.ToyEvidence) -> Figure:
    data = represented_data(ev)
    d, teachers = data[data.role == "student"], data[data.role == "teacher"]
    fig = new_figure(7.8, 4.8)
    ax, bx = fig.subplots(1, 2)
    _represented_vs_budget(ax, d, teachers)
    _floor_split(bx, d)
    suptitle(
        fig,
        "What the theory counts and what it leaves out: features a student represents against its budget "
        "F_S, and its floor split into the loss on the features it drops (what the theory counts) and the "
        "loss on the features it keeps, interference and shrinkage (which the theory sets to zero)",
        describe(ev.grid),
    )
    return fig


# ---- (3) importance profiles ---------------------------------------------------------------------------------------
def profiles_data(ev: ta.ToyEvidence) -> pd.DataFrame:
    """Per importance profile and alpha: the median of each accuracy, recomputed from per-seed floors."""
    runs = {ev.grid["settings"]["importance"]: (ev.grid, ev.grid_source), **ev.profiles}
    rows = []
    for imp, (results, source) in runs.items():
        m = ta.accuracy_medians(ta.pairs(results))
        for a in m["norm"]:
            rows.append(
                {
                    "importance": imp,
                    "alpha": a,
                    "seeds": results["settings"]["seeds"],
                    "source": source,
                    "accuracy_rel_median": m["rel"][a],
                    "accuracy_norm_median": m["norm"][a],
                    "pairs": m["pairs"][a],
                    "pairs_below_d_star": m["pairs_below_d_star"][a],
                }
            )
    return pd.DataFrame(rows)


def profiles(ev: ta.ToyEvidence) -> Figure:
    d = profiles_data(ev)
    fig = new_figure(7.6, 3.9)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (col, title) in zip(
        axes,
        (
            ("accuracy_rel_median", "accuracy_rel (pairs below d*_S)"),
            ("accuracy_norm_median", "accuracy_norm (all pairs)"),
        ),
    ):
        for i, (imp, s) in enumerate(d.groupby("importance", sort=False)):
            ax.plot(s.alpha.astype(str), s[col], "o-", color=PALETTE[i], label=f"{imp} ({s.seeds.iloc[0]} seeds)")
        ax.axhline(ta.PAPER_ACCURACY, color=CRITICAL_COLOUR, ls="--", lw=1)
        ax.set(title=title, xlabel=f"sparsity {ALPHA}", ylim=(0, 1.02))
        ax.grid(True)
    axes[0].set_ylabel("median accuracy")
    axes[0].legend(fontsize=7, loc="lower left")
    suptitle(
        fig,
        f"Does any importance profile reach the paper's {PAPER_PERCENT} (red dashes)? The paper grid under each "
        "profile, medians recomputed from the per-seed floors",
        describe(ev.grid),
    )
    return fig


# ---- (4) the affine reading ------------------------------------------------------------------------------------------
def affine_data(ev: ta.ToyEvidence) -> dict[str, pd.DataFrame]:
    r = ta.affine_reading(ev.grid)
    fits = pd.DataFrame([{"alpha": a, **v} for a, v in r["per_alpha"].items()])
    m = r["accuracy"]
    fits["accuracy_rel_median"] = fits.alpha.map(m["rel"])
    fits["accuracy_norm_median"] = fits.alpha.map(m["norm"])
    held = pd.DataFrame([p for p in ta.pairs(ev.grid) if p["n"] in ta.HELD_OUT_NS])
    fit = fits.set_index("alpha")
    held["calibrated"] = (
        fit.a.reindex(held.alpha).to_numpy() * held.predicted / held.L_inf + fit.b.reindex(held.alpha).to_numpy()
    ) * held.L_inf
    return {"fits": fits, "held_out": held}


def affine(ev: ta.ToyEvidence) -> Figure:
    t = affine_data(ev)
    held = t["held_out"]
    colours = alpha_colours(held.alpha.unique())
    fig = new_figure(7.6, 4.4)
    ax, bx = fig.subplots(1, 2)
    for a, c in colours.items():
        s = held[held.alpha == a]
        ax.scatter(s.predicted / s.L_inf, s.measured / s.L_inf, s=16, color=c, label=f"{ALPHA} = {a:g}")
        bx.scatter(s.calibrated / s.L_inf, s.measured / s.L_inf, s=16, color=c)
    top = float(max((held.measured / held.L_inf).max(), (held.calibrated / held.L_inf).max())) * 1.08
    _diagonal(ax, top)
    _diagonal(bx, top)
    ax.set(xlabel=f"predicted floor / {L_INF}", ylabel=f"measured floor / {L_INF}", title="as predicted")
    bx.set(
        xlabel=f"a x predicted + b, fitted on n = 10, 20 / {L_INF}",
        ylabel=f"measured floor / {L_INF}",
        title="after the affine calibration",
    )
    fig.legend(loc="outside lower center", ncol=len(colours), frameon=False)
    suptitle(
        fig,
        "The abstract's affine decomposition read onto the toy model: held-out n = 40 pairs (seed medians) "
        "against the prediction and against its calibration fitted per sparsity on n = 10, 20",
        describe(ev.grid),
    )
    return fig


# ---- (5) the knee, in direct mode ------------------------------------------------------------------------------------
def knee_data(ev: ta.ToyEvidence) -> pd.DataFrame:
    """Direct-mode students: seed-median floor / L_inf per (n, alpha, width), with d*_S and the measured knee."""
    if ev.direct is None:
        return pd.DataFrame()
    knees = {(k["n"], k["alpha"]): k for k in ta.knee_rows(ev.direct)}
    rows = []
    for p in ta.pairs(ev.direct):
        k = knees[(p["n"], p["alpha"])]
        rows.append(
            {
                **p,
                "measured_over_L_inf": p["measured"] / p["L_inf"],
                "predicted_over_L_inf": p["predicted"] / p["L_inf"],
                "knee_width": k["knee_width"],
                "predicted_knee": k["predicted_knee"],
            }
        )
    return pd.DataFrame(rows)


def knee(ev: ta.ToyEvidence) -> Figure:
    d = knee_data(ev)
    ns = sorted(d.n.unique())
    colours = alpha_colours(d.alpha.unique())
    fig = new_figure(2.6 * len(ns) + 0.8, 3.9)
    axes = fig.subplots(1, len(ns), squeeze=False, sharey=True)[0]
    for ax, n in zip(axes, ns):
        for a, c in colours.items():
            s = d[(d.n == n) & (d.alpha == a)].sort_values("width")
            if s.empty:
                continue
            ax.plot(s.width, s.measured_over_L_inf, "o-", ms=3, color=c)
            ax.plot(s.width, s.predicted_over_L_inf, "--", color=c, lw=0.9)
            k = s.iloc[0]
            ax.plot(
                [k.knee_width],
                [float(s[s.width == k.knee_width].measured_over_L_inf.iloc[0])],
                "s",
                ms=8,
                mfc="none",
                mec=c,
                mew=1.5,
            )
            ax.plot([k.d_star_S], [0], "^", color=c, ms=7, clip_on=False)
        ax.set(title=f"n = {n}", xlabel="student width d_S")
        ax.grid(True)
    axes[0].set_ylabel(f"floor / {L_INF}")
    handles = [Line2D([], [], color=c, marker="o", ms=3, label=f"{ALPHA} = {a:g}") for a, c in colours.items()]
    handles += [
        Line2D([], [], ls="--", color="0.4", label="predicted"),
        Line2D([], [], ls="", marker="s", mfc="none", mec="0.3", label="measured knee"),
        Line2D([], [], ls="", marker="^", color="0.3", label="d*_S"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
    suptitle(
        fig,
        "Where the loss bottoms out, with no teacher in the way: students trained on the task at widths past "
        "the predicted knee (seed medians)",
        describe(ev.direct),
    )
    return fig


def missing(ev: ta.ToyEvidence) -> dict[str, str]:
    """The figures these results cannot draw, each with why (a sentence for the page)."""
    out = {}
    if not ta.teacher_rows(ev.grid):
        out["toy_why_teachers"] = "These results have no teachers (direct mode), so there is no teacher to compare."
    if not ta.model_rows(ev.grid):
        out["toy_why_represented"] = (
            "These results predate per-model feature counts; regenerate them with the "
            "current code (`make results-toy`)."
        )
    if ta.affine_reading(ev.grid)["accuracy"] is None:
        out["toy_why_affine"] = (
            f"The affine reading needs pairs at n = {', '.join(map(str, ta.FIT_NS))} (to fit) and "
            f"n = {', '.join(map(str, ta.HELD_OUT_NS))} (held out); these results lack them."
        )
    if ev.direct is None:
        out["toy_why_knee"] = (
            "The direct-mode knee sweep is not in this checkout (`make results-toy-direct`, or "
            "`kdsae toy --profile direct`)."
        )
    return out
