"""The claims ledger's data model: a claim, the check that tests it, its inputs and a verdict, and the ledger that
runs each check into its claim.

Verdicts: `reproduced` and `not reproduced` for checks that run an experiment here; `consistent with released
data` for arithmetic on the authors' own released numbers (it can catch a slip, never confirm a finding);
`calibrated reading holds` / `calibrated reading fails` for a reading that needs constants fitted to our data;
`not testable here` (saying what experiment it needs); `error` (the check itself failed). A check whose success
path needs the hub or a GPU is never `reproduced` without them. Every quantity is defined on the book's methods
page (book/methods.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from kdsae_core.common.errors import KdsaeError

REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE, ERROR = "reproduced", "not reproduced", "not testable here", "error"
CONSISTENT, INCONSISTENT = "consistent with released data", "inconsistent with released data"
CALIBRATED_HOLDS, CALIBRATED_FAILS = "calibrated reading holds", "calibrated reading fails"
VERDICTS = (
    REPRODUCED,
    NOT_REPRODUCED,
    CONSISTENT,
    INCONSISTENT,
    CALIBRATED_HOLDS,
    CALIBRATED_FAILS,
    NOT_TESTABLE,
    ERROR,
)

ABSTRACT = "the paper's abstract (arXiv 2604.04037)"
THEORY = "the theory's own prediction (theory page); the paper's Experiment 1 text is not available to us"


@dataclass
class Claim:
    id: str
    text: str
    source: str
    check: str
    tolerance: str
    inputs: str = ""
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
        out = {v: 0 for v in VERDICTS}
        for c in self.claims:
            out[c.verdict] += 1
        return out


def reproduced_if(ok: bool) -> str:
    return REPRODUCED if ok else NOT_REPRODUCED


def consistent_if(ok: bool) -> str:
    return CONSISTENT if ok else INCONSISTENT


def percent(v) -> str:
    """A share as a percentage; `no pairs` for None, and text as it is."""
    return "no pairs" if v is None else v if isinstance(v, str) else f"{100 * v:.1f}%"
