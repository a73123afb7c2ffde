"""Issue 21, item 1: every `kdsae` command of the README parses with today's command line, every `kdsae run` line's
parameters pass the chapter's checks, and a line that would not fit the test budget (a chapter re-running the
paper-profile sweep, or measuring the published checkpoints from the hub) says in its comment that it is long.
Nothing is executed."""

from __future__ import annotations

import re
import shlex

import pytest

from kdsae_core.book import param_rules
from kdsae_core.cli import run as run_cmd
from kdsae_core.cli.main import build_parser
from kdsae_core.common import paths

README = paths.REPO_ROOT / "README.md"


def readme_commands() -> list[tuple[list[str], str]]:
    """(arguments after `kdsae`, the line's comment) for every kdsae line of the README's bash blocks."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.splitlines():
            code, _, comment = line.partition("  #")
            words = shlex.split(code)
            for i, w in enumerate(words):
                if w.endswith("/kdsae") or w == "kdsae" or w == "kdsae_core.cli":
                    found.append((words[i + 1 :], comment.strip()))
                    break
    return found


def test_the_readme_has_kdsae_commands():
    verbs = {args[0] for args, _ in readme_commands() if args}
    assert {"run", "toy", "train", "measure", "figures", "download", "theory"} <= verbs, verbs


@pytest.mark.parametrize("args, comment", readme_commands(), ids=lambda a: " ".join(a) if isinstance(a, list) else "")
def test_every_readme_command_parses(args, comment, monkeypatch):
    monkeypatch.chdir(paths.REPO_ROOT)  # the README's commands run from the repository root
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as e:
        assert e.code == 0 and "--help" in args, f"`kdsae {' '.join(args)}` does not parse"
        return
    if parsed.verb != "run" or parsed.list:
        return
    notebook = run_cmd.find_notebook(parsed.notebook)
    given, raw = run_cmd.gather(parsed)
    values = param_rules.check(notebook, given, raw)
    long_sweep = values.get("rerun") and values.get("profile", "quick") != "quick"
    from_hub = values.get("source", "local") == "hub"
    if long_sweep or from_hub:
        assert re.search(r"\blong\b", comment), (
            f"`kdsae {' '.join(args)}` runs for long (the paper grid or the hub) but its comment does not say so"
        )


def test_the_paper_grid_time_is_one_measured_figure_everywhere():
    """Issue 21, item 10: `kdsae verify --help`, the README and the book state the wall time recorded beside the
    committed paper-grid results, and no other estimate."""
    from kdsae_core.toy.profiles import paper_grid_time

    stated = paper_grid_time()
    figure = stated.split(" min wall")[0]
    assert re.fullmatch(r"\d+\.\d", figure), stated  # measured: results/toy/paper/wall.json is committed
    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["verify"].format_help().split())
    assert f"48-configuration grid: {' '.join(stated.split())}" in help_text
    readme = " ".join(README.read_text().split())
    repro = " ".join((paths.REPO_ROOT / "book" / "reproducibility.md").read_text().split())
    assert f"**{figure} min wall**" in readme and f"{figure} min (long)" in readme and f"{figure} min wall" in repro
    for stale in ("75 min", "100-186", "186 min", "about an hour"):
        assert stale not in readme and stale not in help_text and stale not in repro, stale


def test_the_gpu_needs_in_the_readme_are_the_memory_plans():
    """Issue 21, item 3: what the paper run needs on GPUs is stated from kdsae_core.sae.plan, not estimated by hand."""
    from kdsae_core.sae.plan import GB, paper_run_needs

    rows = [line for line in README.read_text().splitlines() if line.startswith("| ") and " GB + " in line]
    assert len(rows) == 3, rows
    for row, (gpus, trials) in zip(rows, [(1, 1), (1, 3), (8, 3)]):
        need = paper_run_needs(gpus, trials)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0].split()[0] == str(gpus) and cells[1].split()[0] == str(trials), row
        assert cells[2].startswith(f"{need['gpu_memory_bytes'] / GB:.0f} GB") and cells[3] == f"{need['hours']:.1f}"
        assert ("does not fit" in cells[2]) == (not need["fits"]), row
        assert cells[4] == f"{need['checkpoint_bytes'] / GB:.0f} GB + {need['state_bytes'] / GB:.0f} GB", row


def test_cuda_asked_for_on_a_cpu_build_says_the_build_is_cpu_only(tmp_path, capsys, monkeypatch):
    """Issue 21, item 3: a CPU-only torch is told apart from a CUDA build that sees no device, before anything loads."""
    import torch

    from kdsae_core.cli.main import main
    from kdsae_core.sae.plan import cuda_unavailable

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    assert main(["train", "--profile", "paper", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "is a CPU-only build" in err and "make cuda-env" in err
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert "(CUDA 12.8) finds no CUDA device" in cuda_unavailable("cuda")
    assert cuda_unavailable("cpu") is None


def test_the_reproducibility_page_has_no_table_too_wide_for_the_page():
    """Issue 21, item 9: its four-column table hid the re-execution commands behind a scrollbar; commands are long,
    so a table of them has at most two columns."""
    page = (paths.REPO_ROOT / "book" / "reproducibility.md").read_text()
    wide = [line for line in page.splitlines() if line.startswith("|") and line.count(" | ") > 1 and "`" in line]
    assert not wide, wide[:2]
    assert "re-execute with other parameters: `.venv/bin/kdsae run 04_trial_c" in page
