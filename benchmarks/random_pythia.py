"""A random-weight Pythia-shaped model folder: the fixture of the tests and of `gpu_smoke.py --tiny`.

Tests import it as `benchmarks.random_pythia`; benchmark scripts, run as `python benchmarks/X.py`, as
`random_pythia` (their own folder is on the path).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

from kdsae_core.data.activations import embedded_model_path

RANDOM_PYTHIA_SHAPE = dict(
    hidden_size=128,
    num_hidden_layers=6,
    num_attention_heads=4,
    intermediate_size=512,
    rotary_pct=0.25,
    max_position_embeddings=2048,
    use_parallel_residual=True,
)


def random_pythia(folder: Path, seed: int = 0, **shape) -> Path:
    """Write (once) a random-weight GPT-NeoX model of the pythia-14m shape (6 layers, d_model 128; `shape`
    overrides GPTNeoXConfig fields, e.g. num_hidden_layers=24) to `folder`, with the embedded model's tokenizer
    (no package ships the GPT-NeoX tokenizer). Not a trained model: it only exercises the Pythia code path."""
    folder = Path(folder)
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    tok = AutoTokenizer.from_pretrained(str(embedded_model_path()))
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tok), **{**RANDOM_PYTHIA_SHAPE, **shape}))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
