"""Issue 7, item 2: every file of a run folder is written to a temporary, fsynced and renamed; the manifest holds
the sha256 of every file; a truncated or bit-flipped file is detected on load with a message naming it; a
corrupted resumable state falls back to the previous good generation, and the resumed run is unchanged.

In-process runs (a preloaded model): 8 steps, snapshots at steps 4 and 8, a state every 2 steps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kdsae_core.cli.main import main
from kdsae_core.common.errors import BadFile
from kdsae_core.data import activations as acts
from kdsae_core.measure import measure_run
from kdsae_core.runs import layout, manifest
from kdsae_core.runs.checkpoints import load_checkpoint
from kdsae_core.runs.tables import load_run
from kdsae_core.train import state as train_state
from kdsae_core.train.trainer import SAETrainConfig, Trainer

from .sae_helpers import error_lines, run_files


@pytest.fixture(scope="module")
def lm(tiny_model):
    return acts.load_model(str(tiny_model))


def small_cfg(tiny_model, corpus) -> SAETrainConfig:
    return SAETrainConfig.from_profile(
        "embedded",
        model=str(tiny_model),
        dataset=str(corpus),
        layers=[0, 2],
        trials=["A", "C"],
        d_sae=64,
        tokens=2048,
        batch_tokens=256,
        context=64,
        n_snapshots=2,
        state_every_tokens=512,
        measure_tokens=1024,
    )


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory, tiny_model, corpus, lm):
    """A trained and measured run, with every fsync and rename made while writing it, in order."""
    run = tmp_path_factory.mktemp("atomic") / "run"
    events = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst, *a, **k):
        events.append(("replace", os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst, *a, **k)

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", replace)
        mp.setattr(os, "fsync", fsync)
        Trainer(small_cfg(tiny_model, corpus), run, progress=False, model=lm).run()
        measure_run(run, progress=False, model=lm)
    return run, events


def test_every_file_is_written_to_a_temporary_fsynced_then_renamed(recorded_run):
    run, events = recorded_run
    files = [p for p in run.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.endswith(".tmp")], "no temporary is left behind"
    renamed = {}
    for i, e in enumerate(events):
        if e[0] == "replace":
            renamed.setdefault(e[2], []).append(i)
    appended = []
    for p in files:
        if str(p) not in renamed:
            appended.append(p.name)
            continue
        for i in renamed[str(p)]:
            _, src, dst = events[i]
            assert Path(src).parent == p.parent and Path(src).name.startswith(f".{p.name}.") and src.endswith(".tmp")
            assert ("fsync", src) in events[:i], f"{src} renamed onto {p} before it was fsynced"
            assert ("fsync", str(p.parent)) in events[i + 1 :], f"{p.parent} not fsynced after the rename"
    # the metrics log is the one file appended to: resume cuts it back to the last state; the manifest covers it
    assert appended == ["metrics.jsonl"]


def test_the_manifest_lists_every_file_and_sha256sum_agrees(recorded_run):
    run, _ = recorded_run
    listed = manifest.read_manifest(run)
    assert set(listed) == set(run_files(run)) - {"MANIFEST.sha256"}
    assert {"config.json", "metrics.jsonl", "status.json", "summary_A.csv", "summary_C.csv"} <= set(listed)
    assert len([f for f in listed if f.startswith("checkpoints/")]) == 2 * 2 * 2 * 2
    assert len([f for f in listed if f.startswith("measurements/")]) == 2 * 2 * 2
    r = subprocess.run(
        ["sha256sum", "--check", "--strict", "--quiet", "MANIFEST.sha256"], cwd=run, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def _flip(path: Path, where: str | int = "middle") -> None:
    raw = bytearray(path.read_bytes())
    if isinstance(where, str) and where != "middle":  # flip the lowest bit of a digit after this text: still valid
        i = raw.index(where.encode()) + len(where)
        while not chr(raw[i]).isdigit():
            i += 1
    else:
        i = len(raw) // 2 if where == "middle" else where
    raw[i] ^= 0x01
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


CHECKPOINT = "checkpoints/C/layer02/final"
MEASUREMENT = "measurements/A/layer00_final.json"


@pytest.mark.parametrize(
    "rel, damage, loader",
    [
        (f"{CHECKPOINT}/sae_weights.safetensors", _truncate, "measure"),
        (f"{CHECKPOINT}/sae_weights.safetensors", _flip, "measure"),
        (f"{CHECKPOINT}/cfg.json", lambda p: _flip(p, '"lambda": '), "measure"),
        (f"{CHECKPOINT}/cfg.json", _truncate, "measure"),
        (MEASUREMENT, lambda p: _flip(p, '"mse": '), "load_run"),  # no other field would give it away
        (MEASUREMENT, lambda p: _flip(p, '"sorted_importance": '), "load_run"),
        (MEASUREMENT, _truncate, "load_run"),
        ("summary_A.csv", lambda p: _flip(p, "\n0,"), "load_run"),
        ("metrics.jsonl", lambda p: _flip(p, '"loss": '), "load_run"),
        ("config.json", _truncate, "load_run"),
    ],
)
def test_a_damaged_file_is_named_on_load_and_nothing_is_overwritten(tmp_path, recorded_run, lm, rel, damage, loader):
    run = shutil.copytree(recorded_run[0], tmp_path / "run")
    damage(run / rel)
    before = run_files(run)
    with pytest.raises(BadFile) as e:
        if loader == "measure":
            measure_run(run, progress=False, model=lm)
        else:
            load_run(run, snapshots=None)
    assert str(run / rel) in str(e.value) and "\n" not in str(e.value)
    assert run_files(run) == before


def test_a_damaged_manifest_is_named_and_a_flipped_digest_names_its_file(tmp_path, recorded_run, lm):
    run = shutil.copytree(recorded_run[0], tmp_path / "run")
    man = layout.run_manifest(run)
    text = man.read_text()
    line = next(x for x in text.splitlines() if x.endswith(MEASUREMENT))
    man.write_text(text.replace(line, "zz" + line[2:]))
    with pytest.raises(BadFile, match=f"{man}, line \\d+, is not"):
        load_run(run, snapshots=None)
    digit = "0" if line[0] != "0" else "1"
    man.write_text(text.replace(line, digit + line[1:]))
    with pytest.raises(BadFile, match=f"{run / MEASUREMENT} does not match its manifest sha256"):
        load_run(run, snapshots=None)


def test_the_command_line_names_the_damaged_file_in_one_line(tmp_path, recorded_run, capsys):
    run = shutil.copytree(recorded_run[0], tmp_path / "run")
    _flip(run / MEASUREMENT, '"explained_variance": ')
    assert main(["figures", "--run", str(run), "--out", str(tmp_path / "figs")]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and str(run / MEASUREMENT) in lines[0] and "manifest" in lines[0]
    assert not (tmp_path / "figs").exists() or not any((tmp_path / "figs").iterdir())


def test_a_checkpoint_without_a_manifest_still_rejects_truncation(tmp_path, recorded_run):
    run = shutil.copytree(recorded_run[0], tmp_path / "run")
    layout.run_manifest(run).unlink()
    weights = run / CHECKPOINT / "sae_weights.safetensors"
    _truncate(weights)
    with pytest.raises(BadFile, match=f"{weights} is not a readable safetensors file"):
        load_checkpoint(run / CHECKPOINT)


# ---- the resumable state -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def whole(tmp_path_factory, tiny_model, corpus, lm):
    return Trainer(
        small_cfg(tiny_model, corpus), tmp_path_factory.mktemp("whole") / "run", progress=False, model=lm
    ).run()


def _newest_unit(gen: Path) -> Path:
    return gen / train_state.unit_file("C/layer02")


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda gen: _flip(_newest_unit(gen)), "C_layer02.safetensors does not match its sha256"),
        (lambda gen: _truncate(_newest_unit(gen)), "C_layer02.safetensors does not match its sha256"),
        (lambda gen: _newest_unit(gen).unlink(), "C_layer02.safetensors"),
        (lambda gen: _truncate(gen / "trainer.json"), "trainer.json"),
        (lambda gen: _flip(gen / "trainer.json", '"index": '), "trainer.json"),  # still valid JSON
        (lambda gen: _flip(gen / "trainer.json", '"torch_rng": ['), "trainer.json"),
        (lambda gen: _flip(gen / train_state.STREAM_FILE), "stream_seen.bin does not match its sha256"),
    ],
)
def test_a_damaged_state_resumes_from_the_previous_generation_unchanged(
    tmp_path, tiny_model, corpus, lm, whole, capsys, damage, named
):
    cfg, run = small_cfg(tiny_model, corpus), tmp_path / "run"
    with pytest.raises(KeyboardInterrupt, match="state saved"):
        Trainer(cfg, run, progress=False, model=lm).run(stop_after_step=6)
    assert train_state.intact_steps(run) == [6, 4]
    damage(train_state.generation_dir(run, 6))
    capsys.readouterr()
    Trainer(cfg, run, progress=False, model=lm).run(resume=True)
    err = capsys.readouterr().err
    assert f"training state {train_state.generation_dir(run, 6)} is truncated or corrupted" in err and named in err
    assert run_files(run) == run_files(whole)  # resumed from step 4: the same weights, log, manifest


# ---- the manifest records what was written, not what is on disk later ------------------------------------------------
def test_a_file_damaged_after_it_was_listed_is_never_re_blessed(tmp_path, tiny_model, corpus, lm):
    """Later writers (a resumed run's next snapshot, a measurement of other trials) update only the entries of
    the files they write: a checkpoint or log damaged in between still fails its check afterwards."""
    cfg, run = small_cfg(tiny_model, corpus), tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, run, progress=False, model=lm).run(stop_after_step=6)
    early = run / "checkpoints/A/layer00/1.024k/sae_weights.safetensors"
    _flip(early)
    Trainer(cfg, run, progress=False, model=lm).run(resume=True)  # snapshot "final" rewrites the manifest
    assert manifest.verify_manifest(run) == [f"{early} does not match its manifest sha256 (truncated or corrupted)."]
    _flip(early)  # repaired; now the log is damaged, and trial C alone is measured
    _flip(run / "metrics.jsonl", '"loss": ')
    measure_run(run, trials=["C"], progress=False, model=lm)
    Trainer(cfg, run, progress=False, model=lm).run(resume=True)  # already complete: touches nothing
    assert manifest.verify_manifest(run) == [
        f"{run / 'metrics.jsonl'} does not match its manifest sha256 (truncated or corrupted)."
    ]


def test_update_manifest_with_a_relative_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Path("runs/r")
    (run / "sub").mkdir(parents=True)
    (run / "a.txt").write_text("a")
    (run / "sub" / "b.txt").write_text("b")
    manifest.write_manifest(run)
    (run / "a.txt").write_text("changed, not by the writer below")
    (run / "sub" / "b.txt").write_text("rewritten")
    (run / "c.txt").write_text("new")
    listed = manifest.update_manifest(run, [run / "sub" / "b.txt", "c.txt"])
    assert sorted(listed) == ["a.txt", "c.txt", "sub/b.txt"]
    assert manifest.verify_manifest(run) == [
        f"{run / 'a.txt'} does not match its manifest sha256 (truncated or corrupted)."
    ]


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_created_files_honour_the_umask(tmp_path, tiny_model, corpus, lm, capsys, umask, file_mode, dir_mode):
    """Issue 21, item 7: run folders, measurements, exports and figures get the modes any other tool would give
    them under the umask (mkstemp and mkdtemp alone make 0600 files and 0700 folders, unreadable to a colleague)."""
    old = os.umask(umask)
    try:
        run = tmp_path / "run"
        cfg = SAETrainConfig.from_profile(
            "embedded",
            model=str(tiny_model),
            dataset=str(corpus),
            layers=[0],
            trials=["A"],
            d_sae=32,
            tokens=512,
            batch_tokens=256,
            context=64,
            n_snapshots=1,
            measure_tokens=512,
        )
        Trainer(cfg, run, progress=False, model=lm).run()
        measure_run(run, progress=False, model=lm)
        assert main(["export", "--run", str(run), "--to", str(tmp_path / "export")]) == 0, capsys.readouterr().err
        assert main(["figures", "--run", str(run), "--out", str(tmp_path / "figs")]) == 0, capsys.readouterr().err
    finally:
        os.umask(old)
    made = [p for p in tmp_path.rglob("*") if p.name != ".lock"]
    assert len([p for p in made if p.suffix == ".png"]) >= 3 and (tmp_path / "export" / "README.md").is_file()
    wrong = {
        str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777)
        for p in made
        if p.stat().st_mode & 0o777 != (dir_mode if p.is_dir() else file_mode)
    }
    assert not wrong, wrong
