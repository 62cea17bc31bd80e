"""Gradient baselines: a fingerprint of a function's gradients, saved once and
compared later (after a torch upgrade, a refactor, a compiler change).

The fingerprint of a problem at its point, with seeded random vectors
(``--seed``): for each differentiated argument, ``K`` probes ``u_kᵀ (vᵀJ)``
— one vjp with a random cotangent ``v`` (``v = 1`` for a scalar output),
dotted with ``K`` Rademacher directions ``u_k`` — and for the output, ``K``
random projections ``w_kᵀ f(x)``. Each number is stored with its *scale*, the
same sum with absolute values (``Σ|g|`` for ``u = ±1``): the size of the
rounding a different summation order can put into it.

A value has moved when ``|new − old| > FACTOR · eps(dtype) · scale``, FACTOR =
1000: float64 tolerates ~2e-13 of the scale (summation order, another BLAS),
so a change of 1e-6 in one weight's gradient among 10⁵ is caught, and a
reshuffled reduction is not. The file records gradcli's, numpy's and torch's
versions, so a report says what changed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..compute.solve import solve
from ..core.errors import UsageError
from ..io.arrays import open_regular
from ..core.options import BackendName, Quantity
from ..problem.problem import Problem

SCHEMA = "gradcli-baseline/1"
FACTOR = 1000.0
PROBES = 4


@dataclass(frozen=True)
class Moved:
    """One fingerprinted quantity compared with its baseline."""

    name: str  # "output" or the argument ("input", "param:fc1.weight", ...)
    max_diff: float
    tolerance: float
    moved: bool
    detail: str = ""


@dataclass(frozen=True)
class BaselineComparison:
    path: str
    ok: bool
    entries: tuple[Moved, ...]
    saved_versions: dict
    versions: dict


def versions() -> dict[str, str]:
    found = {"gradcli": __version__, "numpy": np.__version__}
    try:
        import torch

        found["torch"] = torch.__version__
    except ImportError:
        pass
    return found


def _probe(values: np.ndarray, directions: np.ndarray) -> tuple[list[float], float]:
    """``directions @ values`` (K probes) and the scale ``Σ|values|·max|direction|``."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    dirs = directions.reshape(len(directions), -1)
    return [float(p) for p in dirs @ flat], float(np.abs(flat).sum() * np.abs(dirs).max())


def fingerprint(problems: list[Problem], *, backend: BackendName, seed: int, max_memory: int) -> dict[str, Any]:
    """The fingerprint of one function at one point, per argument in ``problems``
    (the same function and point, one problem per ``--wrt``)."""
    first = problems[0]
    rng = np.random.default_rng([seed, 0x6261])  # its own stream: independent of the generators' draws
    shape = first.output_shape
    cotangent = np.ones(shape, dtype=first.dtype) if shape == () else rng.standard_normal(shape).astype(first.dtype)
    arguments: dict[str, Any] = {}
    output = None
    for problem in problems:
        res = solve(problem, Quantity.VJP, backend=backend, cotangent=cotangent, max_memory=max_memory)
        directions = rng.choice(np.array([-1.0, 1.0]), size=(PROBES,) + problem.wrt_shape)
        probes, scale = _probe(res.value, directions)
        arguments[problem.wrt] = {"shape": list(problem.wrt_shape), "probes": probes, "scale": scale}
        output = res.output
    out_probes, out_scale = _probe(output, rng.standard_normal((PROBES,) + np.shape(output)))
    return {
        "schema": SCHEMA, "function": first.function.name, "dtype": str(first.dtype), "seed": seed,
        "params": {k: (v.value if hasattr(v, "value") else v) for k, v in first.params.items()},
        "backend": backend.value, "versions": versions(),
        "output": {"shape": list(np.shape(output)), "probes": out_probes, "scale": out_scale},
        "arguments": arguments,
    }


