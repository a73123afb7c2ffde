"""Fixtures of the fault tests: the tiny model, the text, and one uninterrupted reference run (made once)."""

from __future__ import annotations

import shutil

import pytest

from benchmarks.random_pythia import random_pythia
from kdsae_core.data.text import _gensim_data

from .sae_helpers import finish, kdsae, run_files, train_args


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return random_pythia(tmp_path_factory.mktemp("models") / "random-pythia14m-shape")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "news.txt"
    shutil.copyfile(_gensim_data() / "lee_background.cor", path)
    return path


@pytest.fixture(scope="session")
def reference(tmp_path_factory, tiny_model, corpus):
    """{relative path: bytes} of the uninterrupted run (train + measure), and its folder."""
    out = tmp_path_factory.mktemp("reference") / "run"
    code, err = finish(kdsae(train_args(tiny_model, corpus, out)))
    assert code == 0, err[-3000:]
    files = run_files(out)
    assert len([f for f in files if f.endswith("sae_weights.safetensors")]) == 16
    assert len([f for f in files if f.startswith("measurements/")]) == 16
    return files, out
