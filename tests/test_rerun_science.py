"""Issue 17: every Experiment 2 chapter re-executes with the science's own parameters.

One declaration per training setting (train/settings.py) makes `kdsae train`'s options, SAETrainConfig's checks, the
chapters' parameter checks and `kdsae run --list`; bad values are refused before anything runs; `kdsae run` of a
chapter with changed science parameters trains, measures and renders into its fresh folder, and the run's config
records those values.
"""

import dataclasses
import json
import re
from pathlib import Path

import nbformat
import pytest

from kdsae_core.book import param_rules
from kdsae_core.book import params as nbp
from kdsae_core.cli.main import build_parser, main
from kdsae_core.common import paths
from kdsae_core.common.errors import InvalidParameter
from kdsae_core.runs import layout
from kdsae_core.sae import model as sae_model
from kdsae_core.sae import sparse as sae_sparse
from kdsae_core.train import settings as decl
from kdsae_core.train.config import SAETrainConfig
from kdsae_core.train.profiles import recorded_settings

EXP2 = {"02_trial_a": "A", "03_trial_b": "B", "04_trial_c": "C", "05_trials_compared": None}
COMMITTED = paths.RESULTS / "exp2" / "embedded"
CLI_ONLY = {"-h", "--help", "--profile", "--out", "--resume", "--force", "--measure"}  # how to run, not what to train


def train_options() -> dict:
    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    parser = sub.choices["train"]
    return {opt: a for a in parser._actions for opt in a.option_strings}


# ---- one declaration ---------------------------------------------------------------------------------------------
def test_every_declared_setting_is_a_train_option_and_every_option_is_declared():
    options = train_options()
    for s in decl.SETTINGS:
        a = options.get(s.option)
        assert a is not None, f"{s.name} is declared but `kdsae train` has no {s.option}"
        assert a.dest == s.name and s.help.replace("%", "%%") in a.help
        assert (list(a.choices) if a.choices else []) == list(s.choices)
    declared = {s.option for s in decl.SETTINGS}
    assert set(options) - CLI_ONLY == declared, "an option of kdsae train that train/settings.py does not declare"


def test_every_config_field_is_declared_and_every_setting_is_a_config_field():
    fields = {f.name for f in dataclasses.fields(SAETrainConfig)} - {"profile"}
    assert fields == set(decl.BY_NAME)


@pytest.mark.parametrize("chapter", EXP2)
def test_every_science_setting_is_a_chapter_parameter_and_checked_there(chapter):
    path = paths.NOTEBOOKS / f"{chapter}.py"
    params = {p.name for p in nbp.notebook_parameters(path)}
    wanted = decl.notebook_settings(EXP2[chapter])
    missing = set(wanted) - params
    assert not missing, f"{chapter} lacks the declared science parameters {missing}"
    shown = {"trial", "trials", "source", "run", "rerun", "out", "pilots", "pilot_lambdas"}  # what is drawn, and how
    assert params - set(wanted) - shown == set()
    for name, s in wanted.items():  # the chapter's check refuses each one's out-of-range value, naming it
        bad = {"int": -1, "float": -1.0, "choice": "nonsense", "str": 3, "layers": [-1]}[s.kind]
        with pytest.raises(InvalidParameter, match=rf"\b{name}\b"):
            param_rules.check(path, {"rerun": True, name: bad})


def test_the_declaration_agrees_with_the_trials():
    assert decl.L1_FORMS == sae_model.L1_FORMS and decl.LAMBDA_BOUNDS == sae_model.LAMBDA_BOUNDS
    assert decl.BY_NAME["sae_step"].choices == tuple(sae_sparse.PATHS)
    paper = sae_model.paper_trials()
    for s in decl.KNOBS:  # the help text names the paper's value the None default stands for
        value = getattr(paper[s.trial], s.attr)
        said = re.search(r"(?:paper's|companion's): ([^)]+)\)", s.help).group(1)
        assert said == value if isinstance(value, str) else float(said) == value, s.name


