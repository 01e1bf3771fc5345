"""The student edition (`python -m bertbook.classroom release`) and the graded cells of the book."""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from bertbook import classroom

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(p for p in BOOK.glob("[0-9][0-9]_*.ipynb"))
# Chapters 1-7 each end with at least one graded exercise (8, 9 and 10 need not).
GRADED_CHAPTERS = [p for p in CHAPTERS if int(p.name[:2]) <= 7]
SOLUTION_LINES = (classroom.BEGIN_SOLUTION, classroom.END_SOLUTION)


def graded(nb, kind):
    return [c for c in nb.cells if c.get("metadata", {}).get("nbgrader", {}).get(kind)]


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    dst = tmp_path_factory.mktemp("release") / "student"
    assert classroom.main(["release", str(BOOK), str(dst)]) == 0
    return dst


def test_every_chapter_has_a_graded_exercise_with_nbgrader_metadata():
    assert GRADED_CHAPTERS, "no chapters found"
    for path in GRADED_CHAPTERS:
        nb = nbformat.read(path, as_version=4)
        solutions, checks = graded(nb, "solution"), graded(nb, "grade")
        assert solutions and checks, f"{path.name}: no graded exercise"
        ids = [c.metadata["nbgrader"]["grade_id"] for c in solutions + checks]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate grade_id"
        for cell in solutions:
            assert cell.metadata["nbgrader"] == {"solution": True, "grade": False, "locked": False,
                                                 "grade_id": cell.metadata["nbgrader"]["grade_id"],
                                                 "schema_version": 3}
            assert classroom.BEGIN_SOLUTION in cell.source, f"{path.name}: solution cell without a solution"
        for cell in checks:
            meta = cell.metadata["nbgrader"]
            assert meta["locked"] and not meta["solution"] and meta["points"] > 0
            assert "bertbook.exercises import check_" in cell.source


def test_released_notebooks_contain_no_solution_and_no_output(student):
    for path in CHAPTERS:
        text = (student / path.name).read_text(encoding="utf-8")
        assert not any(marker in text for marker in SOLUTION_LINES), path.name
        nb = nbformat.read(student / path.name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
        for cell in graded(nb, "solution"):
            assert "# YOUR CODE HERE" in cell.source and "raise NotImplementedError()" in cell.source


def test_everything_else_is_identical(student):
    for path in CHAPTERS:
        teacher = nbformat.read(path, as_version=4)
        released = nbformat.read(student / path.name, as_version=4)
        assert released.metadata == teacher.metadata
        assert len(released.cells) == len(teacher.cells)
        for t, r in zip(teacher.cells, released.cells):
            assert (r.cell_type, r.metadata, r.get("id")) == (t.cell_type, t.metadata, t.get("id"))
            if classroom.BEGIN_SOLUTION not in t.source:
                assert r.source == t.source
            else:  # the lines outside the solution region survive, e.g. the `def` line
                kept = t.source.split(classroom.BEGIN_SOLUTION)[0]
                assert r.source.startswith(kept)
    # the other pages of the book come along unchanged
    assert (student / "intro.md").read_bytes() == (BOOK / "intro.md").read_bytes()


SOLUTION_CELL = {"nbgrader": {"solution": True, "grade": False, "locked": False, "grade_id": "ex", "schema_version": 3}}


def _one_cell_notebook(source, metadata=SOLUTION_CELL):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source, metadata=metadata)])


def test_the_stub_keeps_the_indentation_of_the_marker():
    nb = _one_cell_notebook("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\n\ny = 1")
    out, n = classroom.release_notebook(nb, "test")
    assert n == 1
    assert out.cells[0].source == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\ny = 1"
    assert "### BEGIN SOLUTION" in nb.cells[0].source  # the instructor's notebook is untouched


