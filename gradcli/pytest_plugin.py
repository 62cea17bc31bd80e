"""gradcli's pytest plugin (the ``pytest11`` entry point ``gradcli``): the
``gradients`` fixture and ``pytest --gradcli-update``::

    def test_backward(gradients):
        gradients.check("model.py:loss", input=x, target=t, wrt="param:*")

    def test_gradients_did_not_move(gradients):
        gradients.baseline("loss", "model.py:loss", input=x, target=t)

- ``gradients.check(FUNCTION, **keywords)``: :func:`gradcli.check` (the same
  keywords); a mismatch, a check that compared nothing, or a gradcli error
  fails the test with gradcli's own report as the message, never a
  traceback of gradcli's internals. Returns the report.
- ``gradients.certify(FUNCTION, **keywords)``: :func:`gradcli.certify` (the same
  keywords), failing the test with its report when a property fails or none
  could run; skipped with a reason where this gradcli has no certify.
- ``gradients.baseline(NAME, FUNCTION, **keywords)``: the gradient fingerprint
  (:mod:`gradcli.checking.baseline`) compared with
  ``tests/gradcli_baselines/NAME.json`` under pytest's rootdir. As
  pytest-regressions: a missing file is written and the test fails once (a
  new baseline is looked at and committed); with ``--gradcli-update`` a file
  whose gradients moved is rewritten and the test fails once, saying so.

Imports nothing heavy until a fixture method runs: every pytest session of a
project with gradcli installed loads this module.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

BASELINES = Path("tests") / "gradcli_baselines"
UPDATE = "--gradcli-update"


def pytest_addoption(parser) -> None:
    group = parser.getgroup("gradcli", "gradcli: gradient checks and baselines")
    group.addoption(UPDATE, action="store_true", default=False, dest="gradcli_update",
                    help="rewrite the gradient baselines (tests/gradcli_baselines/NAME.json) whose gradients moved, "
                         "as pytest-regressions' --force-regen")


class Gradients:
    """The ``gradients`` fixture's value: check, certify and baseline for one test."""

    def __init__(self, root: Path, update: bool) -> None:
        self.root, self.update = root, update

    def check(self, function: Any, **keywords: Any):
        """Check ``function``'s derivatives across backends; fail the test with the report on a mismatch."""
        from .render.ci import plain_text
        from .render.models import render_model

        report = _run(lambda: _library("check")(function, **keywords))
        if report.ok is None:
            pytest.fail("gradcli check compared nothing: every backend but the reference was skipped\n"
                        + plain_text(render_model(report, timing=False)), pytrace=False)
        if not report.ok:
            pytest.fail("gradcli check found a mismatch\n" + plain_text(render_model(report, timing=False)),
                        pytrace=False)
        return report

    def certify(self, function: Any, **keywords: Any):
        """Certify a custom op (:func:`gradcli.certify`); fail the test with its report when a property fails."""
        try:
            certify = _certify()
        except (ImportError, AttributeError):
            pytest.skip("gradients.certify: this gradcli has no certify (gradcli.certify is not importable)")
        report = _run(lambda: certify(function, **keywords))
        if report.ok is None:
            pytest.fail("gradcli certify could run no property\n" + _report_text(report), pytrace=False)
        if not report.ok:
            pytest.fail("gradcli certify found a failing property\n" + _report_text(report), pytrace=False)
        return report

    def baseline(self, name: str, function: Any, **keywords: Any):
        """Compare ``function``'s gradient fingerprint with ``tests/gradcli_baselines/NAME.json``."""
        from .checking import baseline as stored
        from .io.files import write_text
        from .render.ci import plain_text, render_baseline
        from .testing import fingerprint

        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            pytest.fail(f"gradients.baseline: {name!r} is not a file name; use letters, digits, _, - and .",
                        pytrace=False)
        path = self.root / BASELINES / f"{name}.json"
        document = _run(lambda: fingerprint(function, **keywords))
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, stored.dumps(document))
            pytest.fail(f"no gradient baseline at {path}: saved the current one there; commit it and rerun",
                        pytrace=False)
        comparison = _run(lambda: stored.compare(str(path), stored.load(str(path)), document))
        if comparison.ok:
            return comparison
        text = plain_text(render_baseline(comparison))
        if self.update:
            write_text(path, stored.dumps(document))
            pytest.fail(f"gradients moved from the baseline, and {UPDATE} rewrote {path}\n{text}", pytrace=False)
        pytest.fail(f"gradients moved from the baseline (rewrite it with pytest {UPDATE})\n{text}", pytrace=False)


@pytest.fixture
def gradients(request) -> Gradients:
    """gradcli's checks inside a test: ``gradients.check``, ``.certify`` and ``.baseline``."""
    return Gradients(Path(request.config.rootpath), bool(request.config.getoption("gradcli_update")))


def _library(name: str):
    import gradcli

    return getattr(gradcli, name)


def _certify():
    """``gradcli.certify``, the library function; ImportError or AttributeError where there is none."""
    import importlib
    import inspect

    import gradcli

    found = getattr(gradcli, "certify", None)
    if found is None or inspect.ismodule(found):
        found = importlib.import_module("gradcli.certify").certify
    return found


def _run(call):
    """``call()``; a gradcli error (bad input, a backend that could not run) fails the test with
    its one or two lines, as the command line prints them."""
    from .core.errors import GradcliError

    try:
        return call()
    except GradcliError as err:
        message = f"gradcli: {err}"
    pytest.fail(message, pytrace=False)  # (outside the except: no chain of gradcli's exceptions is shown)


def _report_text(report) -> str:
    from .render.certify import render_certify
    from .render.ci import plain_text

    return plain_text(render_certify(report, timing=False))
