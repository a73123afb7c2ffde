"""Why three trials: the sparsity-reconstruction frontier, every layer of every trial (and pilots)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from kdsae_core.figures.exp2_common import PILOT_COLOUR, TRIAL_COLOURS, axis_label
from kdsae_core.figures.style import new_figure, plain_log_axis, suptitle
from kdsae_core.runs.tables import RunData
from kdsae_core.sae.model import TRIAL_NAMES

ROLE = {"A": "dense regime", "B": "paper-exact", "C": "adaptive, target L0"}


def frontier_data(run: RunData, trials=None, layers=None) -> pd.DataFrame:
    """One row per (trial, layer): final L0 and MSE, the trial's lambda and L1 form, and whether it is a
    pilot. Each layer's points, ordered by L0, trace that layer's trade-off curve."""
    trials = [t for t in (trials or run.trials) if (run.measurements["trial"] == t).any()]
    frames = []
    for trial in trials:
        t = run.layer_table(trial)
        if layers is not None:
            t = t[t["layer"].isin([int(v) for v in layers])]
        cfg = run.trial_config(trial)
        frames.append(
            pd.DataFrame(
                {
                    "trial": trial,
                    "layer": t["layer"].astype(int).values,
                    "L0": t["L0"].astype(float).values,
                    "mse": t["mse"].astype(float).values,
                    "lambda": cfg.get("lambda"),
                    "l1_form": cfg.get("l1_form"),
                    "target_L0": run.target_l0(trial),
                    "pilot": trial not in TRIAL_NAMES,
                }
            )
        )
    out = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["trial", "layer", "L0", "mse", "lambda", "l1_form", "target_L0", "pilot"])
    )
    return out


def _trial_label(row) -> str:
    lam = f"\u03bb {row['lambda']:.0e}" if isinstance(row["lambda"], (int, float)) and pd.notna(row["lambda"]) else ""
    if row["trial"] in TRIAL_NAMES:
        role = ROLE[row["trial"]]
        if row["trial"] == "C" and pd.notna(row["target_L0"]):
            role = f"adaptive, target L0 {row['target_L0']:g}"
            lam = ""
        return f"trial {row['trial']}: {role}" + (f" ({lam} {row['l1_form']})" if lam else "")
    return f"pilot {lam} {row['l1_form'] or ''}".strip()


def frontier(data: pd.DataFrame, header: str) -> Figure:
    fig = new_figure(10, 6.5)
    ax = fig.add_subplot()
    few_layers = data["layer"].nunique() <= 8
    if data["trial"].nunique() > 1:
        for i, (layer, d) in enumerate(data.groupby("layer")):
            d = d.sort_values("L0")
            ax.plot(
                d["L0"],
                d["mse"],
                "-",
                color="0.6",
                lw=0.8,
                zorder=1,
                label="one layer across trials (its trade-off curve)" if i == 0 else None,
            )
    for trial, d in data.groupby("trial", sort=False):
        d = d.sort_values("layer")
        pilot = bool(d["pilot"].iloc[0])
        colour = PILOT_COLOUR if pilot else TRIAL_COLOURS.get(trial, "black")
        ax.scatter(
            d["L0"],
            d["mse"],
            s=40 if pilot else 60,
            color=colour,
            marker="s" if pilot else "o",
            edgecolor="black",
            lw=0.5,
            zorder=3,
            label=_trial_label(d.iloc[0]),
        )
        if few_layers:
            for r in d.itertuples(index=False):
                ax.annotate(
                    str(r.layer), (r.L0, r.mse), textcoords="offset points", xytext=(4, 3), fontsize=7, color=colour
                )
    for metric, axis in (("L0", ax.xaxis), ("mse", ax.yaxis)):
        v = data[metric].astype(float)
        if len(v) and (v > 0).all() and v.max() / v.min() > 5:
            (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
            plain_log_axis(axis)
    ax.set_xlabel(axis_label("L0") + (", log scale" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel(axis_label("mse") + (", log scale" if ax.get_yscale() == "log" else ""))
    ax.grid(alpha=0.3, which="both")
    ax.legend(
        fontsize=8.5,
        loc="upper right",
        title="numbers next to points: layer (0-based)" if few_layers else None,
        title_fontsize=8,
    )
    ax.margins(0.08)
    suptitle(fig, "The sparsity\u2013reconstruction frontier: every layer of every trial (final snapshot)", header, 10)
    return fig


def frontier_sentence(d: pd.DataFrame) -> str:
    """Each trial's mean L0 and MSE, and at how many layers a sparser trial always costs reconstruction."""
    m = d.groupby("trial")[["L0", "mse"]].mean()
    parts = [f"trial {t}: mean L0 {r.L0:,.1f}, MSE {r.mse:.3g}" for t, r in m.iterrows()]
    by_layer = [np.all(np.diff(g.sort_values("L0")["mse"].to_numpy()) < 0) for _, g in d.groupby("layer")]
    verdict = (
        f"At {sum(by_layer)} of {len(by_layer)} layers every step to a sparser trial (lower L0) costs "
        "reconstruction (higher MSE)"
    )
    return "; ".join(parts) + f". {verdict}" + (": the trials trace one trade-off." if all(by_layer) else ".")
