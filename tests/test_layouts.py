"""Reading `.pt` SAE checkpoints (kdsae_core/hub/layouts.py): every supported layout folds into kdsae's SAE with
identical outputs; anything else, a wrong shape, a damaged file or a pickle that would run code is refused with
one sentence naming the file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdsae_core.common.errors import BadFile
from kdsae_core.hub import layouts
from kdsae_core.sae.model import SAE
from tests.hubcache import authors_file, authors_forward, authors_state, pt_bytes, to_saelens

FOLD_TOL = 1e-6  # max |difference| of z and x_hat, evaluated in float64 (float32 weights rounded once)


def _sae64(ck: layouts.PtCheckpoint) -> SAE:
    sae = SAE(ck.d_in, ck.d_sae, dtype=torch.float64)
    sae.load_tensors({k: v.double() for k, v in ck.tensors.items()})
    return sae


def _x(d_in: int, n: int = 256) -> torch.Tensor:
    return torch.randn(n, d_in, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * 2


def _write(tmp_path: Path, obj, name: str = "sae.pt") -> Path:
    path = tmp_path / name
    path.write_bytes(pt_bytes(obj) if not isinstance(obj, bytes) else obj)
    return path


@pytest.mark.parametrize("wrap", ["authors-file", "model_state", "bare", "module-prefix", "bf16"])
def test_authors_layout_folds_b_pre_exactly(tmp_path, wrap):
    state = authors_state(1, d_in=24, d_sae=40)
    if wrap == "authors-file":
        path = _write(tmp_path, authors_file(1, layer=3, tokens=50_000_000, d_in=24, d_sae=40), "a.pt")
    elif wrap == "model_state":
        path = _write(tmp_path, {"model_state": state})
    elif wrap == "bare":
        path = _write(tmp_path, state)
    elif wrap == "module-prefix":
        path = _write(tmp_path, {"state_dict": {f"module.{k}": v for k, v in state.items()}})
    else:  # the authors train in bf16: the fold must use the stored values exactly
        state = {k: v.to(torch.bfloat16) for k, v in state.items()}
        path = _write(tmp_path, {"model_state": state})
    ck = layouts.load_pt(path)
    assert (ck.layout, ck.d_in, ck.d_sae) == ("authors", 24, 40)
    assert all(t.dtype == torch.float32 for t in ck.tensors.values())
    x = _x(24)
    z_ref, xhat_ref = authors_forward(state, x)
    sae = _sae64(ck)
    with torch.no_grad():
        z = sae.encode(x)
        assert (z - z_ref).abs().max().item() <= FOLD_TOL
        assert (sae.decode(z) - xhat_ref).abs().max().item() <= FOLD_TOL
    assert int((z_ref > 0).sum()) > 0.2 * z_ref.numel()  # a real test: many latents are active
    if wrap == "authors-file":
        assert ck.extra["config"]["tokens_seen"] == 50_000_000 and len(ck.extra["stats"]) == 3
        assert "optimizer_state" not in ck.extra


def test_saelens_and_linear_pair_layouts(tmp_path):
    state = authors_state(2, d_in=16, d_sae=32)
    sl = to_saelens(state)
    ck = layouts.load_pt(_write(tmp_path, sl, "sl.pt"))
    assert ck.layout == "saelens"
    for k in sl:
        assert torch.equal(ck.tensors[k], sl[k])
    no_pre = {k: v for k, v in state.items() if k != "b_pre"}
    ck = layouts.load_pt(_write(tmp_path, {"model_state": no_pre}, "lin.pt"))
    assert ck.layout == "linear-pair"
    x = _x(16)
    z_ref, xhat_ref = authors_forward({**no_pre, "b_pre": torch.zeros(16)}, x)
    with torch.no_grad():
        sae = _sae64(ck)
        assert (sae.encode(x) - z_ref).abs().max().item() <= FOLD_TOL
        assert (sae(x) - xhat_ref).abs().max().item() <= FOLD_TOL


def test_a_new_layout_is_one_table_entry(tmp_path, monkeypatch):
    """The first author's class is not public: if the real files use other names, one Layout(...) reads them."""
    state = authors_state(3, d_in=8, d_sae=12)
    renamed = {
        "pre_bias": state["b_pre"],
        "enc.weight": state["encoder.weight"],
        "enc.bias": state["encoder.bias"],
        "dec.weight": state["decoder.weight"],
        "dec.bias": state["decoder.bias"],
    }
    path = _write(tmp_path, {"model_state": renamed})
    with pytest.raises(BadFile, match="unknown checkpoint layout"):
        layouts.load_pt(path)
    names = {
        "pre_bias": "b_pre",
        "enc.weight": "encoder.weight",
        "enc.bias": "encoder.bias",
        "dec.weight": "decoder.weight",
        "dec.bias": "decoder.bias",
    }
    authors = layouts.LAYOUTS[0]
    monkeypatch.setattr(
        layouts,
        "LAYOUTS",
        layouts.LAYOUTS
        + [
            layouts.Layout(
                "renamed",
                {k: authors.shapes[v] for k, v in names.items()},
                lambda t: authors.fold({names[k]: v for k, v in t.items()}),
                "test",
            )
        ],
    )
    ck = layouts.load_pt(path)
    z_ref, _ = authors_forward(state, _x(8))
    with torch.no_grad():
        assert (_sae64(ck).encode(_x(8)) - z_ref).abs().max().item() <= FOLD_TOL


