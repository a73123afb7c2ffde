"""`make publish`: the built book goes to a gh-pages branch with ghp-import (against a local bare repo)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdsae_core.common.paths import REPO_ROOT

GHP = Path(sys.executable).with_name("ghp-import")


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repos(tmp_path):
    if not shutil.which("make") or not GHP.exists():
        pytest.skip("make or ghp-import not available")
    work, bare, html = tmp_path / "work", tmp_path / "bare.git", tmp_path / "html"
    git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    work.mkdir()
    git("init", "-q", cwd=work)
    git("-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "init", cwd=work)
    html.mkdir()
    (html / "index.html").write_text("<html><body>book</body></html>")
    (html / "_images").mkdir()
    (html / "_images" / "fig.png").write_bytes(b"\x89PNG fake bytes")
    return work, bare, html


def make_publish(work, **variables):
    args = ["make", "-s", "-f", str(REPO_ROOT / "Makefile"), "-C", str(work), "publish", f"GHP_IMPORT={GHP}"]
    args += [f"{k}={v}" for k, v in variables.items()]
    env = {
        "PATH": "/usr/bin:/bin",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "HOME": str(work),
    }
    return subprocess.run(args, capture_output=True, text=True, env=env)


def test_publish_pushes_the_book_to_gh_pages(repos):
    work, bare, html = repos
    r = make_publish(work, REMOTE=bare, BOOK_HTML=html)
    assert r.returncode == 0, r.stderr
    files = git("ls-tree", "-r", "--name-only", "gh-pages", cwd=bare).split()
    assert {"index.html", ".nojekyll", "_images/fig.png"} <= set(files)


def test_publish_without_a_built_book_says_so(repos):
    work, bare, html = repos
    r = make_publish(work, REMOTE=bare, BOOK_HTML=html / "missing")
    assert r.returncode != 0 and "run make book first" in r.stdout + r.stderr
