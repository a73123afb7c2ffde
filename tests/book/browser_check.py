"""Check the built book in a real browser: every page, every image, every internal link, no tracebacks.

Serves the HTML folder on localhost, drives headless Chromium (Debian `chromium` + `chromium-driver`)
through Selenium, and returns a list of problems (empty = all good).
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

from kdsae_core.common.errors import MissingData

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
]
SKIP_PAGES = {"genindex.html", "search.html"}
TRACEBACK_MARKERS = ("Traceback (most recent call last)",)


def find_browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise MissingData(
            "headless Chromium is not installed: `apt-get install chromium chromium-driver` "
            "(Debian packages), then run the book tests again."
        )
    return chromium, driver


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def serve(root: Path):
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextmanager
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = find_browser()
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def pages(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*.html")
        if p.name not in SKIP_PAGES and "_static" not in p.parts and "_sources" not in p.parts
    )


def check_site(root: Path, screenshots: dict[str, Path] | None = None) -> tuple[list[str], dict]:
    """Visit every page; return (problems, per-page stats {page: {"images": n, "mathjax": loaded, "formulas": n
    rendered, "raw_formulas": n left as TeX}})."""
    root = Path(root)
    if not (root / "index.html").exists():
        raise MissingData(f"no built book at {root}: run `make book` first.")
    problems, stats = [], {}
    with serve(root) as base, browser() as driver:
        for page in pages(root):
            url = urljoin(base, page)
            driver.get(url)
            images = driver.execute_script(
                "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"
            )
            stats[page] = {"images": len(images)}
            for src, ok in images:
                if not ok:
                    problems.append(f"{page}: image {src} did not load")
            stats[page].update(_formulas(driver))
            if stats[page]["mathjax"] and stats[page]["raw_formulas"]:
                problems.append(f"{page}: MathJax loaded but left {stats[page]['raw_formulas']} formulas as raw TeX")
            text = driver.execute_script("return document.body.innerText")
            if any(m in text for m in TRACEBACK_MARKERS):
                problems.append(f"{page}: notebook output holds a Python traceback")
            links = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
            for href in links:
                problems.extend(_broken_link(root, base, page, href))
            if screenshots and page in screenshots:
                screenshots[page].parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(screenshots[page]))
    return sorted(set(problems)), stats


# Waits for MathJax 2 (Hub queue) or 3 (startup promise) to finish typesetting, then counts the formulas it
# rendered and the math elements Sphinx wrote that still hold raw TeX. Without MathJax (its CDN unreachable
# offline) nothing is waited for and `mathjax` is false.
_FORMULAS_JS = r"""
const done = arguments[arguments.length - 1];
const count = () => done({
  mathjax: !!window.MathJax && !!(window.MathJax.Hub || window.MathJax.startup),
  formulas: document.querySelectorAll('.MathJax_CHTML, mjx-container').length,
  raw_formulas: Array.from(document.querySelectorAll('.math')).filter(e => /\\[(\[]/.test(e.innerText)).length,
});
if (window.MathJax && window.MathJax.Hub) { window.MathJax.Hub.Queue(count); }
else if (window.MathJax && window.MathJax.startup) { window.MathJax.startup.promise.then(count, count); }
else { count(); }
"""


def _formulas(driver) -> dict:
    driver.set_script_timeout(30)
    return driver.execute_async_script(_FORMULAS_JS)


def _broken_link(root: Path, base: str, page: str, href: str) -> list[str]:
    if not href.startswith(base):
        return []  # external links are not followed offline
    path = unquote(urlparse(href).path).lstrip("/")
    target = root / path
    if path == "" or target.is_dir():
        target = target / "index.html"
    return [] if target.exists() else [f"{page}: broken internal link to {path}"]