@pytest.mark.parametrize("source, problem", [
    ("### BEGIN SOLUTION\nx = 1", "without a matching"),
    ("x = 1\n### END SOLUTION", "line 2: '### END SOLUTION' without"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\nx\n### END SOLUTION\n### END SOLUTION", "inside another region"),
    ("x = 1\n### BEGIN HIDDEN TESTS\nassert x", "HIDDEN TESTS' without a matching"),
])
def test_unbalanced_markers_are_an_error_naming_the_cell(source, problem):
    with pytest.raises(classroom.ReleaseError, match="nb.ipynb, cell 0") as err:
        classroom.release_notebook(_one_cell_notebook(source), "nb.ipynb")
    assert problem in str(err.value)


def test_a_solution_outside_a_solution_cell_is_refused_as_nbgrader_would():
    nb = _one_cell_notebook("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", metadata={})
    with pytest.raises(classroom.ReleaseError, match="nb.ipynb: nbgrader's ClearSolutions refused it"):
        classroom.release_notebook(nb, "nb.ipynb")


def test_refuses_to_overwrite_the_source(tmp_path, capsys):
    book = tmp_path / "book"
    shutil.copytree(BOOK, book, ignore=shutil.ignore_patterns("_build"))
    before = {p: p.read_bytes() for p in book.rglob("*") if p.is_file()}
    for dst in (book, book / "student", tmp_path, book / "01_attention.ipynb"):
        assert classroom.main(["release", str(book), str(dst)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: refusing") or "must be a folder" in err, err
    # a single notebook into its own folder is refused as well
    assert classroom.main(["release", str(book / "01_attention.ipynb"), str(book)]) == 2
    assert "overlaps the source" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in book.rglob("*") if p.is_file()} == before


def test_refuses_to_overwrite_an_instructor_notebook_in_the_destination(tmp_path, capsys):
    dst = tmp_path / "elsewhere"
    dst.mkdir()
    shutil.copy(CHAPTERS[0], dst / CHAPTERS[0].name)
    assert classroom.main(["release", str(CHAPTERS[0]), str(dst)]) == 2
    assert "contains solutions" in capsys.readouterr().err


def test_the_command_line_entry_point(tmp_path):
    dst = tmp_path / "one"
    result = subprocess.run([sys.executable, "-m", "bertbook.classroom", "release",
                             str(CHAPTERS[0]), str(dst)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "solutions removed" in result.stdout and (dst / CHAPTERS[0].name).exists()


def _execute(nb, cwd):
    from nbclient import NotebookClient
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()


def test_released_chapter_fails_its_first_check_with_not_implemented(student):
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(student / "01_attention.ipynb", as_version=4)
    first_check = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade"))
    nb.cells = nb.cells[: first_check + 1]  # execute up to (and including) the first graded check
    with pytest.raises(CellExecutionError) as info:
        _execute(nb, student)
    msg = str(info.value)
    assert "ExerciseFailed" in msg and "not implemented yet" in msg and "NotImplementedError" in msg
    # every cell before the check ran without error: the failure is the check's
    errors = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
              and any(o.output_type == "error" for o in c.get("outputs", []))]
    assert errors == [first_check]


def test_instructor_chapter_passes_every_check(tmp_path):
    nb = nbformat.read(BOOK / "01_attention.ipynb", as_version=4)
    _execute(nb, BOOK)
    for cell in graded(nb, "grade"):
        text = "".join(o.get("text", "") for o in cell.outputs)
        assert text.startswith("✓ check_") and "cases passed" in text, text


@pytest.mark.skipif(importlib.util.find_spec("nbgrader") is None,
                    reason="nbgrader is not installed (pip install nbgrader to run this test)")
def test_nbgrader_generate_assignment_accepts_a_chapter(tmp_path, student):
    course = tmp_path / "course"
    source = course / "source" / "ch01"
    source.mkdir(parents=True)
    shutil.copy(BOOK / "01_attention.ipynb", source)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()  # traitlets' config object, in nbgrader_config.py\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.CourseDirectory.course_id = 'bertbook'\n")
    result = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "ch01", "--force"],
                            cwd=course, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    released = nbformat.read(course / "release" / "ch01" / "01_attention.ipynb", as_version=4)
    ours = nbformat.read(student / "01_attention.ipynb", as_version=4)
    # nbgrader's student version and ours have the same code
    assert [c.source for c in released.cells] == [c.source for c in ours.cells]


def test_without_nbformat_the_module_imports_and_release_says_what_to_install(tmp_path, monkeypatch, capsys):
    import importlib

    import bertbook

    monkeypatch.setitem(sys.modules, "nbformat", None)  # `import nbformat` now fails, as if not installed
    monkeypatch.delitem(sys.modules, "bertbook.classroom")
    monkeypatch.setattr(bertbook, "classroom", classroom)  # the package attribute is restored afterwards
    fresh = importlib.import_module("bertbook.classroom")  # imports: nbformat is needed only to release
    one = tmp_path / "src" / "01_x.ipynb"
    one.parent.mkdir()
    one.write_text("{}")
    with pytest.raises(ImportError, match=r"bertbook\[classroom\]"):
        fresh.release(one, tmp_path / "dst")
    assert fresh.main(["release", str(one), str(tmp_path / "dst")]) == 2
    assert "pip install 'bertbook[classroom]'" in capsys.readouterr().err


def test_without_nbgrader_release_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nbgrader.preprocessors", None)  # as if nbgrader were not installed
    with pytest.raises(ImportError, match=r"nbgrader's preprocessors.*bertbook\[classroom\]"):
        classroom.release(BOOK / "01_attention.ipynb", tmp_path / "dst")
    assert classroom.main(["release", str(BOOK / "01_attention.ipynb"), str(tmp_path / "dst")]) == 2
    assert "pip install 'bertbook[classroom]'" in capsys.readouterr().err
