"""The Experiment 2 chapter notebooks and the gallery, executed (papermill) against the synthetic fixture run.

The book renders them from the committed embedded run; here they run on the TEST FIXTURE so they are tested
before (and independently of) that run. Figures go to a temporary folder, never into results/.
"""

from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import pytest

from kdsae_core.book import chapters
from kdsae_core.common import paths
from kdsae_core.common.errors import KdsaeError, MissingData, RunFolderError

FIXTURE = Path(__file__).parent / "fixtures" / "exp2_run"
NOTEBOOKS = {"02_trial_a": 5, "03_trial_b": 7, "04_trial_c": 3, "05_trials_compared": 1}
COMMON = {"source", "layers", "run", "rerun", "out"}

pytestmark = pytest.mark.slow


def execute(path: Path, dest: Path, **params) -> nbformat.NotebookNode:
    nb = jupytext.read(path)
    return pm.execute_notebook(
        nb, str(dest), parameters=params, cwd=str(paths.REPO_ROOT), progress_bar=False, kernel_name="python3"
    )


def outputs(nb, kind):
    return [o["data"][kind] for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind in o.get("data", {})]


@pytest.mark.parametrize("name", list(NOTEBOOKS))
def test_chapter_notebook_runs_on_a_run_folder(name, tmp_path):
    path = paths.NOTEBOOKS / f"{name}.py"
    params = set(pm.inspect_notebook(str(_ipynb(path, tmp_path))))
    assert COMMON <= params and ("pilots" in params if name.startswith("05") else "trial" in params)
    nb = execute(path, tmp_path / "out.ipynb", run=str(FIXTURE), out=str(tmp_path / "figs"))
    pngs = outputs(nb, "image/png")
    assert len(pngs) == NOTEBOOKS[name]
    text = "\n".join(outputs(nb, "text/markdown"))
    assert "synthetic-test-fixture" in text and "TEST FIXTURE" in text and "not Pythia-410M" in text
    saved = sorted(p.suffix for p in (tmp_path / "figs").iterdir())
    assert saved.count(".png") == NOTEBOOKS[name] and saved.count(".csv") == NOTEBOOKS[name]


def _ipynb(path: Path, tmp: Path) -> Path:
    out = tmp / f"{path.stem}.ipynb"
    nbformat.write(jupytext.read(path), out)
    return out


def test_pilots_add_the_runs_pilot_trials(tmp_path):
    nb = execute(
        paths.NOTEBOOKS / "05_trials_compared.py",
        tmp_path / "o.ipynb",
        run=str(FIXTURE),
        pilots=True,
        out=str(tmp_path / "figs"),
    )
    text = "\n".join(outputs(nb, "text/markdown"))
    assert "trial P7e-04" in text
    import pandas as pd

    assert set(pd.read_csv(tmp_path / "figs" / "frontier.csv")["trial"]) == {"A", "B", "C", "P7e-04"}


def test_reference_notebook_with_and_without_the_data(tmp_path):
    from .reference import require_reference

    ref = require_reference()
    nb = execute(
        paths.NOTEBOOKS / "06_pythia_reference.py",
        tmp_path / "a.ipynb",
        reference_dir=str(ref),
        out=str(tmp_path / "figs"),
    )
    assert len(outputs(nb, "image/png")) == 3 and len(outputs(nb, "text/html")) == 2
    nb = execute(
        paths.NOTEBOOKS / "06_pythia_reference.py",
        tmp_path / "b.ipynb",
        reference_dir=str(tmp_path / "absent"),
        out=str(tmp_path / "figs2"),
    )
    assert outputs(nb, "image/png") == [] and len(outputs(nb, "text/html")) == 1  # the published table
    assert any("kdsae fetch-reference" in t for t in outputs(nb, "text/markdown"))


def test_gallery_shows_every_figure_with_links_and_data(tmp_path):
    nb = jupytext.read(paths.REPO_ROOT / "book" / "gallery.md")
    nb = pm.execute_notebook(
        nb,
        str(tmp_path / "g.ipynb"),
        parameters={"run": str(FIXTURE)},
        cwd=str(paths.REPO_ROOT / "book"),
        progress_bar=False,
        kernel_name="python3",
    )
    html = outputs(nb, "text/html")[0]
    toy = paths.committed_toy_results() is not None  # Experiment 1's three figures, as the gallery finds them
    assert html.count('class="kd-card"') == 16 + (3 if paths.reference_dir() else 0) + (3 if toy else 0)
    assert html.count("data:image/png;base64,") == html.count('class="kd-card"')
    assert html.count('download="') == html.count('class="kd-card"')
    assert "../notebooks/03_trial_b.html#variant-1-paper-heatmap" in html and "used in the paper" in html


def test_figures_never_go_into_results():
    with pytest.raises(RunFolderError, match="inside results/"):
        chapters.open_chapter("02_trial_a", trial="A", run=str(FIXTURE), out=str(paths.RESULTS / "figs"))


def test_bad_parameters_say_what_to_do(monkeypatch, tmp_path):
    with pytest.raises(KdsaeError, match="source must be one of"):
        chapters.open_run(FIXTURE, source="cloud")
    with pytest.raises(KdsaeError, match=r"for trials \[.Q.\]"):
        chapters.open_chapter("02_trial_a", trial="Q", run=str(FIXTURE), out="/tmp/kdsae-test-figs")
    # source = "hub" offline with an empty cache: one sentence naming the repository, the missing file and
    # the command that fetches it
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("KDSAE_HUB_RUNS", str(tmp_path / "hub-runs"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with pytest.raises(MissingData) as err:
        chapters.open_run(FIXTURE, source="hub", trials=["A"])
    message = str(err.value)
    assert "\n" not in message
    for part in (
        "nileshsarkar-ai/colm-run-exp-2-t1",
        "sae_layer00_final.pt",
        "HF_HUB_OFFLINE=1",
        "hf download nileshsarkar-ai/colm-run-exp-2-t1 sae_layer00_final.pt",
    ):
        assert part in message


def test_gallery_without_toy_results_says_so(tmp_path):
    from kdsae_core.figures.gallery import _toy_cards

    cards, note = _toy_cards(tmp_path, "../notebooks", tmp_path / "no_toy_results.json")
    assert cards == [] and "no committed toy results" in note


def test_a_run_without_a_training_log_still_renders(tmp_path):
    """Hub downloads hold measurements but no metrics.jsonl: curves are skipped with one sentence."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    (run / "metrics.jsonl").unlink()
    nb = execute(paths.NOTEBOOKS / "04_trial_c.py", tmp_path / "o.ipynb", run=str(run), out=str(tmp_path / "figs"))
    assert len(outputs(nb, "image/png")) == 2
    assert any(
        "Not drawn for this run" in t and "no logged steps for trial C" in t for t in outputs(nb, "text/markdown")
    )
