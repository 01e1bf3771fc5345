"""book/checkpoints.json: the manifest of the checkpoints that the book's stored outputs were checked
with (nbval passes with them). A reader who downloads a pack compares its files' sha256 with it; this
test keeps it in step with the code: each stage and key is the one the chain would train today."""
import json
import os

from bertbook.pipeline import chain_keys
from bertbook.share import MANIFEST_FORMAT

BOOK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "book")


def test_the_books_manifest_names_todays_chain():
    with open(os.path.join(BOOK, "checkpoints.json")) as f:
        manifest = json.load(f)
    assert manifest["format"] == MANIFEST_FORMAT
    listed = {e["stage"]: e["key"] for e in manifest["files"]}
    assert len(listed) == len(manifest["files"])  # one checkpoint per stage
    # A failure here after a recipe's version was bumped: retrain the chain, re-execute the chapters,
    # then `python -m bertbook cache pack DIR` and copy DIR/manifest.json to book/checkpoints.json.
    assert listed == chain_keys("cpu"), {s: (listed.get(s), k) for s, k in chain_keys("cpu").items()
                                         if listed.get(s) != k}
    for e in manifest["files"]:
        assert e["file"] == f"{e['stage']}-{e['key']}.safetensors" and len(e["sha256"]) == 64 and e["bytes"] > 0
