"""The claims ledger: each quantitative claim of the paper, the check that tests it, and a verdict.

Verdicts: `reproduced`, `not reproduced`, `not testable here` (with why), `error` (the check itself
failed). A check whose success path needs the hub or a GPU is never `reproduced` without them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import theory
from .errors import KdsaeError
from .paths import reference_dir

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE, ERROR = "reproduced", "not reproduced", "not testable here", "error"

# Published per-layer values (co-author's repository README; DESIGN.md section 2): facts, committed.
PUBLISHED_LAYERS = {
    8: {"F_alive": 31_006, "L0": 234.9, "alpha": 0.9924, "g_alpha": 27.04, "d_star_S": 1_147},
    12: {"F_alive": 28_665, "L0": 218.3, "alpha": 0.99238, "g_alpha": 26.92, "d_star_S": 1_064.7},
    16: {"F_alive": 29_169, "L0": 249.0, "alpha": 0.99146, "g_alpha": 24.60, "d_star_S": 1_185.9},
}
PAPER_ACCURACY = 0.93


@dataclass
class Claim:
    id: str
    text: str
    source: str
    check: str
    tolerance: str
    measured: str = ""
    verdict: str = NOT_TESTABLE
    why: str = ""


class Ledger:
    """Runs each check into its claim; a check that raises is recorded as `error`, never hidden."""

    def __init__(self):
        self.claims: list[Claim] = []

    def add(self, claim: Claim, check: Callable[[], tuple[str, str, str]]) -> None:
        try:
            claim.measured, claim.verdict, claim.why = check()
        except KdsaeError as e:  # missing inputs: a user-fixable condition, not a failed check
            claim.measured, claim.verdict, claim.why = "", NOT_TESTABLE, str(e)
        except Exception as e:  # noqa: BLE001 - the ledger reports every failure of a check
            claim.measured, claim.verdict, claim.why = "", ERROR, f"{type(e).__name__}: {e}"
        self.claims.append(claim)

    def as_dicts(self) -> list[dict]:
        return [asdict(c) for c in self.claims]

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in (REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE, ERROR)}
        for c in self.claims:
            out[c.verdict] += 1
        return out


def _verdict(ok: bool) -> str:
    return REPRODUCED if ok else NOT_REPRODUCED


# ---- Experiment 1 ----------------------------------------------------------------------------------------
def toy_claims(ledger: Ledger, results: dict) -> None:
    settings = results.get("settings", {})
    on_paper_grid = bool(settings.get("matches_paper_grid"))
    grid = (f"{len(results['configs'])} configurations, {settings.get('seeds')} seeds, "
            f"{settings.get('steps')} steps, importance {settings.get('importance')}, mode {settings.get('mode')}")

    def accuracy():
        med = results["median_accuracy_by_alpha"]
        parts = [f"alpha {a}: rel {_pct(med['rel'][a])}, norm {_pct(med['norm'][a])}" for a in med["norm"]]
        rel = [v for v in med["rel"].values() if v != "no pairs"]
        no_pairs = [a for a, v in med["rel"].items() if v == "no pairs"]
        ok = bool(rel) and all(v > PAPER_ACCURACY for v in rel)
        measured = "; ".join(parts)
        note = f" Levels with no pair below d*_S: {', '.join(no_pairs)}." if no_pairs else ""
        if not on_paper_grid:
            return measured, NOT_TESTABLE, (f"these results are not the paper grid ({grid}); run "
                                            f"`kdsae verify --profile paper` for the 48-configuration verdict. "
                                            f"On this grid the claim {'holds' if ok else 'does not hold'}.{note}")
        return measured, _verdict(ok), f"accuracy_rel (DESIGN.md section 2) on the paper grid ({grid}).{note}"

    ledger.add(Claim("toy-accuracy", "Median prediction accuracy above 93% at all sparsity levels (48 configurations).",
                     "paper, Experiment 1", "median over (config, width) pairs of accuracy_rel per alpha",
                     "> 0.93 at every alpha with pairs below d*_S"), accuracy)

    def monotone():
        bad, total = 0, 0
        by_key = {}
        for c in results["configs"]:
            for w, f in zip(c["widths"], c["measured_floor_median"]):
                by_key.setdefault((c["n"], c["d_teacher"], w), []).append((c["alpha"], f / c["L_inf"], f))
        for rows in by_key.values():
            rows.sort()
            for (a0, r0, f0), (a1, r1, f1) in zip(rows, rows[1:]):
                total += 1
                bad += f1 > f0 * (1 + 1e-9)
        rel_bad = sum(1 for rows in by_key.values() for x, y in zip(rows, rows[1:]) if y[1] > x[1] + 0.02)
        return (f"{total - bad}/{total} adjacent sparsity pairs have a lower absolute floor at higher alpha; "
                f"{total - rel_bad}/{total} also as a fraction of L_inf (tolerance 0.02)", _verdict(bad == 0),
                "absolute floors, as the claim states; the fraction of L_inf is the stricter reading" +
                ("" if on_paper_grid else f" (grid: {grid})"))

    ledger.add(Claim("toy-sparsity-order", "Higher sparsity yields lower floors at every width.",
                     "paper, Experiment 1", "measured floor (seed median) at each (n, d_T, width) across alpha",
                     "every adjacent pair ordered"), monotone)

    def knee():
        diffs = [c["knee_width"] - math.ceil(c["d_star_S"]) for c in results["configs"]
                 if c["d_star_S"] <= max(c["widths"])]
        if not diffs:
            return "no configuration has d*_S inside its width range", NOT_TESTABLE, "widen the widths"
        close = sum(abs(d) <= 1 for d in diffs)
        med = float(np.median(np.abs(diffs)))
        return (f"{close}/{len(diffs)} configurations with the knee within 1 of ceil(d*_S); median |knee - ceil(d*_S)| "
                f"= {med:g}", _verdict(med <= 1), "knee: first width within 2% of L_inf of the best measured floor"
                + ("" if on_paper_grid else f" (grid: {grid})"))

    ledger.add(Claim("toy-knee", "The predicted d*_S is where the loss bottoms out.", "paper, Experiment 1",
                     "measured knee width vs ceil(d*_S), configurations whose d*_S lies in the width range",
                     "median |difference| <= 1 width"), knee)


def _pct(v) -> str:
    return v if isinstance(v, str) else f"{100 * v:.1f}%"


# ---- Pythia-410M reference measurements -------------------------------------------------------------------
def pythia_claims(ledger: Ledger) -> None:
    ref = reference_dir()

    def check(fn):
        def run():
            m = _reference_measurement(ref, 12)
            measured, ok = fn(m)
            return measured, _verdict(ok), "recomputed from the authors' released layer-12 measurements"
        return run

    src = "paper, Experiment 2 (released layer-12 measurements)"
    ledger.add(Claim("pythia-l12-F", "Pythia-410M layer 12: F ~ 28,700 alive latents.", src,
                     "F_alive of the released measurement file", "within 0.5%"),
               check(lambda m: (f"F = {m.F_alive:,}", abs(m.F_alive / 28_700 - 1) <= 0.005)))
    ledger.add(Claim("pythia-l12-alpha", "Pythia-410M layer 12: alpha ~ 0.992.", src,
                     "alpha = 1 - L0 / F from the released file", "|alpha - 0.992| <= 0.0005"),
               check(lambda m: (f"alpha = {m.alpha:.5f} (L0 = {m.avg_active:g})", abs(m.alpha - 0.992) <= 5e-4)))
    ledger.add(Claim("pythia-l12-dstar", "Pythia-410M layer 12: d*_S ~ 1,065.", src,
                     "d*_S = F / g(alpha) with the unrounded alpha", "within 0.1%"),
               check(lambda m: (f"d*_S = {m.d_star_S:,.1f} (g = {m.g_alpha:.2f})", abs(m.d_star_S / 1_065 - 1) <= 1e-3)))

    def loss128(m):
        p = m.predictions([128])[128]
        frac = p["features_dropped"] / m.F_alive
        return f"{p['features_dropped']:,} of {m.F_alive:,} latents dropped ({100 * frac:.1f}%)", abs(frac - 0.88) <= 0.005

    ledger.add(Claim("pythia-l12-loss128", "At d_S = 128 a student loses 88% of layer 12's features.", src,
                     "1 - floor(128 g(alpha)) / F", "within 0.5 percentage points"), check(loss128))

    def wide():
        values = {}
        for layer in (8, 12, 16):
            try:
                values[layer] = _reference_measurement(ref, layer).d_star_S
            except KdsaeError:
                pub = PUBLISHED_LAYERS[layer]
                values[layer] = theory.critical_width(pub["F_alive"], theory.alpha_from_sae(pub["F_alive"], pub["L0"]))
        measured = ", ".join(f"layer {k}: {v:,.1f}" for k, v in values.items())
        return measured, _verdict(all(v > 1024 for v in values.values())), (
            "layers 12 and 16 from the released files; layer 8 from the published F and L0 (no file released)")

    ledger.add(Claim("pythia-dstar-above-dmodel", "d*_S > 1024 (the teacher's width) at layers 8, 12 and 16.",
                     "paper, Experiment 2", "d*_S per layer", "strictly above 1024"), wide)


def _reference_measurement(ref: Path | None, layer: int) -> theory.Measurement:
    from .errors import MissingData
    if ref is None or not (ref / f"measurements_layer{layer}.json").exists():
        raise MissingData(f"the released layer-{layer} measurements are not here: set KDSAE_REFERENCE_DIR "
                          "or run `kdsae fetch-reference`")
    return theory.load_measurement(ref / f"measurements_layer{layer}.json")


# ---- Experiment 2 at paper scale and on the embedded default ----------------------------------------------
def paper_scale_claims(ledger: Ledger, source: str, hub_measurements: Callable[[str], list] | None) -> None:
    """Trial A's L0 and trial C's target/dead counts need the published checkpoints (`--source hub`)."""

    def needs_hub(trial: str, fn):
        def run():
            if source != "hub":
                return "", NOT_TESTABLE, ("paper-scale checkpoints (Pythia-410M, 32,768 latents, 300M tokens); "
                                          "run `kdsae verify --source hub` with the hub reachable")
            return fn(hub_measurements(trial))
        return run

    def trial_a(ms):
        l0 = float(np.mean([m["avg_active"] for m in ms]))
        return f"mean L0 over {len(ms)} layers = {l0:,.0f}", _verdict(abs(l0 / 6_184 - 1) <= 0.05), "published checkpoints"

    def trial_c(ms):
        l0 = float(np.mean([m["avg_active"] for m in ms]))
        dead = float(np.mean([m["dead"] for m in ms]))
        ok = abs(l0 / 150 - 1) <= 0.1 and 5_000 <= dead <= 9_000
        d_sae = ms[0].get("d_sae", 32_768)
        return f"mean L0 = {l0:,.0f}, mean dead = {dead:,.0f} of {d_sae:,}", _verdict(ok), "published checkpoints"

    ledger.add(Claim("exp2-trialA-L0", "Trial A (lambda 3e-4) averages L0 ~ 6,184.", "lab write-up, Experiment 2",
                     "mean L0 over the 24 layers' final checkpoints", "within 5%"), needs_hub("A", trial_a))
    ledger.add(Claim("exp2-trialC-target", "Trial C reaches L0 ~ 150 with ~7k of 32,768 latents dead per layer.",
                     "lab write-up, Experiment 2", "mean L0 and dead count over the final checkpoints",
                     "L0 within 10%; dead between 5k and 9k"), needs_hub("C", trial_c))


def embedded_claims(ledger: Ledger, run: Path | None) -> None:
    """The same mechanisms on the embedded default (MiniLM): does trial C's controller reach its target?"""

    def controller():
        from .errors import MissingData
        if run is None or not Path(run).is_dir():
            raise MissingData("no embedded-default run folder (results/exp2/embedded) to check")
        import json
        cfg = json.loads((Path(run) / "config.json").read_text())
        target = _target_l0(cfg)
        files = sorted((Path(run) / "measurements" / "C").glob("layer*_final.json"))
        if not files:
            raise MissingData(f"{run} has no trial C measurements")
        l0 = [json.loads(f.read_text())["avg_active"] for f in files]
        worst = max(abs(v / target - 1) for v in l0)
        return (f"L0 per layer {', '.join(f'{v:.0f}' for v in l0)} (target {target:g})", _verdict(worst <= 0.1),
                f"{cfg.get('model', '?')}, d_sae {cfg.get('d_sae', '?')}, {cfg.get('tokens', '?')} tokens")

    ledger.add(Claim("embedded-trialC-controller", "The adaptive controller drives every layer's L0 to its target.",
                     "this companion (DESIGN.md section 4)", "final-snapshot L0 of every trial-C layer, embedded default",
                     "within 10% of the target"), controller)


