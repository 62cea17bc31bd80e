"""Results -> plain dicts in the schema of SPEC §5, and strict JSON text.

Key order is fixed; non-finite numbers become null (and are counted in
``nonfinite``): ``json.dumps`` would write NaN, which is not JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..results import CheckReport, Result

SCHEMA = "gradcli/1"


def result_to_dict(result: Result, *, timing: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "command": result.quantity.value,
        "function": result.function,
        "params": dict(result.params),
        "wrt": result.wrt,
        "backend": result.backend.value,
        "dtype": result.dtype,
        "input_shape": list(result.input_shape),
        "output_shape": list(result.output_shape),
    }
    if result.wrt != "input":
        doc["wrt_shape"] = list(result.wrt_shape)
    if result.layout is not None:
        doc["layout"] = result.layout.value
    doc["shape"] = list(result.shape)
    doc["value"] = array_to_json(result.value)
    doc["output"] = array_to_json(result.output)
    doc["nonfinite"] = result.nonfinite
    if result.error is not None:
        doc["error_estimate"] = _finite_or_none(float(np.max(result.error))) if result.error.size else 0.0
        doc["evaluations"] = result.evaluations
    if result.spectrum is not None:
        doc["eigenvalues"] = spectrum_to_dict(result.spectrum)
    doc["notes"] = list(result.notes)
    if result.structure:
        doc["structure"] = list(result.structure)
    if timing:
        doc["seconds"] = round(result.seconds, 6)
    return doc


def spectrum_to_dict(spectrum) -> dict[str, Any]:
    """``hessian --eig K``: the K smallest and largest eigenvalues (ascending) and how they were found."""
    doc = {"smallest": array_to_json(spectrum.smallest), "largest": array_to_json(spectrum.largest),
           "method": spectrum.method}
    if spectrum.residual is not None:
        doc["residual"] = _finite_or_none(spectrum.residual)
        doc["hvps"] = spectrum.hvps
    return doc


def report_to_dict(report: CheckReport, *, timing: bool = True) -> dict[str, Any]:
    """``check --json`` (SPEC §5): one entry per compared backend, then the top offenders."""
    backends = []
    for c in report.backends:
        entry: dict[str, Any] = {"name": c.name, "ok": c.ok}
        if c.skipped is not None:
            entry["skipped"] = c.skipped
        else:
            entry.update({"max_abs": _finite_or_none(c.max_abs), "max_rel": _finite_or_none(c.max_rel),
                          "worst_index": list(c.worst_index), "mismatches": c.mismatches})
            if c.kink_entries:
                entry["kink_entries"] = c.kink_entries
            if timing:
                entry["seconds"] = round(c.seconds, 6)
            if c.error_estimate is not None:
                entry["error_estimate"] = _finite_or_none(c.error_estimate)
        backends.append(entry)
    top = [{"backend": e.backend, "index": list(e.index), "value": _finite_or_none(e.value),
            "reference": _finite_or_none(e.reference), "abs_error": _finite_or_none(e.abs_error),
            "rel_error": _finite_or_none(e.rel_error),
            **({} if e.error_estimate is None else {"error_estimate": _finite_or_none(e.error_estimate)})}
           for e in report.top]
    doc: dict[str, Any] = {
        "schema": SCHEMA, "command": "check", "function": report.function, "params": dict(report.params),
        "wrt": report.wrt, "dtype": report.dtype, "quantity": report.quantity.value,
    }
    if report.layout is not None:
        doc["layout"] = report.layout.value
    doc.update({"shape": list(report.shape), "reference": report.reference.value, "atol": report.atol,
                "rtol": report.rtol, "ok": report.ok, "backends": backends, "top": top, "notes": list(report.notes)})
    if timing:
        doc["reference_seconds"] = round(report.reference_seconds, 6)
    return doc


def array_to_json(array: np.ndarray) -> Any:
    """Nested lists of Python numbers; NaN and infinities become None."""
    array = np.asarray(array)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return _replace_nonfinite(array.tolist())
    return array.tolist()


def _replace_nonfinite(value):
    if isinstance(value, list):
        return [_replace_nonfinite(v) for v in value]
    return _finite_or_none(value)


def _finite_or_none(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def dumps(doc: dict[str, Any]) -> str:
    """Strict JSON (``allow_nan=False`` guards the promise), one document, newline-terminated."""
    return json.dumps(doc, allow_nan=False, separators=(", ", ": ")) + "\n"
