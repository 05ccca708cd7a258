"""Open a built Jupyter Book in headless Chromium: every image loaded, no traceback text, maths typeset
by MathJax (no raw TeX left), no request to any host but the local test server; screenshots saved.

Usage: python tests/browser_check.py <html_dir> <page> [<page> ...]   (pages relative to html_dir)

Chromium resolves every host but 127.0.0.1/localhost to "not found" (``--host-resolver-rules``), so a
page that needs the network (a CDN MathJax, web fonts) fails here as it would offline, and the
requests it tried are listed from Chromium's performance log.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import shutil
import sys
import re
import threading
from pathlib import Path
from urllib.parse import urljoin, urlsplit

TRACEBACK_MARKERS = ("Traceback (most recent call last)", "Error Traceback", "---------------------------------------------------------------------------")
#: TeX delimiters that must not survive in a page's visible prose once MathJax has typeset it
TEX_DELIMITERS = ("\\(", "\\)", "$$", "\\[", "\\]")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
MATHJAX_TIMEOUT_S = 30

#: resolves to the MathJax state once its start-up (and the initial typesetting) is done:
#: "absent" (the page loads no MathJax), "typeset", "error: ...", "timeout" (the script never ran)
_WAIT_MATHJAX = """
const done = arguments[arguments.length - 1];
const t0 = Date.now();
(function poll() {
  const mj = window.MathJax;
  const wanted = document.querySelector('script[src*="mathjax"], script[src*="MathJax"]');
  if (!wanted) { done('absent'); return; }
  if (mj && mj.startup && mj.startup.promise) {
    mj.startup.promise.then(() => done('typeset'), e => done('error: ' + e));
    return;
  }
  if (Date.now() - t0 > %d) { done('timeout'); return; }
  setTimeout(poll, 100);
})();
""" % (MATHJAX_TIMEOUT_S * 1000 - 2000)

#: visible prose of the page: text nodes outside code, scripts and MathJax's own output
_PROSE = """
const skip = 'pre, code, script, style, textarea, .highlight, mjx-container, mjx-assistive-mml, .MathJax';
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
const parts = [];
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const el = n.parentElement;
  if (!el || el.closest(skip)) continue;
  if (!el.offsetParent && getComputedStyle(el).position !== 'fixed') continue;  // not rendered
  parts.push(n.nodeValue);
}
const untypeset = Array.from(document.querySelectorAll('.math')).filter(
  e => !e.querySelector('mjx-container') && !e.closest('pre, code')).map(e => e.textContent.slice(0, 80));
return [parts.join(' '), untypeset, document.querySelectorAll('mjx-container').length];
"""


def _chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        raise RuntimeError("chromium and chromedriver are needed (Debian packages chromium, chromium-driver); run make browser")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1400,1800",
              "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def external_requests(urls: list[str]) -> list[str]:
    """The URLs among ``urls`` that go to a network host other than the local server."""
    out = []
    for u in urls:
        parts = urlsplit(u)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.hostname not in LOCAL_HOSTS:
            out.append(u)
    return out


def raw_tex(text: str) -> list[str]:
    """Excerpts of ``text`` around TeX delimiters (maths MathJax did not typeset)."""
    hits = []
    for d in TEX_DELIMITERS:
        i = text.find(d)
        if i >= 0:
            hits.append(f"{d!r} in ...{text[max(0, i - 40): i + 40]}...".replace("\n", " "))
    return hits


def _requested_urls(drv) -> list[str]:
    urls = []
    try:
        for entry in drv.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                urls.append(msg["params"]["request"]["url"])
    except Exception:  # older drivers without the performance log: what the page itself saw
        urls = drv.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    return urls


def _resolve_redirect(html_dir: Path, page: str) -> str:
    """The page a ``<meta http-equiv="refresh">`` page (jupyter-book's root index.html) leads to."""
    f = html_dir / page
    m = re.search(r'http-equiv="refresh"[^>]*url=([^"\']+)', f.read_text(errors="replace")[:2000], re.I) if f.is_file() else None
    return urljoin(page, m.group(1).strip()) if m else page


@contextlib.contextmanager
def serve(html_dir: Path):
    """A plain static server of ``html_dir`` on a free local port; yields its base URL (``http://127.0.0.1:P/``)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output readable
            pass

    handler = functools.partial(Quiet, directory=str(Path(html_dir).resolve()))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def check(html_dir: Path, pages: list[str], shots: Path) -> list[dict]:
    """Return one record per page; raise AssertionError listing every broken image, traceback, raw TeX
    and non-local request over all pages."""
    html_dir = Path(html_dir).resolve()
    shots.mkdir(parents=True, exist_ok=True)
    with serve(html_dir) as base:
        return _check(html_dir, pages, shots, base)


def _check(html_dir: Path, pages: list[str], shots: Path, base: str) -> list[dict]:
    drv = _chrome()
    drv.set_script_timeout(MATHJAX_TIMEOUT_S)
    out, failures = [], []
    try:
        for page in pages:
            _requested_urls(drv)  # drain the log of the previous page
            drv.get(base + _resolve_redirect(html_dir, page))
            drv.implicitly_wait(2)
            mathjax = drv.execute_async_script(_WAIT_MATHJAX)
            imgs = drv.execute_script(
                "return Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth > 0]);")
            broken = [s for s, ok in imgs if not ok]
            text = drv.find_element("tag name", "body").text
            tb = [m for m in TRACEBACK_MARKERS if m in text]
            prose, untypeset, n_math = drv.execute_script(_PROSE)
            tex = raw_tex(prose) + [f"untypeset maths: {u!r}" for u in untypeset]
            external = external_requests(_requested_urls(drv))
            shot = shots / (page.replace("/", "_").replace(".html", "") + ".png")
            drv.save_screenshot(str(shot))
            rec = {"page": page, "images": len(imgs), "broken": broken, "traceback": tb, "screenshot": str(shot),
                   "title": drv.title, "mathjax": mathjax, "maths": n_math, "raw_tex": tex, "external": external}
            out.append(rec)
            if broken:
                failures.append(f"{page}: images failed to load: {broken}")
            if tb:
                failures.append(f"{page}: traceback text on the page: {tb}")
            if mathjax not in ("absent", "typeset"):
                failures.append(f"{page}: MathJax did not typeset the page ({mathjax})")
            if tex:
                failures.append(f"{page}: raw TeX left on the page (MathJax {mathjax}): {tex[:5]}")
            if external:
                failures.append(f"{page}: requests to non-local hosts (the site must work offline): {external[:10]}")
    finally:
        drv.quit()
    assert not failures, "browser check failed:\n  " + "\n  ".join(failures)
    return out


if __name__ == "__main__":
    d = Path(sys.argv[1])
    for r in check(d, sys.argv[2:], d.parent / "screenshots"):
        print(f"{r['page']}: {r['images']} images, {r['maths']} maths typeset (MathJax {r['mathjax']}), "
              f"title {r['title']!r}, screenshot {r['screenshot']}")
