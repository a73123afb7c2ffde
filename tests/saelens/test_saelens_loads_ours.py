"""Our checkpoint folders load in the real SAELens and give our outputs.

SAELens 6.x pins transformer-lens < 4, so it lives in its own environment (`make saelens-env`: .venv-saelens,
torch==2.13.0). This test runs in .venv and drives that environment's python through KDSAE_SAELENS_PYTHON
(`make test-saelens` sets it). Without it the test is skipped, unless KDSAE_REQUIRE_SAELENS=1 (then it fails).

One SAELens process loads: an exported trained run (SAE.load_from_disk), the same export as a published
repository from a hand-made Hugging Face cache (SAE.from_pretrained, HF_HUB_OFFLINE=1), and a checkpoint
converted from the authors' .pt layout. Each must reproduce kdsae's encode/decode to within 1e-6.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from benchmarks.random_pythia import random_pythia
from kdsae_core.cli import main as cli
from kdsae_core.data import activations as acts
from kdsae_core.hub.published import PUBLISHED
from kdsae_core.runs import layout
from kdsae_core.runs.checkpoints import load_checkpoint
from tests.hubcache import D_IN, authors_file, authors_forward, authors_state, hf_cache, tiny_run

DRIVER = Path(__file__).with_name("saelens_driver.py")
TOL = 1e-6  # max |difference| between SAELens' and kdsae's z and x_hat (both float32, the same operations)
REPO = "someone/tiny-kdsae"


def test_saelens_loads_our_checkpoints_with_identical_outputs(saelens_python, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": ""}
    # SAELens imports (~15 s) while the run trains: the driver waits for its job on stdin.
    with open(tmp_path / "saelens.log", "w") as log:
        sl = subprocess.Popen(
            [str(saelens_python), str(DRIVER)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            _check(sl, cache, tmp_path)
        finally:
            if sl.poll() is None:
                sl.kill()
                sl.wait()


def _check(sl: subprocess.Popen, cache: Path, tmp_path: Path) -> None:
    model_folder = random_pythia(tmp_path / "random-pythia14m-shape")
    run = tiny_run(tmp_path / "run", model_folder, model=acts.load_model(str(model_folder)), measure=False)
    export = tmp_path / "export"
    assert cli.main(["export", "--run", str(run), "--to", str(export), "--repo", REPO]) == 0
    hf_cache(cache, REPO, {str(p.relative_to(export)): p.read_bytes() for p in export.rglob("*") if p.is_file()})
    # the authors' layout, converted by `kdsae download`
    hf_cache(cache, PUBLISHED["B"].repo, {"sae_layer01_final.pt": authors_file(11, 1, 300_000_000)})
    dl = tmp_path / "dl"
    assert (
        cli.main(
            [
                "download",
                "--trial",
                "B",
                "--layers",
                "1",
                "--snapshots",
                "final",
                "--cache",
                str(cache),
                "--out",
                str(dl),
                "--model",
                str(model_folder),
            ]
        )
        == 0
    )

    folders = {
        "B_final": export / "checkpoints/B/layer01/final",
        "C_first": next((export / "checkpoints/C/layer01").iterdir()),
        "authors": layout.checkpoint_dir(dl, "B", 1, "final"),
    }
    x = torch.randn(256, D_IN, generator=torch.Generator().manual_seed(0))
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    job = {
        "x": str(tmp_path / "x.safetensors"),
        "out": str(tmp_path),
        "disk": {k: str(v) for k, v in folders.items()},
        "hub": {"hub_B_final": [REPO, "checkpoints/B/layer01/final"]},
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    stdout, _ = sl.communicate(f"{tmp_path / 'job.json'}\n", timeout=600)
    assert sl.returncode == 0 and f"done {tmp_path / 'job.json'}" in stdout, (tmp_path / "saelens.log").read_text()[
        -3000:
    ]

    folders["hub_B_final"] = folders["B_final"]
    for key, folder in folders.items():
        ours, cfg = load_checkpoint(folder)
        with torch.no_grad():
            z = ours.encode(x)
            x_hat = ours.decode(z)
        theirs = load_file(str(tmp_path / f"{key}.safetensors"))
        assert (theirs["z"] - z).abs().max().item() <= TOL, key
        assert (theirs["x_hat"] - x_hat).abs().max().item() <= TOL, key
        info = json.loads((tmp_path / f"{key}.json").read_text())
        assert info["class"] == "StandardSAE" and info["sae_lens"].startswith("6.")
        meta = info["cfg"]["metadata"]
        # SAELens keeps our metadata (without metadata.sae_lens_version it would drop all of it)
        assert meta["hook_name"] == "blocks.1.hook_resid_post" and meta["prepend_bos"] is False
        assert meta["kdsae"] == cfg["metadata"]["kdsae"]
        assert (info["cfg"]["d_in"], info["cfg"]["d_sae"]) == (cfg["d_in"], cfg["d_sae"])
    # and the converted authors' checkpoint is the authors' SAE (float64 reference)
    z_ref, xhat_ref = authors_forward(authors_state(11), x)
    theirs = load_file(str(tmp_path / "authors.safetensors"))
    assert (theirs["z"].double() - z_ref).abs().max().item() <= 1e-5 * max(1.0, z_ref.abs().max().item())
    assert (theirs["x_hat"].double() - xhat_ref).abs().max().item() <= 1e-5 * max(1.0, xhat_ref.abs().max().item())


def test_the_saelens_environment_is_pinned(saelens_python):
    done = subprocess.run(
        [
            str(saelens_python),
            "-c",
            "import importlib.metadata as m; "
            "print(m.version('torch'), m.version('sae-lens'), m.version('transformer-lens'))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    torch_v, sl_v, tl_v = done.stdout.split()
    assert torch_v.split("+")[0] == "2.13.0" and sl_v.startswith("6.") and tl_v.split(".")[0] == "3"
