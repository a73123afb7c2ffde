"""Experiment 2's settings, each declared once: its type, range and help text. `SAETrainConfig.validate`, the
options of `kdsae train`, the Experiment 2 chapters' parameter checks and `kdsae run --list` are all generated from
`SETTINGS`, so a setting cannot exist in one of them and not in another (tests/test_settings_declared.py).

Torch-free (`kdsae --help` lists the options). A trial's own knobs (lambda_a, l1_form_a, lambda_b, ..., the
paper's names: lambda, the L1 form, the start lambda, the controller's rate and error bound) default to None: the
paper's value (sae/model.py `paper_trials`). A run config leaves a knob out while it is None, so a run made with the
paper's trials records the same settings as before the knobs existed (old run folders load and resume unchanged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from kdsae_core.common.errors import InvalidParameter

L1_FORMS = ("sum", "mean")  # as sae/model.py (a test keeps them equal); here without torch
LAMBDA_BOUNDS = (1e-8, 1.0)  # as sae/model.py: the range trial C's controller keeps lambda in


@dataclass(frozen=True)
class Setting:
    """One setting: `kind` is int, float, str, choice, layers (0-based layer numbers) or trials; a number lies in
    [low, high] (`open_low`: > low). `notebook`: an Experiment 2 chapter takes it as a parameter when it retrains
    (the machine's settings, such as device, are the command line's only). A trial's knob names its `trial`, the
    `TrialSpec` field it sets (`attr`) and the chapter parameter it is there (`param`)."""

    name: str
    kind: str
    help: str
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    choices: tuple = ()
    notebook: bool = False
    flag: str = ""  # the kdsae train option; "" -> --name-with-dashes
    group: str = ""  # options of one group are mutually exclusive
    trial: str = ""
    attr: str = ""
    param: str = ""

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def parameter(self) -> str:
        """Its name in a chapter's parameters cell."""
        return self.param or self.name

    def valid_range(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind == "layers":
            return "0-based layer numbers"
        if self.kind == "trials":
            return "a list of trials: A, B, C or pilots like P7e-04"
        if self.kind == "str":
            return "a text"
        what = "a whole number" if self.kind == "int" else "a number"
        if self.low is not None and self.high is not None:
            return f"{what} in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            if self.kind == "float" and self.low == 0 and self.open_low:
                return "a positive number"
            return f"{what} {'>' if self.open_low else '>='} {self.low:g}"
        return what

    def check(self, value: Any, label: str | None = None) -> Any:
        """The value in its type, or InvalidParameter naming `label` (default: the option) and the valid range."""
        label = label or self.option
        bad = InvalidParameter(f"{label} must be {self.valid_range()} (got {value!r}).")
        if self.kind == "choice":
            if value not in self.choices:
                raise bad
            return value
        if self.kind == "str":
            if not isinstance(value, str) or not value:
                raise bad
            return value
        if self.kind in ("layers", "trials"):
            ok = (
                isinstance(value, list)
                and value
                and all(isinstance(v, str) if self.kind == "trials" else _layer_number(v) for v in value)
            )
            if not ok:
                raise bad
            return list(value)
        if isinstance(value, str):  # YAML reads 2e-4 (no dot) as text: a number written so is still one
            try:
                value = float(value) if self.kind == "float" else int(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if self.kind == "int" and not (isinstance(value, int) or float(value).is_integer()):
            raise bad
        number = int(value) if self.kind == "int" else float(value)
        if not math.isfinite(number) or self._outside(number):
            raise bad
        return number

    def _outside(self, v: float) -> bool:
        if self.low is not None and (v <= self.low if self.open_low else v < self.low):
            return True
        return self.high is not None and v > self.high


def _layer_number(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _s(name, kind, help, **kw) -> Setting:
    return Setting(name, kind, help, **kw)


SETTINGS: tuple[Setting, ...] = (
    _s("trials", "trials", "trials, comma-separated: A, B, C, pilots like P7e-04 (default A,B,C)", flag="--trial"),
    _s("model", "str", "hub id (EleutherAI/pythia-410m), local model folder, or `embedded`", notebook=True),
    _s("layers", "layers", "`all` (default) or 0-based layers, comma-separated", notebook=True),
    _s("d_sae", "int", "latents per SAE", low=1, group="size", notebook=True),
    _s(
        "expansion",
        "float",
        "latents per SAE as a multiple of d_model",
        low=0,
        open_low=True,
        group="size",
        notebook=True,
    ),
    _s("tokens", "int", "training tokens", low=1, notebook=True),
    _s("n_snapshots", "int", "evenly spaced snapshots (the last is `final`)", low=1, notebook=True),
    _s("batch_tokens", "int", "tokens per step (a multiple of --context)", low=1, notebook=True),
    _s("context", "int", "tokens per sequence", low=2),
    _s(
        "dataset",
        "str",
        "`embedded`, a Hugging Face dataset name, or a local .txt/.jsonl file or folder",
        notebook=True,
    ),
    _s("device", "str", "cpu or cuda"),
    _s("dtype", "choice", "the SAEs' compute type", choices=("fp32", "bf16")),
    _s("lr", "float", "Adam's learning rate", low=0, open_low=True, notebook=True),
    _s("grad_clip", "float", "gradient norm clip (0: none)", low=0),
    _s("seed", "int", "seed of the SAEs' initial weights", low=0, notebook=True),
    _s("measure_tokens", "int", "fresh tokens `kdsae measure` uses by default", low=1, notebook=True),
    _s("alive_window_tokens", "int", "a latent that fired in the last N training tokens is alive", low=1),
    _s("state_every_tokens", "int", "also save a resumable state every N tokens (0: at snapshots only)", low=0),
    _s(
        "sae_step",
        "choice",
        "the SAE step: auto (default; dense or sparse per batch by its density of active "
        "latents against the crossover measured on the CPU; dense on a GPU), dense or sparse. Recorded in "
        "config.json; the paths round differently, so a rerun is "
        "byte-identical only with the same --sae-step (the committed embedded run: dense)",
        choices=("auto", "dense", "sparse"),
    ),
    # ---- the trials' own knobs (None: the paper's value) ----
    _s(
        "lambda_a",
        "float",
        "trial A's lambda (the paper's: 3e-4)",
        low=0,
        open_low=True,
        trial="A",
        attr="l1_coeff",
        param="l1_lambda",
        notebook=True,
    ),
    _s(
        "l1_form_a",
        "choice",
        "trial A's L1 form (the paper's: mean)",
        choices=L1_FORMS,
        trial="A",
        attr="l1_form",
        param="l1_form",
        notebook=True,
    ),
    _s(
        "lambda_b",
        "float",
        "trial B's lambda (the paper's: 8e-5)",
        low=0,
        open_low=True,
        trial="B",
        attr="l1_coeff",
        param="l1_lambda",
        notebook=True,
    ),
    _s(
        "l1_form_b",
        "choice",
        "trial B's L1 form (the paper's: sum)",
        choices=L1_FORMS,
        trial="B",
        attr="l1_form",
        param="l1_form",
        notebook=True,
    ),
    _s(
        "lambda_c",
        "float",
        "trial C's start lambda (the paper's: 5e-4)",
        low=LAMBDA_BOUNDS[0],
        high=LAMBDA_BOUNDS[1],
        trial="C",
        attr="l1_coeff",
        param="start_lambda",
        notebook=True,
    ),
    _s(
        "target_l0",
        "float",
        "trial C's target mean L0 (default 150)",
        low=0,
        open_low=True,
        notebook=True,
        trial="C",
        attr="target_l0",
    ),
    _s(
        "controller_rate",
        "float",
        "trial C's controller rate: lambda <- lambda exp(rate e) (the paper's: 0.01)",
        low=0,
        high=1,
        open_low=True,
        trial="C",
        attr="rate",
        notebook=True,
    ),
    _s(
        "error_bound",
        "float",
        "trial C's bound on the controller's relative error e (this companion's: 1)",
        low=0,
        open_low=True,
        trial="C",
        attr="error_bound",
        notebook=True,
    ),
)
BY_NAME = {s.name: s for s in SETTINGS}
# The knobs of one trial (target_l0 is a field of its own since before the knobs: always recorded).
KNOBS = tuple(s for s in SETTINGS if s.trial and s.name != "target_l0")


def notebook_settings(trial: str | None) -> dict[str, Setting]:
    """{chapter parameter: setting} of an Experiment 2 chapter that retrains `trial` (None: the comparison
    chapter, which takes the settings shared by all trials)."""
    return {s.parameter: s for s in SETTINGS if s.notebook and (not s.trial or s.trial == trial)}
