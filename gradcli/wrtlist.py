"""``--wrt`` as a list: comma-separated names and globs, each a Problem of its own.

``input,param:*`` names the input and every module parameter; ``param:fc1.*``
the parameters whose name matches the glob (``fnmatch``). Pure, no torch.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from types import MappingProxyType

from .errors import UsageError
from .problem import Problem, _wrt_message

GLOB_CHARS = "*?["


def is_list(text: str) -> bool:
    """More than one name, or a glob: ``check`` then gives one result per argument."""
    return "," in text or any(c in text for c in GLOB_CHARS)


def expand(function, text: str) -> list[str]:
    """``--wrt`` text -> argument names in order, duplicates dropped.

    Globs match ``param:NAME`` against the module's parameters only; other
    arguments are named one by one."""
    names: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise UsageError(f"--wrt: empty name in {text!r}; separate names with single commas, e.g. input,param:*")
        if not any(c in item for c in GLOB_CHARS):
            names.append(item)
            continue
        if not item.startswith("param:"):
            raise UsageError(f"--wrt {item}: globs match module parameters only; write param:{item} or name the argument")
        available = list(function.parameters()) if hasattr(function, "parameters") else []
        matched = [f"param:{n}" for n in available if fnmatch.fnmatchcase(n, item[len("param:"):])]
        if not matched:
            has = ", ".join(available[:8]) + (", …" if len(available) > 8 else "")
            raise UsageError(f"--wrt {item}: matches no parameter of {function.name}; it has "
                             f"{has or 'none (it is not a torch.nn.Module)'}")
        names.extend(matched)
    return list(dict.fromkeys(names))


def retarget(problem: Problem, wrt: str) -> Problem:
    """The same problem differentiated w.r.t. ``wrt`` (a module parameter is
    added to the arguments as ``param:NAME``), validated as ``build_problem`` does."""
    if wrt == problem.wrt:
        return problem
    fn = problem.function
    args = dict(problem.args)
    if wrt.startswith("param:") and wrt not in args:
        array = fn.parameter_array(wrt[len("param:"):]).astype(problem.dtype)
        array.flags.writeable = False
        args[wrt] = array
    allowed = fn.differentiable(args)
    if wrt not in allowed:
        raise UsageError(_wrt_message(fn, wrt, args, allowed))
    notes = tuple(dict.fromkeys(problem.notes + tuple(fn.notes(args, problem.params, wrt))))
    return dataclasses.replace(problem, args=MappingProxyType(args), wrt=wrt,
                               rows=fn.row_layout(args, problem.params, wrt), notes=notes)
