"""The authors' Pythia-410M reference data: loaders, figures and `kdsae fetch-reference` (served locally)."""

import functools
import http.server
import json
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kdsae_core import theory
from kdsae_core.cli import fetch_reference
from kdsae_core.cli.main import main  # noqa: E402
from kdsae_core.common import paths
from kdsae_core.common.errors import BadFile, MissingData  # noqa: E402
from kdsae_core.figures import catalog as cat  # noqa: E402
from kdsae_core.runs import reference as reference_data

from .reference import require_reference  # noqa: E402


@pytest.fixture(scope="module")
def ref():
    return require_reference()


def test_released_measurements_reproduce_the_published_layer_12_and_16_rows(ref):
    table = reference_data.reference_table(ref).set_index("layer")
    pub = reference_data.published_table().set_index("layer")
    assert list(table.index) == [12, 16]
    for layer in (12, 16):
        assert table.loc[layer, "F_alive"] == pub.loc[layer, "F_alive"]
        assert table.loc[layer, "L0"] == pytest.approx(pub.loc[layer, "L0"], abs=0.05)  # published to 0.1
        assert table.loc[layer, "alpha"] == pytest.approx(pub.loc[layer, "alpha"], abs=5e-6)
        assert table.loc[layer, "g_alpha"] == pytest.approx(pub.loc[layer, "g_alpha"], abs=0.005)
        assert table.loc[layer, "d_star_S"] == pytest.approx(pub.loc[layer, "d_star_S"], abs=0.05)
    # check values (theory page), unrounded alpha
    assert table.loc[12, "alpha"] == pytest.approx(0.99238, abs=5e-6)
    assert table.loc[12, "d_star_S"] == pytest.approx(1064.7, abs=0.05)


def test_released_training_stats(ref):
    stats = reference_data.reference_training_stats(ref)
    assert sorted(stats["layer"].unique()) == [8, 12, 16]
    assert (stats.groupby("layer").size() == 184).all()
    assert stats["tokens"].min() == 0 and stats["tokens"].max() == pytest.approx(299.9e6)
    coeff = stats.groupby("layer")["l1_coeff"].first()
    assert coeff[8] == 3e-4 and coeff[12] == coeff[16] == 8e-4
    raw = json.loads((ref / "training_stats_layer12.json").read_text())["training_curves"]
    got = stats[stats["layer"] == 12]
    np.testing.assert_array_equal(got["L0"], [r["L0"] for r in raw])
    np.testing.assert_array_equal(got["recon_loss"], [r["recon_loss"] for r in raw])
    np.testing.assert_array_equal(got["l1_loss"], [r["l1_loss"] for r in raw])


def test_released_l1_is_put_in_one_form(ref):
    """Layer 8's log (lambda 3e-4) holds the mean-form L1, layers 12 and 16 (lambda 8e-4) the sum form. At the
    first logged step about half of every SAE's 32,768 latents fire: |z| per active latent (L1 in the sum form
    / L0) must then agree across layers, which it does only once layer 8 is multiplied by d_sae."""
    stats = reference_data.reference_training_stats(ref)
    forms = stats.groupby("layer")["l1_form"].first()
    assert forms[8] == "mean" and forms[12] == forms[16] == "sum"
    first = stats[stats["batch"] == 0].set_index("layer")
    per_active = first["l1_sum"] / first["L0"]
    assert per_active.max() / per_active.min() < 1.5, per_active.to_dict()  # 0.32, 0.33, 0.44
    as_released = first["l1_loss"] / first["L0"]
    assert as_released.max() / as_released.min() > 1e4  # one form would be wrong
    np.testing.assert_array_equal(
        stats.loc[stats["layer"] == 8, "l1_sum"], stats.loc[stats["layer"] == 8, "l1_loss"] * 32_768
    )


