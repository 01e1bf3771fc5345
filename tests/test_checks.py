"""A chapter's asserts at scales other than the book's: one line each, the chapter goes on."""
import pytest

from bertbook.checks import scale_checks

IPython = pytest.importorskip("IPython")


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell
    sh = InteractiveShell.instance()
    saved = list(sh.ast_transformers)
    yield sh
    sh.ast_transformers[:] = saved
    sh.user_ns.pop("_bertbook_check_failed", None)


def run(shell, code):
    result = shell.run_cell(code)
    return result


def test_at_the_book_scale_every_assert_still_stops_the_cell(shell, capsys):
    scale_checks("cpu", shell=shell)
    assert capsys.readouterr().out == ""  # nothing printed: the stored outputs do not change
    result = run(shell, "x = 1\nassert x == 2, 'x is not 2'\ny = 3")
    assert isinstance(result.error_in_exec, AssertionError)
    assert "y" not in shell.user_ns or shell.user_ns.get("y") != 3


def test_at_another_scale_a_failing_assert_is_one_line_and_the_cell_goes_on(shell, capsys):
    scale_checks("tiny", shell=shell)
    assert "tiny scale" in capsys.readouterr().out
    result = run(shell, "calls = []\nx = 1\nassert x == 2, calls.append('msg') or 'x is not 2'\n"
                        "assert x == 1, calls.append('not evaluated')\ny = 3")
    assert result.error_in_exec is None
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["[tiny scale] not as at the cpu scale: x == 2 (x is not 2)"]
    assert shell.user_ns["y"] == 3
    assert shell.user_ns["calls"] == ["msg"]  # the message only when the check fails, as assert does
    # Other errors still stop the cell: only the checks are softened.
    assert isinstance(run(shell, "1 / 0").error_in_exec, ZeroDivisionError)
    scale_checks("tiny", shell=shell)  # twice: one transformer
    from bertbook.checks import _ReportingAsserts
    assert sum(isinstance(t, _ReportingAsserts) for t in shell.ast_transformers) == 1


def test_outside_ipython_another_scale_is_an_error(monkeypatch):
    import IPython as ip
    monkeypatch.setattr(ip, "get_ipython", lambda: None)
    with pytest.raises(RuntimeError, match="IPython"):
        scale_checks("tiny")
    scale_checks("cpu")  # nothing to do at the book's scale
    with pytest.raises(ValueError, match="valid scales"):
        scale_checks("bogus")
