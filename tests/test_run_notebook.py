"""`kdsae run`: parameters checked against the notebook's `parameters` cell before anything executes;
a real papermill execution writes the notebook, its figures and run.json into a fresh folder."""

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from kdsae_core.book import param_rules
from kdsae_core.book import params as nbp
from kdsae_core.cli.main import main
from kdsae_core.common import paths
from kdsae_core.common.errors import InvalidParameter
from kdsae_core.toy.config import ToyConfig
from kdsae_core.toy.sweep import run_sweep

TOY = paths.NOTEBOOKS / "01_toy_validation.py"


@pytest.fixture()
def no_execution(monkeypatch):
    """Records any call of papermill.execute_notebook: the refusals below must never reach it."""
    import papermill

    calls = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: calls.append(a))
    return calls


def _refused(capsys, argv, out, calls, *fragments):
    assert main(["run", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err  # one line
    for f in fragments:
        assert f in err, err
    assert calls == [] and not out.exists()  # nothing executed, nothing written
    return err


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["-p", "alpha", "1.5"], ["alpha must lie strictly between 0 and 1 (got 1.5)"]),
        (["-p", "rerun", "true", "-p", "alpha", "[0.8, 1.5]"], ["alpha must lie strictly between 0 and 1"]),
        (["-p", "alfa", "0.9"], ["has no parameter 'alfa'"]),
        (["-p", "rerun", "yes"], ["parameter rerun", "must be a bool", "'yes'"]),
        (["-p", "live_check", "1"], ["parameter live_check", "must be a bool"]),
        (["-p", "rerun", "true", "-p", "steps", "0"], ["steps must be a whole number >= 1"]),
        (["-p", "rerun", "true", "-p", "n", "[10.5]"], ["n must be a whole number"]),
        (["-p", "rerun", "true", "-p", "d_teacher", "[30]"], ["must not exceed the feature count"]),
        (["-p", "rerun", "true", "-p", "importance", "zipf"], ["importance profile"]),
        (["-p", "rerun", "true", "-p", "lr", ".nan"], ["parameter lr", "finite"]),
        (["-p", "importance", "geometric:0.9"], ["importance applies only when the sweep is recomputed"]),
        (["-p", "source", "hub"], ["Experiment 1 has only local results"]),
        (["-p", "profile", "huge"], ["profile must be one of paper, quick"]),
        (["-p", "results_file", "/nonexistent/toy_results.json"], ["does not exist"]),
    ],
)
def test_bad_parameters_are_refused_before_anything_runs(capsys, tmp_path, no_execution, argv, fragments):
    err = _refused(capsys, ["01_toy_validation", *argv], tmp_path / "out", no_execution, *fragments)
    if "no parameter" in err or "must be" in err:
        assert "valid parameters: profile='paper' (str), rerun=False (bool)" in err  # the valid ones, listed


def test_out_inside_results_or_non_empty_is_refused(capsys, tmp_path, no_execution):
    _refused(capsys, ["01_toy_validation"], paths.RESULTS / "toy" / "x", no_execution, "inside results/")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert main(["run", "01_toy_validation", "--out", str(full)]) == 2
    assert "is not empty" in capsys.readouterr().err and (full / "keep.txt").read_text() == "mine"
    assert no_execution == []
    _refused(
        capsys,
        ["01_toy_validation", "-p", "out", "/tmp/x"],
        tmp_path / "o",
        no_execution,
        "set the output folder with --out",
    )
    _refused(capsys, ["no_such_chapter"], tmp_path / "o", no_execution, "no notebook 'no_such_chapter'")


def test_parameter_file_and_overrides(tmp_path, capsys, no_execution):
    f = tmp_path / "p.yaml"
    f.write_text("rerun: true\nalpha: [0.8, 0.9]\nsteps: 20\n")
    _refused(
        capsys,
        ["01_toy_validation", "-f", str(f), "-p", "alpha", "[2.0]"],
        tmp_path / "o",
        no_execution,
        "alpha must lie strictly between 0 and 1 (got 2.0)",
    )  # -p wins over -f
    f.write_text("- not a mapping\n")
    _refused(capsys, ["01_toy_validation", "-f", str(f)], tmp_path / "o", no_execution, "must be a mapping")


