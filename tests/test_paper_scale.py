"""Issue 20: what would stop or spoil the first paper-scale run on a GPU, exercised on the CPU at tiny size.

Each test fails on the code before the fix (f5fb791): attention patterns kept by the bridge, measurement that
puts every SAE on the device at once, unreadable .jsonl.zst text, no disk check and three state generations on
disk, the `mean` L1 term lost in bf16, tokenisation one document per call on the training thread with a state
that copies the leftover tokens and a resume that re-reads the text, every SAE's state held at once while saving
or loading, and the guards and options of the GPU path.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
import torch

from kdsae_core.common import paths
from kdsae_core.common.errors import InvalidParameter, MissingData
from kdsae_core.data import activations as acts
from kdsae_core.data.text import TokenStream, _hub_documents, _stream_failure, iter_documents
from kdsae_core.measure import measure_run
from kdsae_core.runs import layout
from kdsae_core.sae import plan as sae_plan
from kdsae_core.sae.model import SAE
from kdsae_core.sae.step import SAEUnit, fused_backward
from kdsae_core.train import state as train_state
from kdsae_core.train.trainer import SAETrainConfig, Trainer
from tests.test_train import pythia, tiny  # noqa: F401  (the module's random Pythia and tiny settings)


def _held_tensors(model, n_seq: int) -> list[str]:
    """Plain tensor attributes (not parameters or buffers) with a batch dimension, on any module of the model."""
    return [
        f"{name}.{attr}"
        for name, mod in model.named_modules()
        for attr, v in vars(mod).items()
        if isinstance(v, torch.Tensor)
        and not isinstance(v, torch.nn.Parameter)
        and v.dim() >= 3
        and v.shape[0] == n_seq
    ]


# ---- 1. attention patterns ----------------------------------------------------------------------------------
def test_no_module_holds_an_attention_pattern_after_the_activations_return(pythia):
    _, model = pythia
    tokens = torch.randint(100, 1000, (3, 64))
    for layers in ([5], [1]):  # the whole model, and a pass stopped early
        acts.ActivationSource(model, layers)(tokens)
        assert _held_tensors(model, 3) == []


# ---- 2. measurement in groups --------------------------------------------------------------------------------
def test_measurement_in_several_groups_equals_the_ungrouped_measurement(tmp_path, pythia):
    folder, model = pythia
    run = Trainer(tiny(folder, trials=["A", "B"]), tmp_path / "run", progress=False, model=model).run()
    measure_run(run, progress=False, model=model, batch_tokens=256)
    files = sorted((run / "measurements").rglob("*.json"))
    assert len(files) == 8  # 2 trials x 2 layers x 2 snapshots
    whole = {p: json.loads(p.read_text()) for p in files}
    forward = lambda n_seq: sae_plan.model_forward_bytes(model, n_seq, 64, 3)  # noqa: E731  (layers 0-2 run)
    plan = sae_plan.measure_plan(128, 64, 256, 64, 2, None, forward)
    budget = plan.shared_bytes + 3 * plan.per_sae_bytes  # room for 3 SAEs: groups of 3, 3 and 2
    assert sae_plan.measure_plan(128, 64, 256, 64, 2, budget, forward) == sae_plan.MeasurePlan(
        256, plan.per_sae_bytes, plan.shared_bytes, 3
    )
    measure_run(run, progress=False, model=model, batch_tokens=256, memory_bytes=budget)
    for p, before in whole.items():
        after = json.loads(p.read_text())
        for key in ("F_alive", "dead", "measure_tokens"):
            assert after[key] == before[key], (p.name, key)
        for key in ("mse", "l1", "avg_active", "explained_variance"):
            assert after[key] == pytest.approx(before[key], rel=1e-9, abs=1e-12), (p.name, key)


def test_a_small_device_gets_smaller_batches_and_a_device_too_small_is_one_sentence(tmp_path, pythia):
    plan = sae_plan.measure_plan(
        1024,
        32_768,
        32_768,
        1024,
        24,
        80 * 10**9,
        lambda n: sae_plan.forward_scratch_bytes(n, 1024, 16, 1024, 4096, 24),
    )
    assert plan.batch_tokens == 32_768 and plan.saes_per_group >= 24  # the final snapshots of a trial in one pass
    small = sae_plan.measure_plan(
        1024,
        32_768,
        32_768,
        1024,
        24,
        16 * 10**9,
        lambda n: sae_plan.forward_scratch_bytes(n, 1024, 16, 1024, 4096, 24),
    )
    assert small.batch_tokens < 32_768 and small.shared_bytes + small.per_sae_bytes <= 16 * 10**9
    folder, model = pythia
    run = Trainer(tiny(folder, trials=["B"], layers=[0]), tmp_path / "run", progress=False, model=model).run()
    with pytest.raises(InvalidParameter, match="more than the .* GB free on this device"):
        measure_run(run, progress=False, model=model, memory_bytes=10_000)
    assert not (run / "measurements").exists()


# ---- 3. the paper dataset's .jsonl.zst ----------------------------------------------------------------------
def _zst_corpus(folder: Path) -> list[str]:
    import zstandard

    docs = [f"document {i}: " + "some words of English text, long enough to be kept. " * 3 for i in range(12)]
    body = "".join(json.dumps({"text": d, "meta": {"pile_set_name": "Pile-CC"}}) + "\n" for d in docs).encode()
    folder.mkdir(parents=True)
    (folder / "train-00.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    return docs


def test_local_and_streamed_jsonl_zst_read_like_jsonl(tmp_path):
    docs = _zst_corpus(tmp_path / "pile")
    assert list(iter_documents(str(tmp_path / "pile"))) == docs  # a folder of them
    assert list(iter_documents(str(tmp_path / "pile" / "train-00.jsonl.zst"))) == docs
    assert list(_hub_documents(str(tmp_path / "pile"))) == docs  # through datasets' streaming, as from the hub


def test_a_missing_zstd_codec_is_named_as_the_cause(tmp_path, monkeypatch):
    _zst_corpus(tmp_path / "pile")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as in an environment without the package
    with pytest.raises(MissingData, match="zstd-compressed and reading it needs the package zstandard"):
        list(iter_documents(str(tmp_path / "pile")))
    # fsspec's own words when it has no zstd codec (fsspec/core.py), as datasets passes them on
    why = _stream_failure(ValueError("Compression type zstd not supported"))
    assert "zstd-compressed" in why and "install zstandard" in why and "hub" not in why


# ---- 4. disk ------------------------------------------------------------------------------------------------
def test_a_run_whose_peak_does_not_fit_the_disk_is_refused_before_it_writes(tmp_path, pythia, monkeypatch):
    folder, model = pythia
    cfg = tiny(folder)
    need = sae_plan.disk_plan(128, 64, 6, 2).peak_bytes  # 3 trials x 2 layers
    monkeypatch.setattr(sae_plan, "free_disk_bytes", lambda folder: need - 1)
    with pytest.raises(InvalidParameter, match="more than .* file system has free"):
        Trainer(cfg, tmp_path / "run", progress=False, model=model).run()
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(sae_plan, "free_disk_bytes", lambda folder: need)
    Trainer(cfg, tmp_path / "run", progress=False, model=model).run()
    assert (tmp_path / "run" / "status.json").exists()


def test_the_disk_plan_counts_what_a_run_writes_at_its_peak(tmp_path, pythia, monkeypatch):
    folder, model = pythia
    cfg = tiny(folder, trials=["B"], tokens=4096, n_snapshots=4, state_every_tokens=256)
    seen = []  # (generations on disk, run folder bytes) each time a state generation is about to be written
    write = train_state.write_units

    def watching(run, step, units):
        seen.append((len(list(layout.train_state_dir(run).glob("step*"))), sae_plan.folder_bytes(run)))
        return write(run, step, units)

    monkeypatch.setattr(train_state, "write_units", watching)
    run = Trainer(cfg, tmp_path / "run", progress=False, model=model).run()
    assert len(seen) == 15 and max(n for n, _ in seen) == 1  # the newest generation, plus the one being written
    plan = sae_plan.disk_plan(128, 64, 2, 4)
    biggest = max(b for _, b in seen) + 2 * plan.state_bytes  # the folder before a write, plus the write
    assert biggest <= plan.peak_bytes * 1.1
    assert sae_plan.folder_bytes(run / "checkpoints") == pytest.approx(4 * 2 * plan.snapshot_bytes, rel=0.05)


# ---- 5. the mean-form L1 term in bf16 ------------------------------------------------------------------------
def test_the_l1_gradient_survives_bf16_in_both_forms():
    B, d_in, d_sae = 1024, 1024, 4096  # the experiment
    torch.manual_seed(0)
    sae = SAE.initialised(d_in, d_sae, seed=1)
    with torch.no_grad():
        sae.b_enc.fill_(0.05)
    x = torch.randn(B, d_in)

    def l1_part(lam: float, form: str, cd) -> torch.Tensor:
        def grads(v: float) -> torch.Tensor:
            fused_backward(sae, x, torch.tensor(v, dtype=torch.float64), form, cd)
            return torch.cat([sae.W_enc.grad.flatten(), sae.b_enc.grad]).clone()

        return grads(lam) - grads(0.0)

    for form, lam in (("mean", 3e-4), ("sum", 8e-5)):  # trials A and B
        exact, bf16 = l1_part(lam, form, None), l1_part(lam, form, torch.bfloat16)
        b_enc = slice(d_in * d_sae, None)
        cos = torch.nn.functional.cosine_similarity
        assert float(cos(exact[b_enc], bf16[b_enc], dim=0)) >= 0.99, form
        if form == "mean":  # exact in fp32 here; the sum form's W_enc part carries bf16's own rounding (0.977)
            assert float(cos(exact, bf16, dim=0)) >= 0.99


# ---- 6. tokenisation: batched, off the training thread, resumable by position ------------------------------
class _Watched:
    """The model's real tokenizer, noting every call: how many documents it got and on which thread."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, []

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __call__(self, text, **kw):
        self.calls.append((len(text) if isinstance(text, list) else 1, threading.current_thread().name))
        return self.tokenizer(text, **kw)