def test_reference_figures_plot_the_released_numbers(ref, tmp_path):
    ms, stats = reference_data.reference_measurements(ref), reference_data.reference_training_stats(ref)
    drawn = {s.key: cat.draw_reference(s.key, ms, stats, tmp_path) for s in cat.REFERENCE_FIGURES}
    for key, d in drawn.items():
        title = d.figure._suptitle.get_text()
        assert "EleutherAI/pythia-410m" in title and "d_sae 32,768" in title, key
        assert d.files["png"].stat().st_size > 20_000 and d.files["data"].exists()
    imp = drawn["pythia410m_importance"].data
    for layer in (12, 16):
        released = np.array(json.loads((ref / f"measurements_layer{layer}.json").read_text())["sorted_importance"])
        mine = imp[imp["layer"] == layer]
        assert list(mine["rank"][:100]) == list(range(1, 101)) and mine["rank"].iloc[-1] == released.size
        np.testing.assert_array_equal(mine["importance"], released[mine["rank"] - 1])
        np.testing.assert_allclose(
            mine["cumulative_share"], np.cumsum(released)[mine["rank"] - 1] / released.sum(), rtol=1e-12
        )
    floors = drawn["pythia410m_floors"].data
    at128 = floors[(floors["layer"] == 12) & (floors["width"] == 128)].iloc[0]
    assert at128["features_dropped"] / 28_665 == pytest.approx(0.88, abs=0.005)  # the paper's "loses 88%"
    m12 = ms[12]
    paper = floors[(floors["layer"] == 12) & floors["paper_width"]]
    assert list(paper["width"]) == [128, 256, 384, 512, 768, 1024]
    np.testing.assert_allclose(
        paper["predicted_floor"],
        theory.refined_floor(m12.sorted_importance, paper["width"].to_numpy(), m12.alpha),
        rtol=1e-12,
    )
    train = drawn["pythia410m_training"].data
    assert len(train) == 3 * 184


def test_without_reference_data_the_chapter_explains_itself(tmp_path):
    from kdsae_core.book.chapters import ReferenceChapter

    ch = ReferenceChapter(tmp_path / "absent", tmp_path / "out")
    assert not ch.available and "fetch-reference" in ch.missing_sentence()
    assert len(ch.published()) == 3


# ---- kdsae fetch-reference ---------------------------------------------------------------------------
@contextmanager
def serve(folder: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_offline_gives_one_clear_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    with serve(tmp_path) as url:
        pass  # the port is closed again: nothing listens there
    monkeypatch.setenv("KDSAE_REFERENCE_URL", url)
    assert main(["fetch-reference", "--out", str(tmp_path / "ref")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "could not reach" in err and "KDSAE_REFERENCE_DIR" in err
    assert not (tmp_path / "ref").exists()


def test_target_path_logic(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert fetch_reference.target_dir(None) == (tmp_path / "cache/kdsae/pythia410m_colm_erdos").resolve()
    assert fetch_reference.target_dir(tmp_path / "x") == (tmp_path / "x").resolve()
    for inside in (paths.REPO_ROOT, paths.REPO_ROOT / "results" / "reference"):
        with pytest.raises(Exception, match="inside the repository"):
            fetch_reference.target_dir(inside)
    (tmp_path / "file").write_text("")
    with pytest.raises(Exception, match="not a folder"):
        fetch_reference.target_dir(tmp_path / "file")
    assert fetch_reference.base_url("abc123").endswith("Dawar13/COLM_ERDOS_labs/abc123/results/exp2_sae")


def test_fetch_from_a_server_validates_and_writes_every_file(ref, tmp_path, monkeypatch):
    with serve(ref) as url:
        monkeypatch.setenv("KDSAE_REFERENCE_URL", url)
        assert main(["fetch-reference", "--out", str(tmp_path / "ref")]) == 0
    for name in reference_data.REFERENCE_FILES:
        assert (tmp_path / "ref" / name).read_bytes() == (ref / name).read_bytes()
    assert reference_data.reference_table(tmp_path / "ref")["F_alive"].tolist() == [28_665, 29_169]


def test_a_bad_download_replaces_nothing(ref, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(ref, mirror)
    (mirror / "measurements_layer16.json").chmod(0o644)
    (mirror / "measurements_layer16.json").write_text('{"F_alive": 3}')
    target = tmp_path / "ref"
    target.mkdir()
    (target / "measurements_layer12.json").write_text("previous")
    with serve(mirror) as url:
        monkeypatch.setenv("KDSAE_REFERENCE_URL", url)
        with pytest.raises(BadFile, match="measurements_layer16.json is not a valid reference file"):
            fetch_reference.fetch(target)
        (mirror / "training_stats_layer8.json").unlink()
        (mirror / "measurements_layer16.json").write_bytes((ref / "measurements_layer16.json").read_bytes())
        with pytest.raises(MissingData, match="HTTP 404"):
            fetch_reference.fetch(target)
    assert (target / "measurements_layer12.json").read_text() == "previous"
    assert sorted(p.name for p in target.iterdir()) == ["measurements_layer12.json"]