def test_read_parameters_defaults_and_descriptions():
    cell = textwrap.dedent("""\
        a = 3  # how many
        b = [1, 2]
        c = None  # anything; None: the default
        d = "x"  # a string # with a hash
        import os  # not a parameter
    """)
    ps = nbp.read_parameters(cell)
    assert [(p.name, p.default, p.kind) for p in ps] == [
        ("a", 3, "int"),
        ("b", [1, 2], "list"),
        ("c", None, "any"),
        ("d", "x", "str"),
    ]
    assert ps[0].help == "how many" and ps[1].help == "" and ps[3].help.startswith("a string")


def test_values_are_literals_never_code():
    assert nbp.parse_value("[10, 20]") == [10, 20] and nbp.parse_value("true") is True
    assert nbp.parse_value("yes") == "yes" and nbp.parse_value("zipf:1") == "zipf:1"
    assert nbp.parse_value("__import__('os').system('true')") == "__import__('os').system('true')"
    values = param_rules.check(TOY, {"rerun": True, "alpha": 0.9, "n": 10, "steps": 5})
    assert values["alpha"] == 0.9 and values["profile"] == "paper"
    cfg = param_rules.toy_config(values)  # a single number stands for a one-element list
    assert (cfg.alpha, cfg.n, cfg.steps, cfg.d_teacher) == ([0.9], [10], 5, ToyConfig.from_profile("paper").d_teacher)
    with pytest.raises(InvalidParameter, match="d_teacher"):
        param_rules.check(TOY, {"rerun": True, "n": [4]})  # the paper's teachers (up to 10) are wider than n=4


def test_list_shows_every_chapter_with_defaults_and_descriptions(capsys):
    assert main(["run", "--list"]) == 0
    out = capsys.readouterr().out
    for nb in paths.NOTEBOOKS.glob("*.py"):
        assert nb.stem in out
    assert "rerun" in out and "True: train the sweep now" in out and "'paper'" in out


