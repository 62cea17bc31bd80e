"""One-line reproducers: ``python -c '...'`` commands that show a failure as printed.

Every reproducer is a *prelude* that defines ``torch``, ``f`` (the function as
called: ``Fn.apply``, the op, the callable) and ``X`` (its positional arguments,
float ones in float64), then a property's *body*, a few statements ending in an
``assert`` that fails while the bug is there (``AssertionError: <the error>``,
exit 1) and passes once it is fixed. The prelude loads the file with ``runpy``
and the arrays with gradcli's own ``load_array`` (the same ``-x``/``--arg`` specs
and ``--seed``), so the arguments are exactly those certified.

Code given to the library as an object, or arrays too large to write out, have
no prelude: the body is shown after ``(f: ..., X: ...)``, for pasting where they exist.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

import numpy as np

LITERAL_ENTRIES = 64  # library arrays up to this many entries are written into the reproducer


@dataclass(frozen=True)
class Repro:
    """``prelude``: Python statements defining ``torch``, ``f`` and ``X``, or None when
    they cannot be written (then ``missing`` says what the body expects)."""

    prelude: str | None
    missing: str = "f: your function, X: its positional arguments (float ones as float64 tensors)"

    def command(self, body: str) -> str:
        if self.prelude is None:
            return f"({self.missing}) {body}"
        return "python -c " + shlex.quote(f"{self.prelude}; {body}")


def _text(s: str) -> str:
    return json.dumps(s)  # a Python string literal in double quotes (the command is single-quoted)


def make_repro(path, attr: str | None, is_function_class: bool, args: dict, specs: dict | None, seed: int) -> Repro:
    """The prelude for code from ``path``:``attr`` with its arguments ``args`` (name ->
    tensor or number, call order), read from ``specs`` (name -> (option, ARRAY spec)) when
    given on the command line, else written out when small enough."""
    if path is None:
        return Repro(None)
    folder = str(path.parent) if str(path.parent) else "."
    code = ["import runpy,sys,torch", f"sys.path[:0]=[{_text(folder)}]",
            f"f=runpy.run_path({_text(str(path))})[{_text(attr)}]" + (".apply" if is_function_class else "")]
    items = []
    for name, value in args.items():
        item = _argument(name, value, (specs or {}).get(name), seed)
        if item is None:
            return Repro(None, missing="X: the positional arguments you passed, float ones as float64 tensors")
        items.append(item)
    if specs:
        code.append("from gradcli.io.arrays import load_array as A")
    code.append(f"X=[{','.join(items)}]")
    return Repro("; ".join(code))


def _argument(name: str, value, spec, seed: int) -> str | None:
    import torch

    if not isinstance(value, torch.Tensor):
        return repr(value)
    cast = ".double()" if value.is_floating_point() else ""
    if spec is not None:
        option, text = spec
        return f"torch.tensor(A({_text(text)},{_text(option)},seed={seed})){cast}"
    if value.numel() <= LITERAL_ENTRIES:
        data = np.asarray(value.detach().cpu().tolist()).tolist()
        return f"torch.tensor({data!r}){cast}"
    return None


# The common head of the bodies: X's float tensors require grad, Y is the list of float outputs,
# D the differentiated arguments (the order of certify's ``output k`` and argument lists).
HEAD = ("X=[x.requires_grad_() if torch.is_tensor(x) and x.is_floating_point() else x for x in X]; "
        "D=[x for x in X if torch.is_tensor(x) and x.requires_grad]; Y=f(*X); "
        "Y=[y for y in (Y if isinstance(Y,(tuple,list)) else [Y]) if torch.is_tensor(y) and y.is_floating_point()]")