def _long_documents(path: Path, n: int = 60) -> Path:
    """A .jsonl file of `n` documents of about 300 tokens each (different, so none is a repeat)."""
    words = "river stone light winter market garden letter mountain window silver harbour evening".split()
    docs = [f"Document {i}. " + " ".join(words[(i * j) % len(words)] for j in range(250)) for i in range(n)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def test_tokenisation_is_batched_off_the_training_thread_and_its_state_is_a_cursor(tmp_path, pythia):
    _, model = pythia
    tok = _Watched(model.tokenizer)
    stream = TokenStream(tok, str(_long_documents(tmp_path / "a.jsonl")), 16)
    states = []
    for _ in range(40):
        stream.next_batch(2)
        states.append(stream.state())
    stream.close()
    docs = sum(n for n, _ in tok.calls)
    assert docs >= 48 and len(tok.calls) == 1  # all 48 training documents in one call of the batch form
    assert all(thread.startswith("kdsae-tokens") for _, thread in tok.calls)  # not the caller's thread
    # every step's state is the same few numbers, not the hundreds of tokens left of the document it is in
    assert all(len(json.dumps(st)) < 100 for st in states) and len({st["index"] for st in states}) > 1


def test_a_resumed_stream_seeks_past_the_text_it_has_used(tmp_path, pythia):
    import zstandard

    _, model = pythia
    path = _long_documents(tmp_path / "a.jsonl")
    stream = TokenStream(model.tokenizer, str(path), 16)
    for _ in range(150):
        stream.next_batch(2)
    state = stream.state()
    seen, want = stream.seen(state), [stream.next_batch(2) for _ in range(60)]
    stream.close()
    offset = state["doc"][1]
    assert offset > len(path.read_bytes()) // 3 and len(seen) == 16 * state["index"]
    zst = tmp_path / "a.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(path.read_bytes()))
    # The text before the cursor's document becomes one line that is not JSON: a stream that read it again would
    # stop there (BadFile); one that seeks to the document never sees it.
    raw = path.read_bytes()
    path.write_bytes(b"x" * (offset - 1) + b"\n" + raw[offset:])
    for text in (path, zst):  # (a .zst file is decompressed up to the offset, not parsed)
        again = TokenStream(model.tokenizer, str(text), 16)
        again.load_state(json.loads(json.dumps(state)), seen)
        assert all(torch.equal(again.next_batch(2), w) for w in want), text
        again.close()


# ---- 6. states saved and loaded one SAE at a time --------------------------------------------------------------
class _Counted(dict):
    """An SAE's state, counted while it exists (a dict freed by reference counting as soon as it is dropped)."""

    live, peak, made = 0, 0, 0

    def __init__(self, *a):
        super().__init__(*a)
        type(self).made += 1
        type(self).live += 1
        type(self).peak = max(type(self).peak, type(self).live)

    def __del__(self):
        type(self).live -= 1


def test_states_are_saved_and_loaded_one_sae_at_a_time(tmp_path, pythia, monkeypatch):
    folder, model = pythia
    cfg = tiny(folder, trials=["A", "B", "C"], state_every_tokens=512)  # 6 SAEs
    whole = Trainer(cfg, tmp_path / "whole", progress=False, model=model).run()
    state, load = SAEUnit.state, train_state.st_load
    monkeypatch.setattr(SAEUnit, "state", lambda self: _Counted(state(self)))
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, tmp_path / "run", progress=False, model=model).run(stop_after_step=4)  # of 8; states every 2
    assert _Counted.peak == 1 and _Counted.live == 0  # two generations written, one SAE's state at a time
    monkeypatch.setattr(train_state, "st_load", lambda data: _Counted(load(data)))
    _Counted.peak = _Counted.made = 0
    resumed = Trainer(cfg, tmp_path / "run", progress=False, model=model)
    resumed.run(resume=True)
    assert _Counted.peak == 1 and _Counted.made == 12 and resumed.step == cfg.steps  # 6 loaded, 6 saved at step 6
    for p in (whole / "checkpoints").rglob("*.safetensors"):  # the streamed files resume the run bit for bit
        assert p.read_bytes() == (tmp_path / "run" / p.relative_to(whole)).read_bytes(), p


