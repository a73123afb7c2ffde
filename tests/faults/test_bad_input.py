"""Issue 7, item 5: bad input gives one clear line on stderr and exit 2, and nothing is written or overwritten.

Every case runs the real `kdsae` command line in-process (`kdsae_core.cli.main.main`); the model is loaded once
for the module (the verbs' own `load_model` is served from that cache). Run folders are copies of one run
trained and measured in-process with the settings of `sae_helpers.train_args`; every folder a case could
touch is compared byte for byte before and after.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kdsae_core.cli.main import main
from kdsae_core.common import paths
from kdsae_core.data import activations as acts
from kdsae_core.measure import measure_run
from kdsae_core.runs import layout
from kdsae_core.train.trainer import SAETrainConfig, Trainer

from .sae_helpers import error_lines, train_args


@pytest.fixture(scope="module")
def cached_models():
    cache, real = {}, acts.load_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(acts, "load_model", lambda name, device="cpu": cache.setdefault((name, device), real(name, device)))
        yield cache


@pytest.fixture()
def cli(capsys, cached_models):
    def refused(argv, *fragments, untouched=()):
        before = {Path(f): snapshot(f) for f in untouched}
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            code = e.code
        err = capsys.readouterr().err
        lines = error_lines(err)
        assert code == 2, err[-2000:]
        assert "Traceback" not in err and len(lines) == 1, lines
        assert lines[0].startswith("kdsae"), lines
        for f in fragments:
            assert f in lines[0], lines[0]
        for f, snap in before.items():
            assert snapshot(f) == snap, f"{f} changed"
        return lines[0]

    return refused


def snapshot(folder) -> dict | None:
    folder = Path(folder)
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cached_models, tiny_model, corpus):
    cfg = SAETrainConfig.from_profile(
        "embedded",
        model=str(tiny_model),
        dataset=str(corpus),
        layers=[0, 2],
        trials=["A", "C"],
        d_sae=64,
        tokens=4096,
        batch_tokens=256,
        context=64,
        n_snapshots=4,
        state_every_tokens=512,
        measure_tokens=1024,
    )
    run = Trainer(cfg, tmp_path_factory.mktemp("trained") / "run", progress=False).run()
    measure_run(run, progress=False)
    return run


@pytest.fixture()
def old_run(tmp_path, trained):
    return shutil.copytree(trained, tmp_path / "old_run")


def train(tiny_model, corpus, out, *extra):
    args = train_args(tiny_model, corpus, out, *extra)
    args.remove("--measure")
    return args


# ---- measurement files and widths ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2, 3]", "must hold a JSON object"),
        ('{"F_alive": 3, "avg_active": 1.0}', "lacks the field(s) sorted_importance"),
        ('{"F_alive": "many", "avg_active": 1.0, "sorted_importance": [0.3, 0.2, 0.1]}', "is inconsistent"),
        (
            '{"F_alive": 2, "avg_active": 1.0, "sorted_importance": [0.3, 0.2, 0.1]}',
            "F_alive=2 but sorted_importance has 3",
        ),
        ('{"F_alive": 3, "avg_active": 5.0, "sorted_importance": [0.3, 0.2, 0.1]}', "L0 must lie in (0, F)"),
        ('{"F_alive": 3, "avg_active": 1.0, "sorted_importance": [0.1, 0.2, 0.3]}', "sorted in descending order"),
        ('{"F_alive": 3, "avg_active": 1.0, "sorted_importance": [0.3, NaN, 0.1]}', "finite and non-negative"),
    ],
)
def test_a_malformed_measurement_json(tmp_path, cli, content, fragment):
    path = tmp_path / "m.json"
    path.write_text(content)
    cli(["theory", "--measurements", path], fragment, str(path), untouched=[tmp_path])


@pytest.mark.parametrize("alpha", ["0", "1", "1.0", "-0.2", "1.5", "nan", "0.5,1"])
def test_alpha_outside_the_open_unit_interval(tmp_path, cli, alpha):
    cli(
        ["toy", "--alpha", alpha, "--out", tmp_path / "toy"],
        "alpha must lie strictly between 0 and 1",
        untouched=[tmp_path],
    )


@pytest.mark.parametrize("verb, extra", [("toy", ["--out", "OUT"]), ("theory", ["--measurements", "unused.json"])])
@pytest.mark.parametrize("widths", ["0", "-3", "128,0"])
def test_widths_that_are_not_positive(tmp_path, cli, verb, extra, widths):
    extra = [str(tmp_path / "toy") if a == "OUT" else a for a in extra]
    cli([verb, "--widths", widths, *extra], "widths must be positive", untouched=[tmp_path])


def test_a_teacher_width_of_zero(tmp_path, cli):
    cli(
        ["toy", "--d-teacher", "0", "--out", tmp_path / "toy"],
        "--d-teacher must be whole numbers >= 1",
        untouched=[tmp_path],
    )


# ---- kdsae train: layers, corpus, sizes -----------------------------------------------------------------------
def test_a_layer_the_model_does_not_have(tmp_path, cli, tiny_model, corpus):
    out = tmp_path / "run"
    cli(
        train(tiny_model, corpus, out, "--layers", "0,6"),
        "layer 6 does not exist: the model has 6 layers, numbered 0-5",
    )
    assert not out.exists(), "a refused run leaves no empty folder behind"


def test_a_negative_layer(tmp_path, cli, tiny_model, corpus):
    cli(
        train(tiny_model, corpus, tmp_path / "run", "--layers", "-1"),
        "--layers must be 0-based layer numbers",
        untouched=[tmp_path],
    )


@pytest.mark.parametrize("text", ["", "too short\n", "A document long enough to count, but far short of a batch.\n"])
def test_an_empty_corpus_or_fewer_tokens_than_one_batch(tmp_path, cli, tiny_model, text):
    corpus = tmp_path / "text.txt"
    corpus.write_text(text)
    out = tmp_path / "run"
    cli(train(tiny_model, corpus, out), f"the train part of the text '{corpus}' ran out")
    assert not out.exists(), "nothing is written for a corpus that cannot fill one batch"


def test_an_empty_corpus_with_force_leaves_the_old_run_intact(tmp_path, cli, tiny_model, old_run):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("")
    cli(train(tiny_model, corpus, old_run, "--force"), "ran out", untouched=[old_run])


def test_an_empty_text_folder(tmp_path, cli, tiny_model):
    (tmp_path / "texts").mkdir()
    cli(train(tiny_model, tmp_path / "texts", tmp_path / "run"), "holds no .txt, .jsonl or .jsonl.zst files")


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--tokens", "100"], "--tokens (100) is fewer than one batch (256 tokens)"),
        (["--d-sae", "0"], "--d-sae must be a whole number >= 1"),
        (["--d-sae", "-64"], "--d-sae must be a whole number >= 1"),
        (["--batch-tokens", "100"], "must be a multiple of the context length"),
        (["--trial", "A,Z"], "unknown trial 'Z'"),
        (["--d-sae", "many"], "invalid int value"),
    ],
)
def test_bad_training_settings(tmp_path, cli, tiny_model, corpus, extra, fragment):
    cli(train(tiny_model, corpus, tmp_path / "run", *extra), fragment, untouched=[tmp_path])


# ---- d_sae against checkpoints ----------------------------------------------------------------------------------
def test_resuming_with_another_d_sae_is_refused(cli, tiny_model, corpus, old_run):
    cli(
        train(tiny_model, corpus, old_run, "--resume", "--d-sae", "32"),
        f"{old_run} holds a run with other settings: --d-sae 32 (the run has 64)",
        untouched=[old_run],
    )


def test_a_checkpoint_whose_weights_do_not_match_its_d_sae(cli, old_run):
    folder = layout.checkpoint_dir(old_run, "A", 2, "final")
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "d_sae": 32}))
    layout.run_manifest(old_run).unlink()  # no manifest to catch the edit: the shapes must
    cli(
        ["measure", "--run", old_run, "--tokens", "256", "--force"],
        f"{folder / 'sae_weights.safetensors'}: W_enc has shape (128, 64), this SAE needs (128, 32)",
        untouched=[old_run],
    )


def test_measuring_a_layer_the_run_does_not_have(cli, old_run):
    cli(
        ["measure", "--run", old_run, "--layers", "5"],
        "has no checkpoints to measure for the trials/layers/snapshots",
        untouched=[old_run],
    )


# ---- notebook parameters ------------------------------------------------------------------------------------------
@pytest.fixture()
def no_papermill(monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("papermill was reached"))


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("rerun", "yes", "must be a bool"),
        ("steps", '"many"', "steps must be a int (got 'many')"),
        ("alpha", "{}", "alpha must be a number or a list of numbers"),
    ],
)
def test_a_notebook_parameter_of_the_wrong_type(tmp_path, cli, no_papermill, name, value, fragment):
    cli(
        ["run", "01_toy_validation", "-p", "rerun", "true", "-p", name, value, "--out", tmp_path / "nb"],
        fragment,
        untouched=[tmp_path],
    )


# ---- output folders that hold other results -----------------------------------------------------------------------
def test_a_run_folder_of_another_run_is_refused_without_force(cli, tiny_model, corpus, old_run):
    cli(
        train(tiny_model, corpus, old_run, "--seed", "1"),
        f"{old_run} already holds a run: pass --resume",
        untouched=[old_run],
    )


def test_a_folder_of_other_files_is_refused(tmp_path, cli, tiny_model, corpus):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    cli(train(tiny_model, corpus, tmp_path / "mine"), "is not empty and holds no run", untouched=[tmp_path])


def test_toy_results_are_not_overwritten_without_force(tmp_path, cli):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "toy_results.json").write_text('{"configs": []}')
    cli(
        [
            "toy",
            "--n",
            "6",
            "--d-teacher",
            "2",
            "--alpha",
            "0.9",
            "--seeds",
            "1",
            "--steps",
            "10",
            "--out",
            tmp_path / "toy",
        ],
        "already holds toy results; pass --force",
        untouched=[tmp_path],
    )


def test_kdsae_run_never_writes_into_results_nor_into_a_used_folder(tmp_path, cli, no_papermill):
    results = paths.REPO_ROOT / "results"
    cli(["run", "01_toy_validation", "--out", results / "mine"], "is inside results/", untouched=[results])
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "run.json").write_text("{}")
    cli(["run", "01_toy_validation", "--out", tmp_path / "used"], "is not empty", untouched=[tmp_path])


def test_figures_are_never_written_into_the_run_folder(cli, old_run):
    cli(["figures", "--run", old_run, "--out", old_run / "figures"], "is inside the run folder", untouched=[old_run])


# ---- issue 21, item 6: settings that would do nothing, and silent overwrites ----------------------------------------
def test_a_target_l0_for_fixed_lambda_trials_only_is_refused(tmp_path, cli, tiny_model, corpus):
    cli(
        train(tiny_model, corpus, tmp_path / "run", "--trial", "A", "--target-l0", "50"),
        "--target-l0 applies only to trial C",
        "drop --target-l0 or add C to --trial",
        untouched=[tmp_path],
    )


def test_measuring_over_fewer_tokens_than_the_last_measurement_is_refused_without_force(cli, old_run):
    cli(
        ["measure", "--run", old_run, "--tokens", "256"],
        "was measured over 1,024 tokens; measuring over 256",
        "pass --force",
        untouched=[old_run],
    )


def test_figures_into_a_folder_that_holds_files_is_refused_without_force(tmp_path, cli, old_run):
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "mine.png").write_bytes(b"mine")
    cli(
        ["figures", "--run", old_run, "--out", tmp_path / "figs"],
        "is not empty",
        "pass --force",
        untouched=[tmp_path / "figs"],
    )
