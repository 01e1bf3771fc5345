"""Open every page of the built book in headless Chromium with the network blocked, screenshot it,
and fail on anything a reader offline would see broken:

* a request to anything but a local file (the request is blocked and named),
* a JavaScript error or a console error,
* an image that did not load, or a Python traceback in the page,
* a bertviz view (chapter 8) with no drawn SVG (its SVG elements are counted).

    jupyter-book build .                       # first build the book
    python scripts/check_rendered_book.py      # then check it (Debian's `chromium`, Python's `playwright`)

Without Chromium it prints why and skips (exit status 0); screenshots go to _build/screenshots/.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import List, Tuple
from urllib.parse import urlparse

# The flags this machine's Chromium needs headless as root, and no background calls home.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
# What a cell that raised leaves in the page (myst-nb renders error outputs as "output traceback").
TRACEBACK_MARKERS = ("Traceback (most recent call last)", 'class="output traceback', 'class="output error')
LOCAL_SCHEMES = ("file", "data", "blob", "about")
# Per bertviz view: the number of elements drawn inside its SVGs (0 when its script did not run).
COUNT_VIEWS = """() => Array.from(document.querySelectorAll('div[id^="bertviz-"]'))
    .map(view => [view.id, view.querySelectorAll('svg *').length])"""
BROKEN_IMAGES = """() => Array.from(document.images)
    .filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.getAttribute('src'))"""


def is_local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in LOCAL_SCHEMES or parsed.hostname in ("localhost", "127.0.0.1")


def check_page(context, page_path: Path, shots: Path) -> Tuple[List[str], int]:
    """Load one page: the problems found (none: the page is fine) and its number of bertviz views."""
    problems: List[str] = []
    name = page_path.name
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and problems.append(f"{name}: console error: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"{name}: JavaScript error: {e}"))
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    page.wait_for_timeout(500)  # let the views' scripts finish drawing
    html = page.content()
    problems += [f"{name}: contains {m!r}" for m in TRACEBACK_MARKERS if m in html]
    problems += [f"{name}: image did not load: {src}" for src in page.evaluate(BROKEN_IMAGES)]
    views = page.evaluate(COUNT_VIEWS)
    problems += [f"{name}: bertviz view {view_id} drew nothing (0 SVG elements)" for view_id, n in views if n == 0]
    if "requirejs(" in html and not views:
        problems.append(f"{name}: calls requirejs( but holds no bertviz view")
    page.screenshot(path=str(shots / (page_path.stem + ".png")))
    page.close()
    if views:
        print(f"     {name}: {len(views)} bertviz view(s), SVG elements {[n for _, n in views]}")
    return problems, len(views)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--html", default="_build/html", help="the built book's html folder")
    ap.add_argument("--min-views", type=int, default=1,
                    help="fail unless the book holds at least this many bertviz views in all")
    args = ap.parse_args()
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        print("SKIPPED: no Chromium on this machine (Debian: apt-get install chromium); the rendered book "
              "was not checked")
        return 0
    from playwright.sync_api import sync_playwright

    root = Path(args.html)
    pages = sorted(root.glob("book/*.html"))
    if (root / "index.html").exists():
        pages.insert(0, root / "index.html")
    if not pages:
        print(f"no pages under {root}: build the book first (jupyter-book build .)")
        return 2
    shots = root.parent / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    problems: List[str] = []
    blocked: List[str] = []
    total_views = 0
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 2400}, service_workers="block")

        def route(r):  # the network is off: only local files load
            if is_local(r.request.url):
                r.continue_()
            else:
                blocked.append(r.request.url)
                r.abort("internetdisconnected")

        context.route("**/*", route)
        for page_path in pages:
            before = len(blocked)
            found, views = check_page(context, page_path, shots)
            found += [f"{page_path.name}: requested {url}" for url in blocked[before:]]
            total_views += views
            print(("FAIL " if found else "ok   ") + str(page_path.relative_to(root)))
            problems += found
        browser.close()
    if total_views < args.min_views:
        problems.append(f"the book holds {total_views} bertviz view(s), expected at least {args.min_views}")
    print("\n".join(problems) if problems else f"{len(pages)} pages offline: no request off this machine, no "
          f"JavaScript error, no missing image or traceback, every bertviz view drawn; screenshots in {shots}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
