"""Results -> plain dicts in the schema of SPEC §5, and strict JSON text.

Key order is fixed; non-finite numbers become null (and each one a result's
document writes as null is counted in its ``nonfinite``: the value's, the
output's, the vector's, the error estimate's): ``json.dumps`` would write
NaN, which is not JSON.

Documents are written as a stream (:func:`dump`): arrays stay NumPy arrays in
the dict and are written a chunk of about ``CHUNK`` entries at a time, so the
memory of ``--json`` does not grow with the size of ``value`` (a 128 MiB
Jacobian would otherwise become ~1.5 GB of Python lists and text). A value
that is a zero-argument callable is called when its key is reached (the total
time, known only at the end).
"""

from __future__ import annotations

import json
import io
import math
from typing import Any, Callable

import numpy as np

from ..core.options import Quantity
from ..core.results import CheckReport, Result, count_nonfinite

SCHEMA = "gradcli/1"
CHUNK = 1 << 14  # array entries turned into text at a time (~2 MB of Python objects)
_SEPARATORS = (", ", ": ")


def result_to_dict(result: Result, *, timing: bool = True, value: bool = True,
                   total_seconds: Callable[[], float] | None = None) -> dict[str, Any]:
    """The ``--json`` document; arrays stay arrays (:func:`dump` streams them).
    ``value=False`` (``--no-value``) leaves the value out; ``total_seconds``
    gives the whole run's time, read when the document's end is written."""
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
    if result.parts:  # several arguments joined in one flat vector: each one's name and shape, in order
        doc["parts"] = [{"wrt": name, "shape": list(shape)} for name, shape in result.parts]
    named = result.named() if result.quantity in (Quantity.GRAD, Quantity.VJP) else {}
    if value and named:  # one result per argument, shaped like it (as grad --per-sample and check give)
        doc["results"] = [{"wrt": name, "shape": list(a.shape), "value": a} for name, a in named.items()]
    elif value:
        doc["value"] = result.value
    doc["output"] = result.output
    if result.vector is not None:  # vjp/jvp: the vector used, so the result can be reproduced
        doc["cotangent" if result.quantity.value == "vjp" else "tangent"] = result.vector
    estimate = None
    if result.error is not None:
        estimate = float(np.max(result.error)) if result.error.size else 0.0
    # Every number this document writes as null, counted: the value's (when written), the output's, the
    # vector's and the estimate's (a -inf in the output is a null like any other).
    written = [result.output, *([result.value] if value else []), *([result.vector] if result.vector is not None else [])]
    spectrum = result.spectrum
    if spectrum is not None:
        written += [spectrum.smallest, spectrum.largest, np.asarray([] if spectrum.residual is None else [spectrum.residual])]
    doc["nonfinite"] = sum(count_nonfinite(a) for a in written) + (estimate is not None and not math.isfinite(estimate))
    if result.error is not None:
        doc["error_estimate"] = _finite_or_none(estimate)
        doc["evaluations"] = result.evaluations
    if result.spectrum is not None:
        doc["eigenvalues"] = spectrum_to_dict(result.spectrum)
    doc["notes"] = list(result.notes)
    if result.structure:
        doc["structure"] = list(result.structure)
    if timing:
        doc["seconds"] = round(result.seconds, 6)
        if total_seconds is not None:
            doc["total_seconds"] = lambda: round(total_seconds(), 6)
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
    backends, top = comparisons_to_list(report.backends, timing), entries_to_list(report.top)
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


def comparisons_to_list(comparisons, timing: bool = True) -> list[dict[str, Any]]:
    """``compare.Comparison`` values as JSON objects (a skipped one: its reason)."""
    backends = []
    for c in comparisons:
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
            if c.inconclusive is not None:  # ran, could not judge: ok null, and why
                entry["inconclusive"] = c.inconclusive
        backends.append(entry)
    return backends


def entries_to_list(entries) -> list[dict[str, Any]]:
    """``compare.Entry`` values (the worst offenders) as JSON objects."""
    return [{"backend": e.backend, "index": list(e.index), "value": _finite_or_none(e.value),
             "reference": _finite_or_none(e.reference), "abs_error": _finite_or_none(e.abs_error),
             "rel_error": _finite_or_none(e.rel_error),
             **({} if e.error_estimate is None else {"error_estimate": _finite_or_none(e.error_estimate)}),
             **({} if e.kind == "entry" else {"kind": e.kind})}
            for e in entries]


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


def dump(doc: Any, write: Callable[[str], Any]) -> None:
    """Write ``doc`` as strict JSON through ``write``, newline-terminated; the same
    text as ``json.dumps(doc, separators=(", ", ": "))`` with arrays as nested
    lists, never holding more than ``CHUNK`` entries of an array as text."""
    _dump(doc, write)
    write("\n")


def dumps(doc: Any) -> str:
    """:func:`dump` into a string (small documents: check reports, the catalogue)."""
    buffer = io.StringIO()
    dump(doc, buffer.write)
    return buffer.getvalue()


def _dump(doc: Any, write: Callable[[str], Any]) -> None:
    if callable(doc):
        doc = doc()
    if isinstance(doc, np.ndarray):
        _dump_array(np.asarray(doc), write)
    elif isinstance(doc, dict):
        write("{")
        for i, (key, item) in enumerate(doc.items()):
            write((", " if i else "") + json.dumps(str(key)) + ": ")
            _dump(item, write)
        write("}")
    elif isinstance(doc, (list, tuple)):
        write("[")
        for i, item in enumerate(doc):
            if i:
                write(", ")
            _dump(item, write)
        write("]")
    else:
        write(_text(_finite_or_none(doc)))


def _dump_array(a: np.ndarray, write: Callable[[str], Any]) -> None:
    """Leading rows grouped so that each ``json.dumps`` call sees about CHUNK entries."""
    if a.ndim == 0:
        write(_text(array_to_json(a)))
        return
    row = math.prod(a.shape[1:])
    write("[")
    if row <= CHUNK:
        step = max(1, CHUNK // max(row, 1))
        for start in range(0, a.shape[0], step):
            write((", " if start else "") + _text(array_to_json(a[start:start + step]))[1:-1])
    else:
        for i in range(a.shape[0]):
            if i:
                write(", ")
            _dump_array(a[i], write)
    write("]")


def _text(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=_SEPARATORS)
