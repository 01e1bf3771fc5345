"""The chapters' checks at scales other than the book's.

Every chapter asserts what its text says, and the text describes the `cpu` scale's results (the
outputs stored in the book, and the results files it compares them with). At the `gpu` scale the
models are other models, and at the `tiny` scale (seconds of training) they have learnt almost
nothing: there the same asserts would stop the chapter at its first number. So a chapter calls
`scale_checks(scale)` once: at the cpu scale it does nothing (every assert must hold); at any
other scale it says so in one line, and from then on an assert of the notebook that fails prints
one line (the check and its message) instead of stopping the chapter.

It works on the notebook's own cells (an IPython AST transformer that turns `assert test, msg`
into `if not test: report(...)`), so the chapters keep plain asserts that a reader can read.
"""
from __future__ import annotations

import ast
from typing import Any, Optional

BOOK_SCALE = "cpu"  # the scale of the book's stored outputs, which its text and asserts describe
REPORT_NAME = "_bertbook_check_failed"  # the function the rewritten asserts call


class _ReportingAsserts(ast.NodeTransformer):
    """`assert test, msg` -> `if not (test): _bertbook_check_failed("test", msg)` (msg evaluated
    only when the test fails, as assert does)."""

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        args = [ast.Constant(ast.unparse(node.test))]
        if node.msg is not None:
            args.append(node.msg)
        call = ast.Expr(ast.Call(ast.Name(REPORT_NAME, ast.Load()), args, []))
        new = ast.If(ast.UnaryOp(ast.Not(), node.test), [call], [])
        return ast.fix_missing_locations(ast.copy_location(new, node))


def _scale_name(scale: Any) -> str:
    from .configs import as_scale_config
    return as_scale_config(scale).name


def scale_checks(scale: Any = None, shell: Optional[Any] = None) -> None:
    """Set up the notebook's asserts for this run's scale ('cpu', 'gpu', 'tiny', a ScaleConfig or
    None for `default_scale()`). At the book's scale it does nothing: every assert must hold. At another scale it prints one line, and every later assert of the notebook
    that fails prints `[<scale> scale] not as at the cpu scale: <check> (<message>)` and the cell
    goes on. `shell`: the IPython shell (default: the running one); outside IPython, at another
    scale, a RuntimeError."""
    name = _scale_name(scale)
    if name == BOOK_SCALE:
        return
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython comes with Jupyter
            get_ipython = lambda: None  # noqa: E731
        shell = get_ipython()
    if shell is None:
        raise RuntimeError("scale_checks needs IPython (a notebook) at a scale other than "
                           f"{BOOK_SCALE!r}; got the {name!r} scale outside it")

    def report(check: str, message: Any = None) -> None:
        detail = "" if message is None else f" ({str(message)[:160]})"
        print(f"[{name} scale] not as at the {BOOK_SCALE} scale: {check[:160]}{detail}")

    shell.user_ns[REPORT_NAME] = report
    if not any(isinstance(t, _ReportingAsserts) for t in shell.ast_transformers):
        shell.ast_transformers.append(_ReportingAsserts())
    print(f"The {name} scale: this chapter's checks describe the {BOOK_SCALE} scale's results; here a check "
          "that does not hold prints one line and the chapter goes on.")
