"""The online paths (re-fetching a damaged file, publishing) with the real huggingface_hub client against a
loopback server that answers the Hub API (tests/fakehub.py; HF_ENDPOINT=http://127.0.0.1:PORT). No request
leaves the machine."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdsae_core.hub.published import PUBLISHED
from kdsae_core.runs import manifest
from tests.fakehub import FakeHub
from tests.hubcache import authors_file

KDSAE = Path(sys.executable).with_name("kdsae")
DUMMY_TOKEN = "hf_kdsaeDummyToken0123456789abcdefXYZ"
pytestmark = pytest.mark.slow


def test_refetch_publish_and_download_back(tmp_path):
    with FakeHub() as fh:
        files = {f"sae_layer{lay:02d}_final.pt": authors_file(lay, lay, 300_000_000) for lay in (0, 1)}
        fh.put(PUBLISHED["B"].repo, files)
        env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        env.update(
            HF_ENDPOINT=fh.url, HF_HUB_CACHE=str(tmp_path / "cache"), HF_TOKEN=DUMMY_TOKEN, HF_HUB_DISABLE_TELEMETRY="1"
        )
        outputs = []

        def kdsae(*args):
            r = subprocess.run([KDSAE, *map(str, args)], env=env, capture_output=True, text=True, timeout=300)
            outputs.extend([r.stdout, r.stderr])
            return r

        common = ["--trial", "B", "--layers", "0,1", "--snapshots", "final"]
        r = kdsae("download", *common, "--out", tmp_path / "run")
        assert r.returncode == 0, r.stderr
        assert sorted(fh.gets) == sorted(files)
        # a damaged blob in the cache is detected against its etag, reported, fetched again
        blob = next((tmp_path / "cache").glob("models--*/blobs/*"))
        good = hashlib.sha256(blob.read_bytes()).hexdigest()
        blob.write_bytes(blob.read_bytes()[:200])
        r = kdsae("download", *common, "--out", tmp_path / "run2")
        assert r.returncode == 0, r.stderr
        assert "does not match its hub etag" in r.stderr and "downloading it again" in r.stderr
        assert len(fh.gets) == 3 and hashlib.sha256(blob.read_bytes()).hexdigest() == good == blob.name

        # publish: one commit in the exported layout, with a model card the hub validates
        r = kdsae("publish", "--run", tmp_path / "run", "--repo", "me/tiny-run")
        assert r.returncode == 0, r.stderr
        hosted = fh.repos["me/tiny-run"]["main"]
        assert {
            "MANIFEST.sha256",
            "README.md",
            "config.json",
            "checkpoints/B/layer01/final/cfg.json",
            "checkpoints/B/layer01/final/sae_weights.safetensors",
        } <= set(hosted)
        listed = manifest.parse_manifest(hosted["MANIFEST.sha256"].decode(), "hosted")
        assert listed == {
            n: hashlib.sha256(d).hexdigest()
            for n, d in hosted.items()
            if n not in ("MANIFEST.sha256", ".gitattributes")
        }
        assert fh.cards and fh.cards[-1]["library_name"] == "saelens"
        # the same revision again: refused without --force, nothing changes
        head = fh.commits["me/tiny-run"]["main"]
        r = kdsae("publish", "--run", tmp_path / "run", "--repo", "me/tiny-run")
        assert r.returncode == 2 and "already holds" in r.stderr and "--force" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and fh.commits["me/tiny-run"]["main"] == head
        r = kdsae("publish", "--run", tmp_path / "run2", "--repo", "me/tiny-run", "--force")
        assert r.returncode == 0, r.stderr
        assert fh.commits["me/tiny-run"]["main"] != head
        # a new branch is not an overwrite
        r = kdsae("publish", "--run", tmp_path / "run", "--repo", "me/tiny-run", "--revision", "v2")
        assert r.returncode == 0, r.stderr

        # and it downloads back as the same run
        r = kdsae("download", "--repo", "me/tiny-run", "--out", tmp_path / "back")
        assert r.returncode == 0, r.stderr
        for p in (tmp_path / "run" / "checkpoints").rglob("sae_weights.safetensors"):
            twin = tmp_path / "back" / p.relative_to(tmp_path / "run")
            assert twin.read_bytes() == p.read_bytes()
        assert manifest.verify_manifest(tmp_path / "back") == []

        # the token was sent to the hub, and shown nowhere
        assert f"Bearer {DUMMY_TOKEN}" in fh.auth
        texts = outputs + [
            p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and "cache" not in p.parts
        ]
        assert not any(DUMMY_TOKEN in t for t in texts)
