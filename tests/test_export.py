"""`kdsae export` and `kdsae publish` offline: train (tiny) -> export -> load back -> identical outputs; the export
downloads back through `kdsae download --repo` from a hand-made cache; damaged or unlisted files are refused.
(Loading the export in SAELens itself: tests/saelens/.)"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from benchmarks.random_pythia import random_pythia
from kdsae_core.cli import main as cli
from kdsae_core.data import activations as acts
from kdsae_core.hub.model_card import _fmt
from kdsae_core.runs import layout, manifest
from kdsae_core.runs.checkpoints import SAELENS_FORMAT_VERSION, load_checkpoint
from kdsae_core.runs.layout import list_checkpoints
from tests.hubcache import hf_cache, tiny_run

DUMMY_TOKEN = "hf_kdsaeDummyToken0123456789abcdefXYZ"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = random_pythia(tmp_path_factory.mktemp("models") / "random-pythia14m-shape")
    model = acts.load_model(str(folder))
    return tiny_run(tmp_path_factory.mktemp("runs") / "run", folder, model=model), folder


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", DUMMY_TOKEN)


def kdsae(capsys, *args):
    rc = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def digests(folder: Path, under: str = "") -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((Path(folder) / under).rglob("*"))
        if p.is_file()
    }


def test_export_round_trip_gives_identical_outputs(trained, tmp_path, capsys):
    run, _ = trained
    to = tmp_path / "export"
    rc, out, err = kdsae(capsys, "export", "--run", run, "--to", to, "--repo", "someone/tiny-kdsae")
    assert rc == 0, err
    cks = list_checkpoints(run)
    assert len(cks) == 4  # trials B, C x 1 layer x 2 snapshots
    x = torch.randn(512, 128, generator=torch.Generator().manual_seed(0))
    for c in cks:
        ours, _ = load_checkpoint(c.folder)
        rel = c.folder.relative_to(run)
        back, cfg = load_checkpoint(
            to / rel, expected_sha256=manifest.read_manifest(to)[str(rel / "sae_weights.safetensors")]
        )
        for name, t in ours.tensors().items():
            assert torch.equal(t, back.tensors()[name])
        with torch.no_grad():
            assert torch.equal(ours.encode(x), back.encode(x)) and torch.equal(ours(x), back(x))
        assert cfg["metadata"]["sae_lens_version"] == SAELENS_FORMAT_VERSION
        assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    assert manifest.verify_manifest(to) == []
    listed = set(manifest.read_manifest(to))
    assert listed == {str(p.relative_to(to)) for p in to.rglob("*") if p.is_file()} - {"MANIFEST.sha256"}
    assert {"README.md", "config.json", "metrics.jsonl", "summary_B.csv", "summary_C.csv"} <= listed
    assert not any(n.startswith("state/") or n == "status.json" for n in listed)
    card = (to / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: saelens\n")
    assert 'SAE.from_pretrained("someone/tiny-kdsae", "checkpoints/B/layer01/final")' in card
    assert '"l1_coeff": 8e-05' in card and '"target_l0": 150.0' in card and '"d_sae": 32' in card
    m = json.loads(layout.measurement_file(run, "C", 1, "final").read_text())
    assert f"| C | 1 | final | {_fmt(m['avg_active'])} | {_fmt(m['F_alive'])} | {_fmt(m['dead'])} |" in card
    assert DUMMY_TOKEN not in card and DUMMY_TOKEN not in out + err


def test_an_export_downloads_back_as_the_same_run(trained, tmp_path, capsys):
    run, _ = trained
    to = tmp_path / "export"
    assert kdsae(capsys, "export", "--run", run, "--to", to)[0] == 0
    repo, cache = "someone/tiny-kdsae", tmp_path / "hf"
    hf_cache(cache, repo, {str(p.relative_to(to)): p.read_bytes() for p in to.rglob("*") if p.is_file()})
    back = tmp_path / "back"
    rc, out, err = kdsae(capsys, "download", "--repo", repo, "--cache", cache, "--out", back)
    assert rc == 0, err
    assert digests(back, "checkpoints") == digests(to, "checkpoints")
    assert digests(back, "measurements") == digests(to, "measurements")
    assert manifest.verify_manifest(back) == [] and not (back / "README.md").exists()
    # a selection: one trial's layer at one snapshot
    part = tmp_path / "part"
    rc, _, err = kdsae(capsys, "download", "--repo", repo, "--cache", cache, "--out", part, "--snapshots", "final")
    assert rc == 0, err
    assert {c.snapshot for c in list_checkpoints(part)} == {"final"}


def test_a_damaged_or_unlisted_checkpoint_is_not_exported(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)
    weights = layout.checkpoint_dir(run, "B", 1, "final") / "sae_weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01
    weights.write_bytes(bytes(data))
    rc, _, err = kdsae(capsys, "export", "--run", run, "--to", tmp_path / "e1")
    assert rc == 2 and "does not match its manifest sha256" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e1").exists() and not [p for p in tmp_path.iterdir() if ".export-" in p.name]
    shutil.rmtree(run)
    shutil.copytree(trained[0], run)
    shutil.copytree(layout.checkpoint_dir(run, "B", 1, "final"), layout.checkpoint_dir(run, "B", 1, "9k"))
    rc, _, err = kdsae(capsys, "export", "--run", run, "--to", tmp_path / "e2")
    assert rc == 2 and "is not listed in" in err and "layer01/9k" in err


def test_export_target_rules(trained, tmp_path, capsys):
    run = trained[0]
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    rc, _, err = kdsae(capsys, "export", "--run", run, "--to", tmp_path / "busy")
    assert rc == 2 and "pass --force" in err
    rc, _, err = kdsae(capsys, "export", "--run", run, "--to", tmp_path / "busy", "--force")
    assert rc == 2 and "not an earlier export" in err and (tmp_path / "busy" / "mine.txt").read_text() == "keep"
    rc, _, err = kdsae(capsys, "export", "--run", run, "--to", run / "inside")
    assert rc == 2 and "inside the run folder" in err
    to = tmp_path / "again"
    assert kdsae(capsys, "export", "--run", run, "--to", to)[0] == 0
    assert kdsae(capsys, "export", "--run", run, "--to", to, "--force")[0] == 0
    assert manifest.verify_manifest(to) == []


def test_publish_offline_fails_at_once(trained, tmp_path, capsys):
    run = trained[0]
    before = sorted(p.name for p in run.parent.iterdir())
    t = time.perf_counter()
    rc, out, err = kdsae(capsys, "publish", "--run", run, "--repo", "someone/tiny-kdsae")
    assert time.perf_counter() - t < 2.0
    assert rc == 2
    (line,) = err.strip().splitlines()
    assert "needs the Hugging Face hub, but HF_HUB_OFFLINE=1 is set" in line and "someone/tiny-kdsae" in line
    assert DUMMY_TOKEN not in out + err
    assert sorted(p.name for p in run.parent.iterdir()) == before  # no temporary export left
