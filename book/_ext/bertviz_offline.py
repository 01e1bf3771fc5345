"""Sphinx extension: bertviz's attention views render in the built book without a network.

A bertviz view stored in a notebook loads RequireJS from a CDN (an HTML output with one
`<script src=...require.min.js>`), and through RequireJS d3 v5 and jQuery, also from a CDN (its
JavaScript output calls `require.config({paths: ...})`, then `requirejs(["jquery", "d3"], draw)`).
The notebooks keep bertviz's output as it is, so the views work in Jupyter and on Colab; this
extension rewrites only the built pages:

* every page holding such an output gets, in place of the first RequireJS tag, three local scripts:
  d3 v5 (from the installed `mpld3` package, byte-identical to d3 5.7.0, the version bertviz asks
  for: its code needs d3 v4/v5), jQuery (from `xstatic-jquery`), and `requirejs_shim.js` (ours: it
  hands those two to bertviz's `requirejs` call); later RequireJS tags on the page are dropped;
* the three files are copied into `_static/bertviz/` of the build, after Sphinx has written
  `_static`, so no other page loads them (files in `html_static_path` would be added to every page).

A CDN reference left in a page after the rewrite is a Sphinx warning (an error under
`--warningiserror`): bertviz changed its output and this extension must follow.

It also drops scripts listed twice in a page's head: with jupyter-book 1.0.4, sphinx-thebe's inline
configuration (`const THEBE_JS_URL = ...`) appears twice on every page, and the second copy raises
"Identifier 'THEBE_JS_URL' has already been declared" in the browser (scripts/check_rendered_book.py
fails on any JavaScript error).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Dict, List

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

REQUIRE_TAG = re.compile(r'<script src="https://cdnjs\.cloudflare\.com/ajax/libs/require\.js/[0-9.]+/require\.min\.js">'
                         r"\s*</script>")
# What must not be left in a page's scripts: a script loaded from a CDN.
CDN_SCRIPT = re.compile(r'<script[^>]+src="https?://', re.IGNORECASE)
STATIC_DIR = "bertviz"


def sources() -> Dict[str, Path]:
    """The files each page with a bertviz view loads, by name, from installed packages and this folder."""
    import mpld3
    import xstatic.pkg.jquery as xjquery

    files = {"d3.v5.min.js": Path(mpld3.__file__).parent / "js" / "d3.v5.min.js",
             "jquery.min.js": Path(xjquery.BASE_DIR) / "jquery.min.js",
             "requirejs_shim.js": Path(__file__).with_name("requirejs_shim.js")}
    for name, path in files.items():
        if not path.is_file():
            raise FileNotFoundError(f"bertviz_offline: {name} not found at {path} (install mpld3 and xstatic-jquery)")
    first = files["d3.v5.min.js"].read_text(encoding="utf-8", errors="replace")[:200]
    if "v5." not in first:
        raise RuntimeError(f"bertviz_offline: {files['d3.v5.min.js']} is not d3 v5 (bertviz needs v4/v5)")
    return files


def rewrite(body: str, static_url: str) -> str:
    """`body` with the first RequireJS tag replaced by the local scripts and the others removed."""
    tags = "".join(f'<script src="{static_url}/{name}"></script>' for name in sources())
    count = 0

    def replace(match: "re.Match[str]") -> str:
        nonlocal count
        count += 1
        return tags if count == 1 else ""

    return REQUIRE_TAG.sub(replace, body)


def drop_duplicate_scripts(scripts: List[Any]) -> List[Any]:
    """The page's script entries (Sphinx's `_JavaScript`: a file name or None, and attributes such as
    an inline `body`) without repeats, in their order."""
    seen, kept = set(), []
    for script in scripts:
        # An inline script is registered with filename None or "" depending on who added it.
        key = (getattr(script, "filename", None) or None, getattr(script, "priority", None),
               tuple(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    return kept


def on_page_context(app: Sphinx, pagename: str, templatename: str, context: Dict[str, Any], doctree) -> None:
    if "script_files" in context:
        context["script_files"] = drop_duplicate_scripts(context["script_files"])
    body = context.get("body")
    if not body or ("requirejs(" not in body and not REQUIRE_TAG.search(body)):
        return  # no bertviz view on this page
    static_url = context["pathto"](f"_static/{STATIC_DIR}", 1)
    context["body"] = body = rewrite(body, static_url)
    if CDN_SCRIPT.search(body):
        logger.warning(f"bertviz_offline: {pagename} still loads a script from the network after the rewrite",
                       location=pagename)


def on_build_finished(app: Sphinx, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir) / "_static" / STATIC_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name, path in sources().items():
        shutil.copyfile(path, out / name)


def setup(app: Sphinx) -> Dict[str, Any]:
    sources()  # fail at the start of the build, not at its end, if a file is missing
    app.connect("html-page-context", on_page_context, priority=900)  # after the handlers that add scripts
    app.connect("build-finished", on_build_finished)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
