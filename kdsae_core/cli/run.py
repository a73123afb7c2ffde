"""`kdsae run NOTEBOOK [-p NAME VALUE ...] [-f params.yaml] [--out DIR]`: re-execute a chapter with other
parameters. Every value is checked against the notebook's `parameters` cell first (nothing runs on bad
input); the executed notebook, its figures and `run.json` (parameters, git commit) go to a fresh folder."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from kdsae_core.book import params as nbp
from kdsae_core.common import paths
from kdsae_core.common.errors import InvalidParameter, KdsaeError, RunFolderError
from kdsae_core.common.fileio import atomic_write_json, refuse_non_empty
from kdsae_core.runs import layout
from kdsae_core.train.settings import notebook_settings

RUN_RECORD = "run.json"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # Ctrl-C (SIGINT) already raises KeyboardInterrupt


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="re-execute a chapter notebook with checked parameters (papermill)",
        description="Execute NOTEBOOK (a path, or a chapter name such as 01_toy_validation) with "
        "papermill after checking every parameter against its `parameters` cell.",
    )
    p.add_argument("notebook", nargs="?", help="notebook path or chapter name (omit with --list for every chapter)")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a parameter value as a YAML/JSON literal: -p alpha [0.8,0.9] -p rerun true",
    )
    p.add_argument("-f", "--parameters-file", type=Path, help="YAML file of NAME: VALUE (-p overrides it)")
    p.add_argument("--out", type=Path, help="fresh output folder (default out/<chapter>-<UTC time>); never in results/")
    p.add_argument("--force", action="store_true", help="write into a non-empty --out folder")
    p.add_argument("--list", action="store_true", help="show the parameters, defaults and descriptions, run nothing")
    p.add_argument("--timeout", type=int, default=3600, help="seconds a single cell may run (default 3600)")
    p.set_defaults(func=run)


def find_notebook(name: str) -> Path:
    p = Path(name).expanduser()
    if p.is_file():
        return p.resolve()
    for cand in (paths.NOTEBOOKS / name, paths.NOTEBOOKS / f"{name}.py", paths.NOTEBOOKS / f"{name}.ipynb"):
        if cand.is_file():
            return cand
    raise InvalidParameter(f"no notebook {name!r}: give a path or one of {', '.join(chapters())}.")


def chapters() -> list[str]:
    return sorted(p.stem for p in paths.NOTEBOOKS.glob("*.py"))


def list_parameters(notebooks: list[Path]) -> str:
    out = []
    for nb in notebooks:
        try:
            params = nbp.notebook_parameters(nb)
        except KdsaeError as e:
            out.append(f"{nb.stem}: {e}")
            continue
        out.append(f"{nb.stem}  ({paths.display_path(nb)})")
        width = max((len(p.name) for p in params), default=0)
        declared = science_settings(params)
        for p in params:
            s = declared.get(p.name)
            text = f"{s.help}; {s.valid_range()}; used when rerun is true" if s else p.help
            out.append(f"  {p.name:<{width}}  = {p.default!r:<26} {text}".rstrip())
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def science_settings(params: list) -> dict:
    """{parameter: its declared setting} of an Experiment 2 chapter (one with `rerun` and the science settings of
    train/settings.py, for the trial its `trial` parameter shows); {} for other notebooks."""
    names = {p.name: p.default for p in params}
    if "rerun" not in names or "tokens" not in names:
        return {}
    declared = notebook_settings(names.get("trial"))
    return {k: s for k, s in declared.items() if k in names and k != "layers"}  # layers: also what is drawn


def gather(args) -> tuple[dict, set[str]]:
    """Parameter values from -f then -p (later wins); the names given as command-line text."""
    values = nbp.load_parameter_file(args.parameters_file) if args.parameters_file else {}
    raw = set()
    for name, text in args.parameter:
        values[name] = nbp.parse_value(text)
        raw.add(name)
    return values, raw


def output_folder(out: Path | None, notebook: Path, force: bool) -> Path:
    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        out = paths.REPO_ROOT / "out" / f"{notebook.stem}-{stamp}"
    out = Path(out).expanduser().resolve()
    if nbp.inside_results(out):
        raise RunFolderError(
            f"--out {out} is inside results/, which holds the committed results: choose another folder."
        )
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder.")
    refuse_non_empty(out, force)
    return out


def git_commit() -> dict:
    def git(*a):
        r = subprocess.run(["git", *a], cwd=paths.REPO_ROOT, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def run(args) -> int:
    if args.list:
        nbs = [find_notebook(args.notebook)] if args.notebook else sorted(paths.NOTEBOOKS.glob("*.py"))
        sys.stdout.write(list_parameters(nbs))
        return 0
    if not args.notebook:
        raise InvalidParameter("name a notebook to run (or pass --list to see every chapter's parameters).")
    notebook = find_notebook(args.notebook)
    given, raw = gather(args)
    given = nbp.absolute_paths(given)  # relative to the current folder, as every option of kdsae
    has_out = any(p.name == nbp.FIGURE_FOLDER_PARAMETER for p in nbp.notebook_parameters(notebook))
    if nbp.FIGURE_FOLDER_PARAMETER in given and has_out:
        raise InvalidParameter(
            f"set the output folder with --out, not -p {nbp.FIGURE_FOLDER_PARAMETER} (the figures go to OUT/figures)."
        )
    # torch (the toy chapter's ToyConfig checks its values): imported when a notebook runs, not for `kdsae --help`
    from kdsae_core.book import param_rules

    values = param_rules.check(notebook, given, raw)  # raises before anything runs
    out = output_folder(args.out, notebook, args.force)
    inject = {name: values[name] for name in given}  # the checked values (e.g. 3 -> 3.0 for a float)
    if has_out:
        inject[nbp.FIGURE_FOLDER_PARAMETER] = values[nbp.FIGURE_FOLDER_PARAMETER] = str(out / "figures")
    return execute(notebook, inject, values, out, args.timeout)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP during a run: raised in the main thread so that nbclient shuts its kernel down (its
    `setup_kernel` does so on any exception) and run.json says the run was stopped, as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextmanager
def _stops_as_interrupts():
    def on_signal(signum, frame):
        raise Stopped(signum)

    old = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _kill_children() -> None:
    """Kill what is left of this process's children (the kernel, in the session jupyter_client gave it, and
    whatever it started there) once the kernel's own shutdown has had its chance: a stopped run leaves no
    kernel behind."""
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid, pgid = int(stat.parent.name), int(fields[1]), int(fields[2])
        if ppid != me:
            continue
        try:
            if pgid == pid:
                os.killpg(pgid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def execute(notebook: Path, given: dict, values: dict, out: Path, timeout: int) -> int:
    import papermill  # imported when a notebook runs, so that `kdsae --help` starts without it

    out.mkdir(parents=True, exist_ok=True)
    executed = out / f"{notebook.stem}.ipynb"
    partial = out / f".{notebook.stem}.partial.ipynb"  # papermill saves after every cell; renamed at the end
    record = {
        "notebook": paths.display_path(notebook),
        "executed": executed.name,
        "parameters": values,
        "given": given,
        "git": git_commit(),
        "python": platform.python_version(),
        "papermill": papermill.__version__,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "running",
    }
    atomic_write_json(out / RUN_RECORD, record)
    start = time.perf_counter()

    def ended(status: str, **extra) -> None:
        _finish(partial, executed)
        trained = sorted(str(c.parent.relative_to(out)) for c in out.rglob(layout.CONFIG_FILE))
        record.update(
            status=status, seconds=round(time.perf_counter() - start, 1), trained=trained, html=_html(executed), **extra
        )
        atomic_write_json(out / RUN_RECORD, record)

    try:
        with _stops_as_interrupts():
            _papermill(notebook, given, partial, timeout)
    except papermill.PapermillExecutionError as e:
        ended("failed", error=f"{e.ename}: {e.evalue}")
        raise KdsaeError(
            f"{notebook.name} failed in cell {e.exec_count}: {e.ename}: {e.evalue} "
            f"(the partly executed notebook is {executed})."
        ) from None
    except KeyboardInterrupt as e:
        _kill_children()
        ended("stopped", signal=signal.Signals(getattr(e, "signum", signal.SIGINT)).name)
        raise KeyboardInterrupt(
            f"{notebook.name} was stopped ({record['signal']}) after {record['seconds']} s; the "
            f"partly executed notebook is {executed}"
        ) from None
    except BaseException:
        _kill_children()
        ended("interrupted")
        raise
    ended("ok", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    print(json.dumps(_summary(out, executed, record)))
    return 0


def _summary(out: Path, executed: Path, record: dict) -> dict:
    """What a finished run printed: where its notebook, HTML, record and trained run folders are."""
    html = record["html"] and str(out / record["html"])
    names = ("executed", "html", "record", "trained", "seconds")
    return dict(zip(names, (str(executed), html, str(out / RUN_RECORD), record["trained"], record["seconds"])))


def _papermill(notebook: Path, given: dict, partial: Path, timeout: int) -> None:
    import jupytext  # imported when a notebook runs, so that `kdsae --help` starts without it
    import papermill  # (as jupytext)

    nb = jupytext.read(notebook)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    papermill.execute_notebook(
        nb,
        str(partial),
        parameters=given,
        cwd=str(notebook.parent),
        kernel_name=nb.metadata["kernelspec"].get("name", "python3"),
        progress_bar=sys.stderr.isatty(),
        execution_timeout=timeout,
    )


def _html(executed: Path) -> str | None:
    """An HTML rendering of the executed notebook beside it (read without Jupyter); its name, or None."""
    if not executed.exists():
        return None
    import nbconvert  # imported when a notebook has run, so that `kdsae --help` starts without it
    import nbformat  # (as nbconvert)

    html, _ = nbconvert.HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    target = executed.with_suffix(".html")
    target.write_text(html, encoding="utf-8")
    return target.name


def _finish(partial: Path, executed: Path) -> None:
    if partial.exists():
        partial.replace(executed)