def test_default_knobs_leave_the_recorded_settings_unchanged():
    committed = json.loads(layout.run_config(COMMITTED).read_text())["settings"]
    cfg = SAETrainConfig.from_json(committed)
    assert cfg.settings() == recorded_settings(committed)  # the committed run loads and resumes unchanged
    assert not {s.name for s in decl.KNOBS} & set(SAETrainConfig.from_profile("embedded").settings())
    assert cfg.trial_specs() == sae_model.paper_trials(cfg.target_l0)
    changed = SAETrainConfig.like(committed, lambda_b=2e-4, target_l0=50.0)
    assert changed.settings()["lambda_b"] == 2e-4 and changed.trial_specs()["B"].l1_coeff == 2e-4
    assert [d[0] for d in changed.differences(cfg)] == ["lambda_b", "target_l0"]


def test_list_shows_the_declared_ranges(capsys):
    assert main(["run", "--list", "04_trial_c"]) == 0
    out = capsys.readouterr().out
    assert "target_l0" in out and decl.BY_NAME["target_l0"].help in out and "a number in [1e-08, 1]" in out


# ---- bad values, refused before anything runs -------------------------------------------------------------------
@pytest.fixture()
def no_execution(monkeypatch):
    import papermill

    calls = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: calls.append(a))
    return calls