def dumps(document: dict[str, Any]) -> str:
    """The baseline file's text (the caller writes it, atomically, with ``outfile``)."""
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def load(path: str, max_bytes: int = 2**31) -> dict[str, Any]:
    """The baseline document at ``path``, its structure checked (exit 2 when it is not one
    gradcli wrote: a truncated or hand-edited file must never be compared as if it were)."""
    file = Path(path)
    limit = max_bytes // 20  # parsed JSON holds up to ~20 bytes per byte of text (arrays.py)
    try:
        # a regular file only (a FIFO blocked forever at open), read to the limit only
        with open_regular(file, "--baseline", "give a file written by --save-baseline") as handle:
            text = handle.read(limit + 1)
        if len(text) > limit:
            raise UsageError(f"--baseline: {path} is over {limit} bytes, too large for a baseline under "
                             f"--max-memory; save it again with --save-baseline {path}")
        document = json.loads(text.decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--baseline: {path} does not exist; create it with --save-baseline {path}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise UsageError(f"--baseline: {path} is not a gradcli baseline ({str(err)[:120]})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise UsageError(f"--baseline: {path} is not a gradcli baseline (no \"schema\": \"{SCHEMA}\")")
    problem = _malformed(document)
    if problem:
        raise UsageError(f"--baseline: {path} is damaged or from another gradcli version ({problem}); "
                         f"save it again with --save-baseline {path}")
    return document


def _is_number(value: Any) -> bool:
    """A JSON number that is a float (an integer of 400 digits is not: comparing it
    raised OverflowError, an internal error)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _malformed(document: dict[str, Any]) -> str | None:
    """What is wrong with a baseline document's structure, or None: every fingerprint
    (the output and each argument) needs a shape of sizes, PROBES numbers and a scale."""
    arguments = document.get("arguments")
    if not isinstance(arguments, dict):
        return "'arguments' is not an object"
    if not isinstance(document.get("dtype"), str) or not _is_number(document.get("seed")):
        return "'dtype' or 'seed' is missing"
    versions = document.get("versions", {})
    if not isinstance(versions, dict) or not all(isinstance(v, str) for v in versions.values()):
        return "'versions' is not an object of version strings"
    for name, entry in [("output", document.get("output")), *arguments.items()]:
        if not isinstance(entry, dict):
            return f"{name!r} is not an object"
        shape, probes = entry.get("shape"), entry.get("probes")
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                  for n in shape):
            return f"{name}: 'shape' is not a list of sizes"
        if not isinstance(probes, list) or len(probes) != PROBES or not all(map(_is_number, probes)):
            return f"{name}: 'probes' is not a list of {PROBES} numbers"
        if not _is_number(entry.get("scale")):
            return f"{name}: 'scale' is not a number"
    return None


def compare(path: str, old: dict[str, Any], new: dict[str, Any]) -> BaselineComparison:
    """Every argument and the output of ``new`` against ``old``."""
    eps = float(np.finfo(np.dtype(new["dtype"])).eps)
    entries = []
    pairs = [("output", old.get("output"), new["output"])]
    pairs += [(name, old.get("arguments", {}).get(name), fp) for name, fp in new["arguments"].items()]
    for name, before, now in pairs:
        if before is None:
            entries.append(Moved(name, math.inf, 0.0, True, "not in the baseline: save it again with --save-baseline"))
            continue
        if before["shape"] != now["shape"]:
            entries.append(Moved(name, math.inf, 0.0, True, f"shape {before['shape']} is now {now['shape']}"))
            continue
        # From the scale computed now, never the file's: a scale edited up (or inf, nan) would
        # widen the tolerance until any change passed. A non-finite value only matches itself.
        scale = now["scale"]
        tolerance = FACTOR * eps * max(scale, np.finfo(np.float64).tiny) if math.isfinite(scale) else 0.0
        diffs = [0.0 if a == b or (math.isnan(a) and math.isnan(b)) else abs(a - b) if math.isfinite(a - b)
                 else math.inf for a, b in zip(now["probes"], before["probes"])]
        worst = max(diffs, default=0.0)
        entries.append(Moved(name, worst, tolerance, worst > tolerance))
    for key in ("dtype", "seed"):  # (the function's name may be another path to the same file)
        if old.get(key) != new[key]:
            entries.append(Moved(key, math.inf, 0.0, True, f"{key} {old.get(key)!r} is now {new[key]!r}: "
                                                           "not the same check"))
    return BaselineComparison(path, not any(e.moved for e in entries), tuple(entries),
                              dict(old.get("versions", {})), dict(new["versions"]))
