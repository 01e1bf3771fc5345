"""Open every page of the built book in headless Chromium, screenshot it, and fail on a missing
image or a Python traceback in the page.

    jupyter-book build .                       # first build the book
    python scripts/check_rendered_book.py      # then check it (needs Debian's `chromium`)

Screenshots go to _build/screenshots/<page>.png.
"""
from __future__ import annotations

import argparse
import html.parser
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=5000"]
# What a cell that raised leaves in the page (myst-nb renders error outputs as "output traceback").
TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'class="output traceback', 'class="output error')


class Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.extend(v for k, v in attrs if k == "src" and v)


def chromium(args: list[str], profile: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        sys.exit("chromium not found: apt-get install chromium")
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def check_page(page: Path, shots: Path, profile: str) -> list[str]:
    problems = []
    url = page.resolve().as_uri()
    dom = chromium(["--dump-dom", url], profile).stdout
    if not dom.strip():
        return [f"{page}: Chromium returned an empty page"]
    for marker in TRACEBACK_MARKERS:
        if marker in dom:
            problems.append(f"{page}: contains {marker!r}")
    parser = Images()
    parser.feed(dom)
    for src in parser.sources:
        parsed = urlparse(src)
        if parsed.scheme in ("http", "https") or src.startswith("data:"):
            continue
        target = (page.parent / unquote(parsed.path)).resolve()
        if not target.is_file() or target.stat().st_size == 0:
            problems.append(f"{page}: missing image {src}")
    shot = shots / (page.stem + ".png")
    chromium([f"--screenshot={shot}", "--window-size=1280,2400", url], profile)
    if not shot.is_file() or shot.stat().st_size < 10_000:
        problems.append(f"{page}: screenshot failed or blank")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--html", default="_build/html", help="the built book's html folder")
    args = ap.parse_args()
    root = Path(args.html)
    pages = sorted(p for p in root.glob("book/*.html"))
    if (root / "index.html").exists():
        pages.insert(0, root / "index.html")
    if not pages:
        print(f"no pages under {root}: build the book first (jupyter-book build .)")
        return 2
    shots = root.parent / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    problems = []
    with tempfile.TemporaryDirectory() as profile:
        for page in pages:
            found = check_page(page, shots, profile)
            print(("FAIL " if found else "ok   ") + str(page.relative_to(root)))
            problems += found
    print("\n".join(problems) if problems else f"{len(pages)} pages, no missing image or traceback; "
          f"screenshots in {shots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