def _target_l0(cfg: dict) -> float:
    trials = cfg.get("trials", {})
    c = trials.get("C", {}) if isinstance(trials, dict) else {}
    for key in ("target_l0", "target_L0", "l0_target", "target"):
        if key in c:
            return float(c[key])
        if isinstance(c.get("controller"), dict) and key in c["controller"]:
            return float(c["controller"][key])
    return 150.0


# ---- the whole ledger -------------------------------------------------------------------------------------
def build_ledger(toy_results: dict, source: str = "local", embedded_run: Path | None = None,
                 hub_measurements: Callable[[str], list] | None = None) -> Ledger:
    ledger = Ledger()
    toy_claims(ledger, toy_results)
    pythia_claims(ledger)
    paper_scale_claims(ledger, source, hub_measurements)
    embedded_claims(ledger, embedded_run)
    return ledger


def render_text(ledger: Ledger) -> str:
    lines = []
    for c in ledger.claims:
        lines.append(f"[{c.verdict.upper()}] {c.id}: {c.text}")
        if c.measured:
            lines.append(f"    measured: {c.measured}")
        lines.append(f"    check: {c.check}; tolerance: {c.tolerance}")
        if c.why:
            lines.append(f"    note: {c.why}")
    counts = ledger.counts()
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items()))
    return "\n".join(lines)


COLOURS = {REPRODUCED: "#c8e6c9", NOT_REPRODUCED: "#ffcdd2", NOT_TESTABLE: "#e0e0e0", ERROR: "#ffab91"}


def render_html(ledger: Ledger) -> str:
    import html
    rows = "".join(
        f"<tr style='background:{COLOURS[c.verdict]}'><td><b>{html.escape(c.verdict)}</b></td>"
        f"<td>{html.escape(c.text)}<br><small>{html.escape(c.source)}</small></td>"
        f"<td>{html.escape(c.check)}<br><small>tolerance: {html.escape(c.tolerance)}</small></td>"
        f"<td>{html.escape(c.measured)}</td><td><small>{html.escape(c.why)}</small></td></tr>"
        for c in ledger.claims)
    return ("<table class='claims-ledger'><thead><tr><th>verdict</th><th>claim</th><th>check</th>"
            f"<th>measured</th><th>why</th></tr></thead><tbody>{rows}</tbody></table>")