def test_unknown_layout_lists_the_keys_found(tmp_path):
    state = authors_state(4, d_in=8, d_sae=12)
    path = _write(tmp_path, {"model_state": {**state, "threshold": torch.zeros(12)}})
    with pytest.raises(BadFile) as e:
        layouts.load_pt(path)
    msg = str(e.value)
    assert "unknown checkpoint layout" in msg and "threshold [12]" in msg and "encoder.weight [12, 8]" in msg
    assert "known layouts: authors (b_pre" in msg and "\n" not in msg
    with pytest.raises(BadFile, match=r"found keys: step, note"):
        layouts.load_pt(_write(tmp_path, {"step": 3, "note": "x"}, "no-tensors.pt"))
    with pytest.raises(BadFile, match="holds a list"):
        layouts.load_pt(_write(tmp_path, [1, 2], "list.pt"))


@pytest.mark.parametrize(
    "key,shape,match",
    [
        ("encoder.bias", (11,), r"encoder.bias has shape \[11\], expected \[12\]"),
        ("decoder.weight", (12, 8), r"decoder.weight has shape \[12, 8\], expected \[8, 12\]"),
        ("b_pre", (8, 1), r"b_pre has shape \[8, 1\], the authors layout needs 1 dimension"),
    ],
)
def test_wrong_shapes_are_named(tmp_path, key, shape, match):
    state = authors_state(5, d_in=8, d_sae=12)
    state[key] = torch.zeros(shape)
    with pytest.raises(BadFile, match=match):
        layouts.load_pt(_write(tmp_path, {"model_state": state}))


def test_non_finite_and_integer_weights_are_refused(tmp_path):
    state = authors_state(6, d_in=8, d_sae=12)
    with pytest.raises(BadFile, match="NaN or infinite"):
        layouts.load_pt(_write(tmp_path, {"model_state": {**state, "b_pre": torch.full((8,), float("nan"))}}, "n.pt"))
    with pytest.raises(BadFile, match="not a floating-point tensor"):
        layouts.load_pt(
            _write(tmp_path, {"model_state": {**state, "b_pre": torch.zeros(8, dtype=torch.int64)}}, "i.pt")
        )


def test_truncated_corrupted_and_empty_files_are_detected(tmp_path):
    data = authors_file(7, layer=0, tokens=1, d_in=16, d_sae=24)
    cut = _write(tmp_path, data[: len(data) // 2], "cut.pt")
    with pytest.raises(BadFile, match="truncated or corrupted"):
        layouts.load_pt(cut)
    flipped = bytearray(data)
    # a byte inside the tensor data (past the pickle): torch.load alone would return a wrong weight silently
    flipped[len(data) * 2 // 3] ^= 0xFF
    bad = _write(tmp_path, bytes(flipped), "flip.pt")
    torch.load(bad, weights_only=True)  # loads without complaint: this is why the CRCs are checked
    with pytest.raises(BadFile, match="corrupted"):
        layouts.load_pt(bad)
    with pytest.raises(BadFile, match="empty"):
        layouts.load_pt(_write(tmp_path, b"", "empty.pt"))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = tmp_path / "evil.pt"
    # Build the crafted file in a child process so no test-module class is involved.
    subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import os, sys, torch\n"
                "class Evil:\n"
                "    def __reduce__(self):\n"
                f"        return (os.system, ('touch {marker}',))\n"
                f"torch.save({{'model_state': Evil()}}, {str(payload)!r})\n"
            ),
        ],
        check=True,
    )
    with pytest.raises(BadFile) as e:
        layouts.load_pt(payload)
    assert "refused" in str(e.value) and "weights_only=True" in str(e.value) and "system" in str(e.value)
    assert not marker.exists()
    # The payload is live: an unsafe load (never done by kdsae) runs it.
    subprocess.run(
        [sys.executable, "-c", f"import torch; torch.load({str(payload)!r}, weights_only=False)"],
        check=True,
        capture_output=True,
    )
    assert marker.exists()
    os.remove(marker)
