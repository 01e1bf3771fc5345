"""The benchmark results the chapters read, shipped inside the package (one JSON file each).

The scripts under `benchmarks/` write them here; chapters 5, 6, 7 and the appendix read them with

    from bertbook.results import load as load_result
    settings = load_result("pretrain_settings.json")

so a notebook opened on its own (Colab, a folder of notebooks) finds them in the installed package.
`names()` lists them; an unknown name is a FileNotFoundError that lists the available ones.
"""
from __future__ import annotations

import json
import os
from typing import Any, List

__all__ = ["RESULTS_DIR", "names", "path", "load"]

# A plain folder beside this file: the package is installed unzipped (a wheel), editable or not.
RESULTS_DIR: str = os.path.dirname(os.path.abspath(__file__))


def names() -> List[str]:
    """The result files shipped with the package, sorted (`"pretrain_settings.json"`, ...)."""
    return sorted(n for n in os.listdir(RESULTS_DIR) if n.endswith(".json"))


def path(name: str) -> str:
    """The full path of the result file `name` (with or without `.json`)."""
    if os.path.basename(name) != name or name in ("", ".", ".."):
        raise ValueError(f"a result is named by its file name alone, not {name!r}; available: {', '.join(names())}")
    file = name if name.endswith(".json") else name + ".json"
    full = os.path.join(RESULTS_DIR, file)
    if not os.path.isfile(full):
        raise FileNotFoundError(f"no result file {file!r} in {RESULTS_DIR}; available: {', '.join(names())}")
    return full


def load(name: str) -> Any:
    """The parsed JSON of the result file `name` (usually a dict)."""
    with open(path(name), encoding="utf-8") as fh:
        return json.load(fh)
