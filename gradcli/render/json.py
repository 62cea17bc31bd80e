"""Results -> plain dicts in the schema of SPEC §5, and strict JSON text.

Key order is fixed; non-finite numbers become null (and are counted in
``nonfinite``): ``json.dumps`` would write NaN, which is not JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..results import Result

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
    doc["notes"] = list(result.notes)
    if timing:
        doc["seconds"] = round(result.seconds, 6)
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
