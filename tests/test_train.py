"""The Experiment 2 engine end to end at tiny size: activations, training, snapshots, resume, measurement.

The language model is a random-weight Pythia-shaped model (pythia-14m shape, built offline) or the real
all-MiniLM-L6-v2 from its package; the text is the packaged English text or small local files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks.random_pythia import random_pythia
from kdsae_core import theory
from kdsae_core.common import paths
from kdsae_core.common.errors import BadFile, InvalidParameter, MissingData, RunFolderError
from kdsae_core.data import activations as acts
from kdsae_core.data.text import MEASURE_EVERY, TokenStream, iter_documents, split_documents
from kdsae_core.measure import _Accumulator, _result, measure_run
from kdsae_core.runs import layout, manifest
from kdsae_core.runs.checkpoints import load_checkpoint
from kdsae_core.runs.layout import Checkpoint
from kdsae_core.runs.tables import load_run
from kdsae_core.sae import sparse as sae_sparse
from kdsae_core.sae.model import SAE
from kdsae_core.train.trainer import SAETrainConfig, Trainer


@pytest.fixture(scope="module")
def pythia(tmp_path_factory):
    folder = random_pythia(tmp_path_factory.mktemp("models") / "random-pythia14m-shape")
    return folder, acts.load_model(str(folder))


def tiny(model_folder, **kw) -> SAETrainConfig:
    values = dict(
        model=str(model_folder),
        layers=[0, 2],
        d_sae=64,
        tokens=2048,
        batch_tokens=256,
        context=64,
        n_snapshots=2,
        measure_tokens=1024,
    )
    values.update(kw)
    return SAETrainConfig.from_profile("embedded", **values)


# ---- activations ---------------------------------------------------------------------------------------
def test_all_layer_capture_equals_per_layer_capture(pythia):
    folder, model = pythia
    tokens = TokenStream(model.tokenizer, "embedded", 32).next_batch(3)
    together = acts.ActivationSource(model, [0, 2, 4])(tokens)
    for layer in (0, 2, 4):
        alone = acts.ActivationSource(model, [layer])(tokens)[layer]
        torch.testing.assert_close(together[layer], alone, rtol=0, atol=1e-6)
        assert together[layer].shape == (3 * 32, 128)


def test_the_forward_pass_stops_after_the_last_requested_layer(pythia):
    _, model = pythia
    ran = []
    handles = [b.register_forward_pre_hook(lambda m, i, k=k: ran.append(k)) for k, b in enumerate(model.blocks)]
    try:
        acts.ActivationSource(model, [0, 1])(torch.randint(100, 1000, (2, 16)))
    finally:
        for h in handles:
            h.remove()
    assert sorted(set(ran)) == [0, 1]


def test_asking_for_the_last_layer_skips_the_unembedding(pythia):
    """stop_at_layer cannot stop after the last block; we do, so the 50,304-word unembedding never runs."""
    _, model = pythia
    ran = []
    handle = model.unembed.register_forward_hook(lambda *a: ran.append(1))
    try:
        tokens = torch.randint(100, 1000, (2, 16))
        got = acts.ActivationSource(model, list(range(acts.model_layers(model))))(tokens)
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter="blocks.5.hook_resid_post", return_cache_object=False)
    finally:
        handle.remove()
    assert ran == [1]  # only the reference pass ran it
    assert torch.equal(got[5], cache["blocks.5.hook_resid_post"].reshape(-1, 128))


def test_minilm_capture_matches_hugging_face_hidden_states():
    from transformers import AutoModel

    model = acts.load_model("embedded")
    tokens = TokenStream(model.tokenizer, "embedded", 48).next_batch(2)
    got = acts.ActivationSource(model, range(6))(tokens)
    hf = AutoModel.from_pretrained(str(acts.embedded_model_path()))
    with torch.no_grad():
        hidden = hf(tokens, output_hidden_states=True).hidden_states
    for layer in range(6):
        torch.testing.assert_close(got[layer], hidden[layer + 1].reshape(-1, 384), rtol=0, atol=2e-5)


def test_a_layer_the_model_lacks_is_refused(pythia):
    _, model = pythia
    with pytest.raises(InvalidParameter, match="layer 6 does not exist: the model has 6 layers, numbered 0-5"):
        acts.ActivationSource(model, [0, 6])


# ---- text -------------------------------------------------------------------------------------------------
def test_token_stream_packs_resumes_and_keeps_the_splits_apart(pythia):
    _, model = pythia
    tok = model.tokenizer
    s = TokenStream(tok, "embedded", 64)
    first = s.next_batch(4)
    assert first.shape == (4, 64) and bool((first[:, 0] == tok.cls_token_id).all())
    state = s.state()
    nxt = s.next_batch(4)
    again = TokenStream(tok, "embedded", 64)
    again.load_state(json.loads(json.dumps(state)), s.seen(state))  # the state survives JSON, as in trainer.json
    assert torch.equal(again.next_batch(4), nxt)
    train = {d for _, d in split_documents(iter_documents("embedded"), "train")}
    measure = {d for _, d in split_documents(iter_documents("embedded"), "measure")}
    assert measure and train and not (train & measure)
    assert len(measure) == pytest.approx(len(train | measure) / MEASURE_EVERY, abs=1)


def test_local_text_files_and_their_errors(tmp_path, pythia):
    _, model = pythia
    long = "The quick brown fox jumps over the lazy dog near the river bank. "
    lines = [f"Line {i}. " + long * 3 for i in range(10)]
    (tmp_path / "a.txt").write_text("short\n" + "\n".join(lines + lines[:1]) + "\n")
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": f"Record {i}. " + long}) for i in range(10)) + "\n")
    docs = list(iter_documents(str(tmp_path)))
    assert len(docs) == 22
    kept = list(split_documents(iter(docs), "train")) + list(split_documents(iter(docs), "measure"))
    assert len(kept) == 20  # "short" is under 50 characters, and the repeated line is a repeat
    s = TokenStream(model.tokenizer, str(tmp_path), 16)
    assert s.next_batch(2).shape == (2, 16)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "c.jsonl").write_text('{"body": 1}\n')
    with pytest.raises(BadFile, match="line 1: expected a JSON object with a `text` field"):
        list(iter_documents(str(tmp_path / "bad")))
    with pytest.raises(BadFile, match="does not exist"):
        list(iter_documents(str(tmp_path / "missing.txt")))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "e.txt").write_text("tiny\n")
    with pytest.raises(MissingData, match="ran out"):
        TokenStream(model.tokenizer, str(tmp_path / "empty"), 16).next_batch(1)


# ---- training ---------------------------------------------------------------------------------------------
def test_a_short_run_writes_every_file_of_the_run_folder(tmp_path, pythia):
    folder, model = pythia
    cfg = tiny(folder)
    run = Trainer(cfg, tmp_path / "run", progress=False, model=model).run()
    config = json.loads(layout.run_config(run).read_text())
    assert config["settings"] == cfg.settings() and config["d_in"] == 128 and config["layers"] == [0, 2]
    assert [s["label"] for s in config["snapshots"]] == ["1.024k", "final"]
    rows = [json.loads(line) for line in layout.run_metrics(run).read_text().splitlines()]
    assert len(rows) == cfg.steps * 3 * 2 and {r["step"] for r in rows} == set(range(1, 9))
    assert set(rows[0]) == {
        "trial",
        "layer",
        "step",
        "tokens",
        "mse",
        "l1",
        "loss",
        "L0",
        "lambda",
        "alive_frac",
        "sae_step",
    }
    assert {r["sae_step"] for r in rows} <= {"dense", "sparse"}
    for r in rows:
        lam_l1 = r["lambda"] * r["l1"]
        assert r["loss"] == pytest.approx(r["mse"] + lam_l1, rel=1e-5)
    for trial in "ABC":
        for layer in (0, 2):
            for snap in ("1.024k", "final"):
                sae, c = load_checkpoint(layout.checkpoint_dir(run, trial, layer, snap))
                assert (c["d_in"], c["d_sae"]) == (128, 64)
                assert c["metadata"]["hook_name"] == f"blocks.{layer}.hook_resid_post"
                assert c["metadata"]["kdsae"]["snapshot"] == snap
    assert manifest.verify_manifest(run) == []
    assert not layout.train_state_dir(run).exists()
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    # trial C's lambda moves, A and B's do not
    lam = {t: {r["lambda"] for r in rows if r["trial"] == t} for t in "ABC"}
    assert lam["A"] == {3e-4} and lam["B"] == {8e-5} and len(lam["C"]) > 1

    measure_run(run, progress=False, model=model)
    data = load_run(run, snapshots=None)
    assert len(data.measurements) == 3 * 2 * 2
    for _, m in data.measurements.iterrows():
        assert m["F_alive"] + m["dead"] == 64 and m["measure_tokens"] == 1024
        assert m["alpha"] == pytest.approx(1 - m["L0"] / m["F_alive"], rel=1e-9)
        assert m["d_star_S"] == pytest.approx(m["F_alive"] / theory.g_alpha(m["alpha"]), rel=1e-9)
    assert sorted(data.predictions["width"].unique()) == theory.default_widths(128)
    summary = (run / "summary_C.csv").read_text().splitlines()
    assert summary[0].startswith("layer,L0,alpha,g_alpha,d_star_S,F_alive,dead") and len(summary) == 3
    assert manifest.verify_manifest(run) == []


def test_stop_and_resume_gives_the_same_final_weights_and_log(tmp_path, pythia):
    folder, model = pythia
    cfg = tiny(folder, n_snapshots=2, state_every_tokens=512)
    whole = Trainer(cfg, tmp_path / "whole", progress=False, model=model).run()
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt, match="state saved"):
        Trainer(cfg, part, progress=False, model=model).run(stop_after_step=3)
    assert layout.train_state_dir(part).exists()
    with pytest.raises(RunFolderError, match="already holds a run"):
        Trainer(cfg, part, progress=False, model=model).run()
    Trainer(cfg, part, progress=False, model=model).run(resume=True)
    for trial in "ABC":
        for layer in (0, 2):
            for snap in ("1.024k", "final"):
                a = layout.checkpoint_dir(whole, trial, layer, snap) / "sae_weights.safetensors"
                b = layout.checkpoint_dir(part, trial, layer, snap) / "sae_weights.safetensors"
                assert a.read_bytes() == b.read_bytes()
    assert layout.run_metrics(whole).read_text() == layout.run_metrics(part).read_text()


def test_resume_with_other_settings_and_a_foreign_folder_are_refused(tmp_path, pythia):
    folder, model = pythia
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny(folder), run, progress=False, model=model).run(stop_after_step=2)
    with pytest.raises(RunFolderError, match=r"other settings \(lr\)"):
        Trainer(tiny(folder, lr=1e-3), run, progress=False, model=model).run(resume=True)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not empty and holds no run"):
        Trainer(tiny(folder), stray, progress=False, model=model).run()
    assert (stray / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(tokens=100), "fewer than one batch"),
        (dict(batch_tokens=100), "multiple of the context"),
        (dict(trials=["A", "Z"]), "unknown trial 'Z'"),
        (dict(d_sae=0), "--d-sae must be a whole number >= 1"),
        (dict(lr=-1.0), "--lr must be a positive number"),
        (dict(dtype="fp16"), "--dtype must be one of fp32, bf16"),
        (dict(n_snapshots=50), "exceeds the number of steps"),
        (dict(sae_step="fast"), "--sae-step must be one of auto, dense, sparse"),
        (dict(sae_step="sparse", dtype="bf16"), "--sae-step sparse computes in fp32 only"),
    ],
)
def test_bad_settings_are_one_clear_sentence(kw, message):
    with pytest.raises(InvalidParameter, match=message):
        tiny("unused", **kw)


def test_pilot_trials_are_the_mean_form(tmp_path):
    specs = tiny("unused", trials=["P7e-04", "P1e-04"]).trial_specs()
    assert specs["P7e-04"].l1_coeff == 7e-4 and specs["P7e-04"].l1_form == "mean"


# ---- measurement --------------------------------------------------------------------------------------------
def test_measurement_of_a_crafted_sae_with_a_known_firing_pattern():
    """Tokens are basis vectors e_j with known frequencies; latent j (j < 4) reads e_j with bias -0.5, so it
    fires exactly on the tokens e_j with z = 0.5; latents 4..7 never fire. Then every quantity is known."""
    d_in, d_sae = 4, 8
    sae = SAE(d_in, d_sae)
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[:, :4] = torch.eye(4)
        sae.b_enc.copy_(torch.tensor([-0.5] * 4 + [-1.0] * 4))
        sae.W_dec.zero_()
        sae.W_dec[:4] = torch.eye(4)
    counts = [5000, 3000, 1500, 500]  # 10,000 tokens
    x = torch.cat([torch.eye(4)[j].repeat(n, 1) for j, n in enumerate(counts)])
    acc = _Accumulator(sae, d_in, d_sae, "cpu")
    for chunk in x.split(1024):
        acc.add(chunk)
    cfg = {
        "d_in": d_in,
        "d_sae": d_sae,
        "metadata": {"kdsae": {"trial": {"l1_form": "sum"}, "lambda": 0.1, "tokens": 0}},
    }
    r = _result(acc, Checkpoint("B", 3, "final", Path(".")), cfg, {"model": "crafted"})
    assert (r["F_alive"], r["dead"], r["avg_active"]) == (4, 4, 1.0)
    assert r["alpha"] == pytest.approx(0.75) and r["g_alpha"] == pytest.approx(theory.g_alpha(0.75))
    assert r["d_star_S"] == pytest.approx(4 / theory.g_alpha(0.75))
    # E[z_j^2] = 0.25 * frequency_j, sorted descending; x_hat = 0.5 e_j, so MSE = 0.25 / 4
    assert r["sorted_importance"] == pytest.approx([0.25 * n / 10_000 for n in counts])
    assert r["mse"] == pytest.approx(0.0625) and r["l1"] == pytest.approx(0.5) and r["loss"] == pytest.approx(0.1125)
    variance = sum(n / 10_000 * (1 - n / 10_000) for n in counts)  # per-dim Bernoulli variance, summed
    assert r["explained_variance"] == pytest.approx(1 - 0.25 / variance)


def test_measure_refuses_a_checkpoint_of_another_width(tmp_path, pythia):
    folder, model = pythia
    run = Trainer(tiny(folder, trials=["B"], layers=[1]), tmp_path / "run", progress=False, model=model).run()
    with pytest.raises(BadFile, match="d_sae 64, not the 32 asked for"):
        load_checkpoint(layout.checkpoint_dir(run, "B", 1, "final"), d_sae=32)
    weights = layout.checkpoint_dir(run, "B", 1, "final") / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(BadFile, match="does not match its manifest sha256"):
        measure_run(run, progress=False, model=model)
    assert not (run / "measurements").exists()


def test_nan_activations_stop_the_run_with_the_last_state_intact(tmp_path, pythia):
    folder, model = pythia
    cfg = tiny(folder, trials=["A"], layers=[0], state_every_tokens=512)

    def poison(step, x):
        if step == 4:
            x[0][3, 5] = float("nan")
        return x

    run = tmp_path / "run"
    from kdsae_core.train.trainer import NumericalFault

    with pytest.raises(NumericalFault, match=r"layer 0 activations at step 5 are not finite.*step 4\) is intact"):
        Trainer(cfg, run, progress=False, model=model, batch_hook=poison).run()
    Trainer(cfg, run, progress=False, model=model).run(resume=True)  # clean input resumes from step 4
    rows = [json.loads(line) for line in layout.run_metrics(run).read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9)) and all(math.isfinite(r["loss"]) for r in rows)


def test_a_chapter_rerun_trains_again_and_gets_the_same_numbers(tmp_path, pythia):
    """rerun=True (the chapters' parameter) retrains from the run's own config: on CPU, the same measurements."""
    from kdsae_core.book import chapters

    folder, model = pythia
    run = Trainer(tiny(folder, trials=["A", "C"]), tmp_path / "run", progress=False, model=model).run()
    measure_run(run, progress=False, model=model)
    again = chapters.open_run(run, trials=["C"], rerun=True, out=tmp_path / "figs")
    assert again.folder == tmp_path / "figs" / "rerun" and again.trials == ["C"]
    for layer in (0, 2):
        a, b = (layout.measurement_file(r, "C", layer, "final") for r in (run, again.folder))
        assert b.read_bytes() == a.read_bytes()


def test_a_run_whose_saes_do_not_fit_in_memory_is_refused_before_it_writes(tmp_path, pythia, monkeypatch, capsys):
    from kdsae_core.sae import plan as sae_plan

    folder, model = pythia
    cfg = tiny(folder)
    # trials A, B, C x layers 0, 2 of d_in 128; one forward pass of 64 sequences (4,096 tokens) through blocks 0-2
    forward = sae_plan.model_forward_bytes(model, 64, 64, 3)
    plan = sae_plan.memory_plan(128, 64, 256, 6, 2, "fp32", forward_bytes=forward)
    monkeypatch.setattr(sae_plan, "available_memory_bytes", lambda device: plan.total_bytes - plan.per_sae_bytes)
    with pytest.raises(InvalidParameter, match=r"at most 5 of its 6 SAEs fit: train fewer layers"):
        Trainer(cfg, tmp_path / "run", progress=True, model=model).run()
    assert not (tmp_path / "run").exists()
    assert "memory plan: 6 SAEs of 128 x 64" in capsys.readouterr().out
    monkeypatch.setattr(sae_plan, "available_memory_bytes", lambda device: plan.total_bytes)
    Trainer(cfg, tmp_path / "run", progress=False, model=model).run()  # exactly fits: trains
    assert (tmp_path / "run" / "status.json").exists()


def test_the_sae_step_is_a_setting_and_a_run_recorded_before_it_resumes_dense(tmp_path, pythia, monkeypatch):
    """Issue 19: `sae_step` (auto by default) is recorded with the settings and decides every unit's path; a run
    folder recorded before it existed (no sae_step in its settings or states, like results/exp2/embedded) was dense
    throughout, so it resumes and retrains dense -- byte-identical to a dense run -- and refuses another path."""
    folder, model = pythia
    monkeypatch.setattr(sae_sparse, "sparse_below_density", lambda *a: 1.01)  # auto: the sparse step at every step
    committed = json.loads((paths.RESULTS / "exp2" / "embedded" / "config.json").read_text())["settings"]
    assert "sae_step" not in committed and SAETrainConfig.from_json(committed).sae_step == "dense"
    assert tiny(folder).sae_step == "auto"
    make = (paths.REPO_ROOT / "Makefile").read_text()  # make results-exp2 regenerates the committed run as it was made
    assert "kdsae train --profile embedded --sae-step dense" in make.split("results-exp2: setup")[1].split("\n\n")[0]
    cfg = tiny(folder, trials=["C"], layers=[0], sae_step="dense")
    whole = Trainer(cfg, tmp_path / "whole", progress=False, model=model).run()
    assert json.loads(layout.run_config(whole).read_text())["settings"]["sae_step"] == "dense"
    assert {json.loads(r)["sae_step"] for r in layout.run_metrics(whole).read_text().splitlines()} == {"dense"}
    auto = Trainer(tiny(folder, trials=["C"], layers=[0]), tmp_path / "auto", progress=False, model=model).run()
    assert {json.loads(r)["sae_step"] for r in layout.run_metrics(auto).read_text().splitlines()} == {"sparse"}

    old = tmp_path / "old"  # stopped, then made to look recorded before issue 19
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, old, progress=False, model=model).run(stop_after_step=3)
    for f in [layout.run_config(old), *layout.train_state_dir(old).rglob("trainer.json")]:
        d = json.loads(f.read_text())
        del d["settings"]["sae_step"]
        d.pop("sha256", None)  # (older states have none)
        f.write_text(json.dumps(d))
    with pytest.raises(RunFolderError, match=r"other settings \(sae_step\)"):
        Trainer(tiny(folder, trials=["C"], layers=[0]), old, progress=False, model=model).run(resume=True)
    Trainer(cfg, old, progress=False, model=model).run(resume=True)
    assert layout.run_metrics(old).read_text() == layout.run_metrics(whole).read_text()
    final = layout.checkpoint_dir(whole, "C", 0, "final") / "sae_weights.safetensors"
    assert (layout.checkpoint_dir(old, "C", 0, "final") / "sae_weights.safetensors").read_bytes() == final.read_bytes()


def test_a_resumed_run_keeps_the_sparse_threshold_it_started_with(tmp_path, pythia, monkeypatch):
    """The density under which `auto` goes sparse is recorded in config.json; a run resumed after kdsae's measured
    crossover changed keeps its own, so it takes the paths (and gives the bytes) of an uninterrupted run."""
    folder, model = pythia
    cfg = tiny(folder, trials=["C"], layers=[0])
    monkeypatch.setattr(sae_sparse, "sparse_below_density", lambda *a: 1.01)  # every step sparse
    whole = Trainer(cfg, tmp_path / "whole", progress=False, model=model).run()
    stopped = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, stopped, progress=False, model=model).run(stop_after_step=3)
    monkeypatch.setattr(sae_sparse, "sparse_below_density", lambda *a: 1e-9)  # now: sparse only if nothing fires
    Trainer(cfg, stopped, progress=False, model=model).run(resume=True)
    assert json.loads(layout.run_config(stopped).read_text())["sparse_step_below_density"] == 1.01
    assert {json.loads(r)["sae_step"] for r in layout.run_metrics(stopped).read_text().splitlines()} == {"sparse"}
    assert layout.run_metrics(stopped).read_text() == layout.run_metrics(whole).read_text()
    fresh = Trainer(cfg, tmp_path / "fresh", progress=False, model=model).run()  # a new run takes today's threshold
    assert {json.loads(r)["sae_step"] for r in layout.run_metrics(fresh).read_text().splitlines()} == {"dense"}
