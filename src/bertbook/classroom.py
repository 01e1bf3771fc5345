"""The student edition of the book: ``python -m bertbook.classroom release book/ dist/student/``.

The instructor notebooks hold the solutions of the graded exercises between ``### BEGIN SOLUTION``
and ``### END SOLUTION`` lines, nbgrader's convention, in cells that carry nbgrader's metadata.
``release`` copies the book and passes every notebook through nbgrader's own preprocessors, the
ones ``nbgrader generate_assignment`` uses:

* ``ClearSolutions``: each solution region of a code cell becomes ``# YOUR CODE HERE`` /
  ``raise NotImplementedError()`` (indented like the ``### BEGIN SOLUTION`` line), of a markdown
  cell ``YOUR ANSWER HERE``;
* ``ClearHiddenTests``: ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` regions are dropped;
* ``ClearOutput``: every output and execution count is cleared;

and leaves everything else as it is, cell metadata included, so the released notebooks still
carry nbgrader's metadata. Before that, the markers of every cell are checked (balanced, not
nested), so that a mistake is reported with its notebook, cell and line. The other files of the
book (markdown pages, images) are copied unchanged, so the student edition is a complete book.
The source is never written: a destination that is the source, lies inside it or contains it is
refused.
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


def check_markers(lines: List[str], begin: str, end: str, where: str) -> int:
    """The number of ``begin`` ... ``end`` regions in ``lines``; a marker without its partner, or a
    region inside another, is a ReleaseError naming ``where`` and the line."""
    inside, regions = False, 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise ReleaseError(f"{where}, line {number}: {begin!r} inside another region")
            inside, regions = True, regions + 1
        elif stripped == end:
            if not inside:
                raise ReleaseError(f"{where}, line {number}: {end!r} without {begin!r}")
            inside = False
    if inside:
        raise ReleaseError(f"{where}: {begin!r} without a matching {end!r}")
    return regions


def _preprocessors():
    """nbgrader's ClearSolutions, ClearHiddenTests and ClearOutput (declared by the `classroom` extra)."""
    try:
        from nbgrader.preprocessors import ClearHiddenTests, ClearOutput, ClearSolutions
    except ImportError as e:
        raise ImportError("the student edition is made by nbgrader's preprocessors, and nbgrader is not "
                          "installed: pip install 'bertbook[classroom]' (or pip install nbgrader)") from e
    return ClearSolutions(), ClearHiddenTests(), ClearOutput()


def release_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> Tuple[nbformat.NotebookNode, int]:
    """The student version of one notebook (as read by nbformat). Returns (notebook, number of
    solution regions replaced)."""
    total = 0
    for index, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") in ("code", "markdown"):
            lines = _source_text(cell).split("\n")
            total += check_markers(lines, BEGIN_SOLUTION, END_SOLUTION, f"{name}, cell {index}")
            check_markers(lines, BEGIN_HIDDEN, END_HIDDEN, f"{name}, cell {index}")
    nb, resources = copy.deepcopy(nb), {}  # the preprocessors work in place: the instructor's stays untouched
    for preprocessor in _preprocessors():
        try:
            nb, resources = preprocessor.preprocess(nb, resources)
        except RuntimeError as err:  # e.g. a solution region in a cell without nbgrader's metadata
            raise ReleaseError(f"{name}: nbgrader's {type(preprocessor).__name__} refused it: {err}") from err
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
