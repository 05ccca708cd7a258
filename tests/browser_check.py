"""Open a built Jupyter Book in headless Chromium: every image loaded, no traceback text, screenshots saved.

Usage: python tests/browser_check.py <html_dir> <page> [<page> ...]   (pages relative to html_dir)
"""

from __future__ import annotations

import functools
import http.server
import shutil
import sys
import threading
from pathlib import Path

TRACEBACK_MARKERS = ("Traceback (most recent call last)", "Error Traceback", "---------------------------------------------------------------------------")


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
              "--disable-dev-shm-usage", "--window-size=1400,1800"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


def check(html_dir: Path, pages: list[str], shots: Path) -> list[dict]:
    """Return one record per page; raise AssertionError on a broken image or a traceback."""
    html_dir = Path(html_dir).resolve()
    shots.mkdir(parents=True, exist_ok=True)
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output readable
            pass

    handler = functools.partial(Quiet, directory=str(html_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    drv = _chrome()
    out = []
    try:
        for page in pages:
            drv.get(base + page)
            drv.implicitly_wait(2)
            imgs = drv.execute_script(
                "return Array.from(document.images).map(i => [i.src, i.complete && i.naturalWidth > 0]);")
            broken = [s for s, ok in imgs if not ok]
            text = drv.find_element("tag name", "body").text
            tb = [m for m in TRACEBACK_MARKERS if m in text]
            shot = shots / (page.replace("/", "_").replace(".html", "") + ".png")
            drv.save_screenshot(str(shot))
            rec = {"page": page, "images": len(imgs), "broken": broken, "traceback": tb, "screenshot": str(shot),
                   "title": drv.title}
            out.append(rec)
            assert not broken, f"{page}: images failed to load: {broken}"
            assert not tb, f"{page}: traceback text on the page: {tb}"
    finally:
        drv.quit()
        server.shutdown()
    return out


if __name__ == "__main__":
    d = Path(sys.argv[1])
    for r in check(d, sys.argv[2:], d.parent / "screenshots"):
        print(f"{r['page']}: {r['images']} images, title {r['title']!r}, screenshot {r['screenshot']}")
