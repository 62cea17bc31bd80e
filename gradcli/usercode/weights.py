"""Trained weights loaded into your module before anything runs (``--weights``,
``--weights-prefix``, ``--no-strict-weights``).

Strict by default, as ``load_state_dict(strict=True)``: keys of the module the
file lacks (missing), keys of the file the module lacks (unexpected) and shape
mismatches are refused, the first few of each listed, with the fix; a common
prefix that would make the keys match (Lightning's ``model.``) is named. A
missing key whose tensor is another key's (tied weights: GPT-2's ``lm_head``
is its ``wte``; ``save_model`` writes one of them) is loaded through that key,
not missing. ``--no-strict-weights`` loads the keys that match and says what
it left. The file is read by :mod:`gradcli.io.checkpoints`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

from ..core.errors import UsageError
from ..io.checkpoints import SHOWN, listed, read_weights


def load_weights(module, spec: str, *, prefix: str | None = None, strict: bool = True,
                 max_bytes: int = 2**31, where: str = "FUNCTION") -> tuple[str, ...]:
    """Read ``spec`` (``PATH[:KEY]``) and load it into ``module``; returns the notes."""
    import torch

    if module is None:
        raise UsageError(f"--weights: {where} is a function, not a torch.nn.Module, so there is nothing to load "
                         "weights into; name the module (or a factory returning it) as PATH.py:NAME")
    state = read_weights(spec, max_bytes)
    if prefix:
        if not any(k.startswith(prefix) for k in state):
            raise UsageError(f"--weights-prefix {prefix}: no key of {spec} starts with it; its keys are "
                             f"{listed(list(state))}")
        state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    expected = module.state_dict(keep_vars=True)
    tied = _tied(expected, state)
    missing = [k for k in expected if k not in state and k not in tied]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({listed(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({listed(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} of another shape (" + ", ".join(
            f"{k}: file {list(state[k].shape)}, module {list(expected[k].shape)}" for k in mismatched[:SHOWN]) + ")")
    if problems and strict:
        raise UsageError(f"--weights {spec}: the keys do not fit {where}: {'; '.join(problems)}; "
                         f"{_fix(missing, unexpected, prefix)}")
    loadable = {k: v for k, v in state.items() if k in expected and k not in mismatched}
    if not loadable:
        raise UsageError(f"--weights {spec}: no key fits {where} ({'; '.join(problems)}); "
                         f"{_fix(missing, unexpected, prefix)}")
    with torch.no_grad():
        module.load_state_dict(loadable, strict=False)  # (shapes checked above; dtypes converted as it copies)
    notes = [f"--weights: {len(loadable)} tensors loaded from {spec}" + (f" (prefix {prefix!r} stripped)" if prefix
                                                                         else "")]
    if tied:
        notes.append(f"--weights: {listed(sorted(tied))} tied to {listed(sorted(set(tied.values())))} (one tensor "
                     "in the module), loaded through it")
    if problems:
        notes.append(f"--weights (--no-strict-weights): {'; '.join(problems)}: left as the module had them")
    return tuple(notes)


def _tied(expected: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, str]:
    """Keys of the module absent from the file whose tensor is a present key's: ``{absent: present}``."""
    present = {_identity(t): k for k, t in expected.items() if k in state}
    found = {}
    for k, t in expected.items():
        if k not in state and _identity(t) in present:
            found[k] = present[_identity(t)]
    return found


def _identity(tensor) -> tuple:
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())


def _fix(missing: list[str], unexpected: list[str], prefix: str | None) -> str:
    """How to make the keys fit: a prefix to strip when one would, else the general advice."""
    prefixes = Counter(u[: len(u) - len(e)] for u in unexpected for e in missing if u.endswith("." + e))
    if prefixes:
        best, count = prefixes.most_common(1)[0]
        full = (prefix or "") + best
        return (f"{count} of the file's keys are the module's with the prefix {best!r}: add --weights-prefix {full}")
    if missing and not unexpected:
        return ("the file holds part of the module (a backbone alone?): --no-strict-weights loads what it holds and "
                "leaves the rest")
    return ("check that FUNCTION builds the architecture the weights were saved from (the same config), or give "
            "--no-strict-weights to load the keys that fit and leave the rest")