# ---- 7. guards ----------------------------------------------------------------------------------------------
def test_cuda_asked_of_a_cpu_only_torch_is_one_sentence_before_any_process_group():
    from kdsae_core.train.distributed import TorchComm

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InvalidParameter, match=r"^--device cuda was asked for, but this torch .* is a CPU-only build"):
        TorchComm("cuda")  # before init_process_group (which would wait for torchrun's other processes)
    with pytest.raises(InvalidParameter, match="CPU-only build"):
        Trainer(SAETrainConfig(device="cuda"), Path("/nonexistent/never-written"), progress=False).run()


# ---- the GPU smoke benchmark, at tiny size ------------------------------------------------------------------
def test_gpu_smoke_runs_tiny_on_the_cpu_and_its_forward_peak_agrees_with_the_plan(tmp_path):
    import os
    import subprocess

    out = tmp_path / "smoke.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [
            sys.executable,
            str(paths.REPO_ROOT / "benchmarks" / "gpu_smoke.py"),
            "--device",
            "cpu",
            "--tiny",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(out.read_text())
    fwd = d["forward"]  # a 24-layer random Pythia, 2 x 1,024 tokens
    assert fwd["modules_keeping_a_pattern"] == []
    assert (
        d["planned_peak_bytes"] == fwd["planned_peak_bytes"] and d["measured_peak_bytes"] == fwd["measured_peak_bytes"]
    )
    assert 0.9 <= d["measured_peak_bytes"] / d["planned_peak_bytes"] <= 1.1
    assert [s["dtype"] for s in d["sae"]] == ["bf16", "fp32"] and all(
        s["finite"] and len(s["step_s"]) == 20 for s in d["sae"]
    )
    assert "VmHWM" in fwd["method"] and d["environment"]["gloo"]
