"""The book's Sphinx extension that makes bertviz's views work offline (book/_ext/bertviz_offline.py)."""
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
import bertviz_offline  # noqa: E402

CDN = '<script src="https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js"></script>'


def test_sources_are_installed_files_and_d3_is_v5():
    files = bertviz_offline.sources()
    assert set(files) == {"d3.v5.min.js", "jquery.min.js", "requirejs_shim.js"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in files.values())
    assert "d3js.org v5." in files["d3.v5.min.js"].read_text()[:100]
    assert "jQuery v3" in files["jquery.min.js"].read_text()[:200]


def test_rewrite_replaces_the_first_requirejs_tag_and_drops_the_others():
    body = f"<p>a</p>{CDN}<div id='bertviz-1'></div><p>b</p>{CDN}<div id='bertviz-2'></div>"
    out = bertviz_offline.rewrite(body, "../_static/bertviz")
    assert "cdnjs" not in out and "https://" not in out
    assert out.count("<script src=") == 3
    assert out.index("d3.v5.min.js") < out.index("jquery.min.js") < out.index("requirejs_shim.js") < out.index("bertviz-1")
    assert out.endswith("<div id='bertviz-2'></div>")


def test_a_page_without_a_view_is_left_alone():
    body = "<p>no views here</p>"
    assert bertviz_offline.rewrite(body, "../_static/bertviz") == body


def test_drop_duplicate_scripts_keeps_the_first_of_each_in_order():
    from sphinx.builders.html._assets import _JavaScript

    a = _JavaScript(None, body="const X = 1")
    a_again = _JavaScript("", body="const X = 1")  # the same inline script, added by another extension
    b = _JavaScript("_static/b.js")
    c = _JavaScript(None, body="const Y = 2")
    kept = bertviz_offline.drop_duplicate_scripts([a, b, a_again, c, b])
    assert kept == [a, b, c]


def test_the_shim_answers_only_what_bertviz_asks_for():
    shim = bertviz_offline.sources()["requirejs_shim.js"].read_text()
    assert "window.requirejs" in shim and "requirejs.config" in shim
    assert "jquery" in shim and "d3" in shim