def test_a_real_run_writes_notebook_figures_and_record(tmp_path, capsys):
    cfg = ToyConfig.from_profile(
        "quick", n=[6], d_teacher=[2, 3], alpha=[0.8, 0.95], seeds=2, steps=50, eval_samples=2048
    )
    run_sweep(cfg, out=tmp_path / "toy", progress=False)
    out = tmp_path / "run"
    code = main(
        [
            "run",
            str(TOY),
            "-p",
            "results_file",
            str(tmp_path / "toy" / "toy_results.json"),
            "-p",
            "live_check",
            "false",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "ok" and record["notebook"] == "notebooks/01_toy_validation.py"
    assert record["given"]["live_check"] is False and record["parameters"]["profile"] == "paper"
    assert record["parameters"]["out"] == str(out / "figures")
    if (paths.REPO_ROOT / ".git").exists():  # a checkout: the record names the commit it ran
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.REPO_ROOT, capture_output=True, text=True)
        assert record["git"]["commit"] == head.stdout.strip()
    else:
        assert record["git"]["commit"] is None
    for name in ("toy_loss_vs_width", "toy_accuracy_grid", "toy_measured_vs_predicted"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 10_000
    nb = nbformat.read(out / "01_toy_validation.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "live_check = False" in injected[0].source
    text = json.dumps([o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])])
    assert "Traceback" not in text and "NOT the paper" in text and str(tmp_path / "toy") in text
    assert sorted(p.name for p in out.iterdir()) == [
        "01_toy_validation.html",
        "01_toy_validation.ipynb",
        "figures",
        "run.json",
    ]
    page = (out / "01_toy_validation.html").read_text()  # issue 17: readable without Jupyter, figures included
    assert record["html"] == "01_toy_validation.html" and page.count("data:image/png;base64,") >= 3
    assert record["trained"] == []  # rendered from given results: no run folder trained


def test_a_failing_cell_fails_the_run_and_keeps_the_record(tmp_path, capsys):
    nb = tmp_path / "tiny.py"
    nb.write_text('# %% tags=["parameters"]\nx = 1  # a number\n\n# %%\nassert x == 1, f"x is {x}"\n')
    assert main(["run", str(nb), "-p", "x", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "tiny.py failed in cell" in err and "AssertionError: x is 2" in err
    assert json.loads((tmp_path / "o" / "run.json").read_text())["status"] == "failed"
    assert (tmp_path / "o" / "tiny.ipynb").exists()


def test_figure_folder_is_never_in_results(tmp_path):
    from kdsae_core.common.errors import RunFolderError

    for bad in ("results", "results/toy/figs", str(paths.RESULTS / "x")):
        with pytest.raises(RunFolderError, match="inside results/"):
            nbp.figure_folder(bad, "01_toy_validation")
    assert nbp.figure_folder("", "01_toy_validation") == paths.figures_out("01_toy_validation").resolve()
    assert nbp.figure_folder(str(tmp_path / "f"), "x") == (tmp_path / "f").resolve()


BUSY_NOTEBOOK = """# %% tags=["parameters"]
pid_file = ""  # where the kernel writes its process id

# %%
import os, time
open(pid_file + ".tmp", "w").write(str(os.getpid()))
os.replace(pid_file + ".tmp", pid_file)
while True:
    sum(range(100_000))  # busy, as a long sweep is
"""


def _alive(pid: int) -> bool:
    try:
        return b"ipykernel" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_run_leaves_no_kernel_and_says_stopped(tmp_path, sig):
    """Issue 21, item 1: `kdsae run` stopped from outside (kill, Ctrl-C) shuts its kernel down and records it."""
    nb, pid_file, out = tmp_path / "busy.py", tmp_path / "kernel.pid", tmp_path / "o"
    nb.write_text(BUSY_NOTEBOOK)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdsae_core.cli", "run", str(nb), "-p", "pid_file", str(pid_file), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        kernel = int(pid_file.read_text())
        assert _alive(kernel)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    for _ in range(30):  # the kernel's own exit can trail ours by a moment
        if not _alive(kernel):
            break
        time.sleep(0.1)
    assert not _alive(kernel), f"kernel {kernel} survived"
    record = json.loads((out / "run.json").read_text())
    assert proc.returncode == 130 and record["status"] == "stopped" and record["signal"] == sig.name, (record, err)
    assert f"busy.py was stopped ({sig.name})" in err.strip().splitlines()[-1]


@pytest.fixture()
def captured(monkeypatch):
    """The parameters papermill would have been given (nothing executes)."""
    import papermill

    calls = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda nb, out, parameters=None, **k: calls.append(parameters))
    return calls


def test_relative_paths_are_taken_from_the_current_folder_and_checked_first(tmp_path, monkeypatch, capsys, captured):
    """Issue 21, item 5: `-p run runs/x` means ./runs/x, as `--run runs/x` does for the other verbs; it reaches the
    notebook as an absolute path, and a path that does not exist or is no run folder is refused before a kernel."""
    import shutil

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(paths.REPO_ROOT / "tests" / "fixtures" / "exp2_run", elsewhere / "runs" / "x")
    (elsewhere / "notes").mkdir()
    monkeypatch.chdir(elsewhere)
    _refused(
        capsys,
        ["04_trial_c", "-p", "run", "runs/missing"],
        tmp_path / "o1",
        captured,
        f"run {elsewhere / 'runs' / 'missing'} does not exist",
        "relative path is taken from the folder you run",
    )
    _refused(capsys, ["04_trial_c", "-p", "run", "notes"], tmp_path / "o2", captured, "is not a run folder")
    _refused(
        capsys,
        ["01_toy_validation", "-p", "results_file", "toy_results.json"],
        tmp_path / "o3",
        captured,
        f"results_file {elsewhere / 'toy_results.json'} does not exist",
    )
    assert main(["run", "04_trial_c", "-p", "run", "runs/x", "--out", str(tmp_path / "o4")]) == 0
    assert captured[-1]["run"] == str(elsewhere / "runs" / "x")
    record = json.loads((tmp_path / "o4" / "run.json").read_text())
    assert record["parameters"]["run"] == str(elsewhere / "runs" / "x")
    assert main(["figures", "--run", "runs/x", "--out", str(tmp_path / "figs")]) == 0  # the same rule as --run
