"""The student edition of the book: ``python -m bertbook.classroom release book/ dist/student/``.

The instructor notebooks hold the solutions of the graded exercises between ``### BEGIN SOLUTION``
and ``### END SOLUTION`` lines, nbgrader's convention. ``release`` copies the book and in every
notebook

* replaces each solution region of a code cell by ``# YOUR CODE HERE`` / ``raise NotImplementedError()``
  (indented like the ``### BEGIN SOLUTION`` line) and of a markdown cell by ``YOUR ANSWER HERE``;
* drops ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` regions (also nbgrader's);
* clears every output and execution count;

and leaves everything else as it is, cell metadata included, so the released notebooks still
carry nbgrader's metadata. The other files of the book (markdown pages, images) are copied
unchanged, so the student edition is a complete book. The source is never written: a
destination that is the source, lies inside it or contains it is refused.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, List, Optional, Tuple

if TYPE_CHECKING:  # annotations only: nbformat is imported where a notebook is read (`_nbformat`)
    import nbformat

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
MARKDOWN_STUB = ("YOUR ANSWER HERE",)
# Never copied into the student edition: build output, editor state.
SKIP_DIRS = {"_build", ".ipynb_checkpoints", "__pycache__", ".jupyter_cache"}


class ReleaseError(ValueError):
    """The release cannot be made (unsafe destination, unbalanced solution markers, ...)."""


def _nbformat():
    """nbformat, which bertbook itself does not need: declared by the `classroom` extra."""
    try:
        import nbformat
    except ImportError as e:
        raise ImportError("the student edition reads and writes notebooks with nbformat, which is not "
                          "installed: pip install 'bertbook[classroom]' (or pip install nbformat)") from e
    return nbformat


def _source_text(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def strip_region(lines: List[str], begin: str, end: str, stub: Optional[Tuple[str, ...]],
                 where: str) -> Tuple[List[str], int]:
    """Replace every ``begin`` ... ``end`` region (marker lines included) by ``stub`` indented like
    the ``begin`` line, or drop it when ``stub`` is None. Returns (lines, number of regions)."""
    out: List[str] = []
    inside, regions = False, 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise ReleaseError(f"{where}, line {number}: {begin!r} inside another region")
            inside, regions = True, regions + 1
            indent = line[: len(line) - len(line.lstrip())]
            if stub is not None:
                out.extend(indent + s for s in stub)
        elif stripped == end:
            if not inside:
                raise ReleaseError(f"{where}, line {number}: {end!r} without {begin!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ReleaseError(f"{where}: {begin!r} without a matching {end!r}")
    return out, regions


def release_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> Tuple[nbformat.NotebookNode, int]:
    """The student version of one notebook (as read by nbformat). Returns (notebook, number of
    solution regions replaced)."""
    nb = copy.deepcopy(nb)  # the instructor's notebook stays untouched
    total = 0
    for index, cell in enumerate(nb.get("cells", [])):
        where = f"{name}, cell {index}"
        text = _source_text(cell)
        if cell.get("cell_type") in ("code", "markdown"):
            stub = CODE_STUB if cell["cell_type"] == "code" else MARKDOWN_STUB
            lines, n = strip_region(text.split("\n"), BEGIN_SOLUTION, END_SOLUTION, stub, where)
            lines, _ = strip_region(lines, BEGIN_HIDDEN, END_HIDDEN, None, where)
            total += n
            if "\n".join(lines) != text:
                cell["source"] = "\n".join(lines)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb, total


def _is_inside(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
        return True
    except ValueError:
        return False


def _files(src: Path) -> Iterable[Path]:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part in SKIP_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if path.is_file():
            yield path


def release(src: Path, dst: Path, log=print) -> int:
    """Write the student edition of ``src`` (a folder of notebooks, or one notebook) into the folder
    ``dst``. Returns the number of solution regions replaced."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ReleaseError(f"{src} does not exist")
    if dst.suffix == ".ipynb":
        raise ReleaseError(f"the destination must be a folder, not a notebook: {dst}")
    s, d = src.resolve(), dst.resolve()
    root = s if s.is_dir() else s.parent
    if d == root or _is_inside(d, root) or _is_inside(root, d):
        raise ReleaseError(
            f"refusing to write the student edition to {dst}: it overlaps the source {src} "
            f"({'the same folder' if d == root else 'one lies inside the other'}), and releasing "
            f"would overwrite or mix with the instructor notebooks. Choose a folder outside it, "
            f"e.g. dist/student/."
        )
    files = [s] if s.is_file() else list(_files(s))
    notebooks = [f for f in files if f.suffix == ".ipynb"]
    if not notebooks:
        raise ReleaseError(f"no notebooks in {src}")
    # Never overwrite an instructor notebook that someone keeps in the destination.
    for f in notebooks:
        target = d / f.relative_to(root)
        if target.exists() and BEGIN_SOLUTION in target.read_text(encoding="utf-8"):
            raise ReleaseError(f"refusing to overwrite {target}: it contains solutions (an instructor notebook?)")
    nbformat = _nbformat()
    total = 0
    for f in files:
        target = d / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        if f.suffix != ".ipynb":
            shutil.copy2(f, target)
            continue
        nb = nbformat.read(f, as_version=4)
        student, n = release_notebook(nb, str(f.relative_to(root)))
        text = nbformat.writes(student)
        if BEGIN_SOLUTION in text or END_SOLUTION in text:  # belt and braces
            raise ReleaseError(f"{f}: a solution marker survived the release")
        target.write_text(text, encoding="utf-8")
        total += n
        log(f"{f.relative_to(root)}: {n} solution region{'s' if n != 1 else ''} replaced")
    log(f"student edition of {len(notebooks)} notebook{'s' if len(notebooks) != 1 else ''} "
        f"({total} solutions removed) written to {dst}")
    return total


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bertbook.classroom",
        description="Classroom tools for the book's graded exercises.")
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("release", help="write the student edition: solutions replaced by stubs, "
                                         "outputs cleared, everything else unchanged")
    rel.add_argument("src", type=Path, help="the instructor book folder (e.g. book/) or one notebook")
    rel.add_argument("dst", type=Path, help="the folder for the student edition (e.g. dist/student/)")
    args = parser.parse_args(argv)
    try:
        release(args.src, args.dst)
    except (ReleaseError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
