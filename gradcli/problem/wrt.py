"""``--wrt`` as a list: comma-separated names and globs, each a Problem of its own.

``input,param:*`` names the input and every module parameter; ``param:fc1.*``
the parameters whose name matches the glob (``fnmatch``). Pure, no torch.
"""

from __future__ import annotations

import dataclasses
import fnmatch

from ..core.errors import UsageError
from .problem import Problem, activation, user_wrt, wrt_message

GLOB_CHARS = "*?["


def is_list(text: str) -> bool:
    """More than one name, or a glob: ``check`` then gives one result per argument."""
    return "," in text or any(c in text for c in GLOB_CHARS)


def names_input(text: str) -> bool:
    """Whether a ``--wrt`` list names the input itself: only then is user code's
    integer input (token ids) converted to floats (``build_problem``)."""
    return "input" in (part.strip() for part in text.split(","))


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


def retarget(problem: Problem, names: list[str]) -> list[Problem]:
    """The same problem differentiated w.r.t. each of ``names``: module parameters
    and submodule outputs join the arguments as ``param:NAME`` and ``act:MODULE``
    (every one in one binding, so the function is bound once), each validated as
    ``build_problem`` does."""
    args = dict(problem.args)
    names = list(dict.fromkeys(user_wrt(problem.function, n, args) for n in names))
    for wrt in names:
        if wrt in args:
            continue
        if wrt.startswith("param:"):
            array = problem.function.parameter_array(wrt[len("param:"):]).astype(problem.dtype)
        elif wrt.startswith("act:"):
            array = activation(problem.function, wrt, problem.args, problem.dtype)
        else:
            continue
        array.flags.writeable = False
        args[wrt] = array
    # (only parameters and activations at their own values were added: the output is the one already bound)
    extend = getattr(problem.bound, "with_arguments", problem.bound.rebind)
    bound = problem.bound if len(args) == len(problem.args) else extend(args)
    allowed = bound.differentiable()
    problems = []
    for wrt in names:
        if wrt not in allowed:
            raise UsageError(wrt_message(problem.function, wrt, args, allowed))
        notes = tuple(dict.fromkeys(problem.notes + bound.wrt_notes(wrt)))
        problems.append(dataclasses.replace(problem, bound=bound, wrt=wrt, rows=bound.row_layout(wrt), notes=notes))
    return problems