@pytest.mark.parametrize(
    "chapter, argv, fragment",
    [
        ("04_trial_c", ["-p", "rerun", "true", "-p", "target_lo", "50"], "has no parameter 'target_lo'"),
        (
            "04_trial_c",
            ["-p", "rerun", "true", "-p", "tokens", "many"],
            "tokens must be a whole number >= 1 (got 'many')",
        ),
        ("03_trial_b", ["-p", "rerun", "true", "-p", "l1_lambda", "0"], "l1_lambda must be a positive number (got 0)"),
        ("02_trial_a", ["-p", "rerun", "true", "-p", "l1_lambda", "-0.0003"], "l1_lambda must be a positive number"),
        (
            "04_trial_c",
            ["-p", "rerun", "true", "-p", "target_l0", "5000"],
            "target_l0 must be a number in (0, d_sae = 2048]",
        ),
        (
            "04_trial_c",
            ["-p", "rerun", "true", "-p", "layers", "[0, 9]"],
            "layers must be 0-based layer numbers of the model, 0-5",
        ),
        (
            "04_trial_c",
            ["-p", "rerun", "true", "-p", "tokens", "100"],
            "tokens (100) is fewer than one batch (128 tokens)",
        ),
        (
            "04_trial_c",
            ["-p", "rerun", "true", "-p", "start_lambda", "2"],
            "start_lambda must be a number in [1e-08, 1]",
        ),
        ("04_trial_c", ["-p", "target_l0", "50"], "target_l0 applies only when the SAEs are retrained"),
        ("03_trial_b", ["-p", "rerun", "true", "-p", "l1_form", "max"], "l1_form must be one of sum, mean"),
        (
            "05_trials_compared",
            ["-p", "rerun", "true", "-p", "pilots", "true", "-p", "pilot_lambdas", "[0]"],
            "pilot_lambdas must be a list of distinct positive numbers",
        ),
        (
            "05_trials_compared",
            ["-p", "rerun", "true", "-p", "source", "hub"],
            "rerun retrains from a local run folder",
        ),
    ],
)
def test_bad_science_values_are_refused_with_nothing_written(capsys, tmp_path, no_execution, chapter, argv, fragment):
    out = tmp_path / "out"
    assert main(["run", chapter, *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and fragment in err, err
    assert no_execution == [] and not out.exists()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--lambda-b", "0"], "--lambda-b must be a positive number (got 0.0)"),
        (["--trial", "A", "--lambda-b", "1e-4"], "--lambda-b applies only to trial B"),
        (["--d-sae", "64", "--target-l0", "100"], "--target-l0 must be a number in (0, d_sae = 64]"),
        (["--controller-rate", "2"], "--controller-rate must be a number in (0, 1]"),
    ],
)
def test_bad_knobs_of_kdsae_train_are_refused_with_nothing_written(capsys, tmp_path, argv, fragment):
    out = tmp_path / "run"
    assert main(["train", "--tokens", "1280", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and fragment in err, err
    assert not out.exists()


# ---- re-executed chapters -----------------------------------------------------------------------------------------
TINY = [
    "-p",
    "rerun",
    "true",
    "-p",
    "layers",
    "[0]",
    "-p",
    "tokens",
    "1024",
    "-p",
    "d_sae",
    "128",
    "-p",
    "n_snapshots",
    "1",
    "-p",
    "measure_tokens",
    "1024",
]


def rerun(chapter: str, out: Path, *argv: str) -> tuple[dict, str]:
    """(run.json, the page's header box) of `kdsae run CHAPTER` at tiny size."""
    assert main(["run", chapter, *TINY, *argv, "--out", str(out)]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "ok" and (out / record["html"]).stat().st_size > 10_000
    assert (out / f"{chapter}.html").read_text().count("<img") >= 1  # the figures, readable without Jupyter
    nb = nbformat.read(out / f"{chapter}.ipynb", as_version=4)
    texts = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("train 1 SAEs" in t or "train 3 SAEs" in t or "SAEs:" in t for t in texts), "no progress in the output"
    assert not any("IProgress" in t for t in texts)
    md = [
        o["data"]["text/markdown"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "text/markdown" in o.get("data", {})
    ]
    header = next(m for m in md if "What this page shows" in m)
    return record, header


def trained_config(out: Path, record: dict, which: str = "figures/rerun") -> dict:
    assert which in record["trained"]
    folder = out / which
    assert list((folder / "measurements").rglob("*.json")), f"{folder} has no measurements"
    return json.loads(layout.run_config(folder).read_text())


@pytest.mark.slow
def test_trial_c_reexecuted_at_another_target_l0(tmp_path):
    record, header = rerun("04_trial_c", tmp_path / "c", "-p", "target_l0", "40", "-p", "controller_rate", "0.05")
    cfg = trained_config(tmp_path / "c", record)
    assert cfg["settings"]["target_l0"] == 40.0 and cfg["settings"]["controller_rate"] == 0.05
    assert cfg["trials"]["C"]["target_l0"] == 40.0 and cfg["trials"]["C"]["rate"] == 0.05
    assert list(cfg["trials"]) == ["C"] and cfg["settings"]["layers"] == [0]
    assert "`target_l0` 40.0 (committed: 150.0)" in header and "`controller_rate` 0.05 (committed: 0.01)" in header


@pytest.mark.slow
def test_trial_b_reexecuted_at_another_lambda(tmp_path):
    record, header = rerun("03_trial_b", tmp_path / "b", "-p", "l1_lambda", "2e-4", "-p", "seed", "3")
    cfg = trained_config(tmp_path / "b", record)
    assert cfg["settings"]["lambda_b"] == 2e-4 and cfg["trials"]["B"]["l1_coeff"] == 2e-4 and cfg["seed"] == 3
    assert "`l1_lambda` 0.0002 (committed: 8e-05)" in header


@pytest.mark.slow
def test_trial_a_reexecuted_in_the_sum_form(tmp_path):
    record, header = rerun("02_trial_a", tmp_path / "a", "-p", "l1_form", "sum", "-p", "l1_lambda", "1e-4")
    cfg = trained_config(tmp_path / "a", record)
    assert cfg["trials"]["A"]["l1_form"] == "sum" and cfg["trials"]["A"]["l1_coeff"] == 1e-4
    assert "`l1_form` 'sum' (committed: 'mean')" in header


@pytest.mark.slow
def test_the_comparison_reexecuted_with_other_pilots(tmp_path):
    record, header = rerun(
        "05_trials_compared",
        tmp_path / "p",
        "-p",
        "pilots",
        "true",
        "-p",
        "pilot_lambdas",
        "[1e-3]",
        "-p",
        "lr",
        "1e-3",
    )
    cfg = trained_config(tmp_path / "p", record)
    assert cfg["settings"]["lr"] == 1e-3 and list(cfg["trials"]) == ["A", "B", "C"]
    pilots = trained_config(tmp_path / "p", record, "figures/pilots")
    assert list(pilots["trials"]) == ["P1e-03"] and pilots["settings"]["lr"] == 1e-3
    assert "`lr` 0.001 (committed: 0.0003)" in header
