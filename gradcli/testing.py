"""gradcli inside a project's own pytest suite, without a subprocess::

    from gradcli.testing import assert_gradients, assert_matches_baseline

    def test_my_layer_backward():
        assert_gradients("model.py:loss", input=x, target=t, wrt="input")

    def test_gradients_did_not_move():
        assert_matches_baseline("model.py:loss", "baselines/loss.json", input=x, target=t)

Both raise ``AssertionError`` whose message is gradcli's report as plain
text (the backends' table and the worst entries; the baseline's moved
arguments), so pytest shows exactly what ``gradcli check`` would print.
``assert_certified`` does the same for ``gradcli certify``'s rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checking import baseline as _baseline
from .compute.solve import library_call
from .checking.full import default_reference
from .checking.model import check
from .io.files import write_text
from .render.models import render_model
from .render.ci import plain_text, render_baseline


def assert_gradients(function: str, **options: Any):
    """Check ``function``'s derivatives across backends (the keywords of
    :func:`gradcli.check`); raise AssertionError with the report on a mismatch.
    Returns the report when every backend agrees."""
    report = check(function, **options)
    if report.ok is None:
        raise AssertionError("gradcli check compared nothing: every backend but the reference was skipped\n"
                             + plain_text(render_model(report, timing=False)))
    if not report.ok:
        raise AssertionError("gradcli check found a mismatch\n" + plain_text(render_model(report, timing=False)))
    return report


def assert_certified(function, input=None, **options: Any):
    """Certify ``function`` (the keywords of :func:`gradcli.certify`); raise AssertionError
    with the table and each failure's reproducer when a property fails, or when nothing
    could run. Returns the report when every property is ok or skipped."""
    from .certify.run import certify
    from .render.certify import render_certify

    report = certify(function, input, **options)
    if report.ok is not True:
        head = "gradcli certify found failing properties" if report.ok is False else \
            "gradcli certify ran nothing: every property was skipped"
        raise AssertionError(head + "\n" + plain_text(render_certify(report, timing=False), soft_wrap=True))
    return report


def fingerprint(function: str, *, seed: int = 0, **options: Any) -> dict:
    """The baseline fingerprint of ``function`` at the given arrays (see :mod:`gradcli.baseline`)."""
    problem, backend_options, run = library_call(function, options, ("max_memory",))
    kw = {"max_memory": run["max_memory"]} if "max_memory" in run else {}
    from .problem.plan import DEFAULT_MAX_MEMORY

    return _baseline.fingerprint([problem], backend=default_reference(), seed=seed,
                                 max_memory=kw.get("max_memory", DEFAULT_MAX_MEMORY))


def save_baseline(function: str, path: str | Path, **options: Any) -> dict:
    """Store ``function``'s fingerprint in ``path`` (JSON), as ``check --save-baseline`` does."""
    document = fingerprint(function, **options)
    write_text(Path(path), _baseline.dumps(document), "baseline")
    return document


def assert_matches_baseline(function: str, path: str | Path, **options: Any):
    """Recompute the fingerprint and compare it with ``path``; raise AssertionError
    naming the arguments whose gradients moved. A missing file is saved and the
    assertion fails once, so a new baseline is always looked at and committed."""
    path = Path(path)
    if not path.exists():
        save_baseline(function, path, **options)
        raise AssertionError(f"no gradient baseline at {path}: saved the current one there; commit it and rerun")
    comparison = _baseline.compare(str(path), _baseline.load(str(path)), fingerprint(function, **options))
    if not comparison.ok:
        raise AssertionError("gradients moved from the baseline\n" + plain_text(render_baseline(comparison)))
    return comparison
