"""How gradcli's array options reach the user's callable.

``--input`` is the first positional parameter and ``--target`` the second,
whatever their names (``forward(self, x, t)`` works); ``--arg NAME=ARRAY``
passes any parameter by name (a mask, lengths, a second input, ``labels``) —
the second positional one too, when ``--target`` is not given (two options
filling one parameter are refused); the catalogue's other arrays
(``--weight``, ``--class-weight``, ...) go by name to a parameter of that name. A callable whose signature cannot be read (a
TorchScript or ``torch.export`` module) takes ``--input`` and ``--target``
positionally and nothing else.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Mapping

from ..core.errors import UsageError
from ..catalogue.base import ArrayArg, ArrayKind


@dataclass(frozen=True)
class NamedArray(ArrayArg):
    """A parameter of the user's code reached with ``--arg NAME=ARRAY``."""

    @property
    def option(self) -> str:
        return f"--arg {self.name}=ARRAY"


@dataclass(frozen=True)
class Signature:
    """The parameters of the user's callable (``self`` left out).

    ``positional``: the names of the positional parameters, in order;
    ``names``: every parameter that can be passed by keyword; ``open``: it
    takes ``**kwargs``; ``more_positional``: it takes ``*args``;
    ``known``: the signature could be read; ``text``: as Python prints it.
    """

    positional: tuple[str, ...]
    names: tuple[str, ...]
    open: bool = False
    more_positional: bool = False
    known: bool = True
    text: str = "(input, target=None)"
    required: int = 1  # leading positional parameters without a default
    needed: tuple[str, ...] = ()  # parameters past the second without a default, given only by --arg NAME

    @property
    def takes_target(self) -> bool:
        return len(self.positional) >= 2 or self.more_positional or not self.known

    def second_name(self) -> str:
        return self.positional[1] if len(self.positional) >= 2 else "its second argument"

    def by_name(self) -> tuple[str, ...]:
        """Parameters reached by name (with ``--arg`` or a catalogue option): all but the first positional
        (the second positional one is ``--target``'s, or ``--arg NAME``'s when ``--target`` is not given)."""
        second = self.positional[1:2] if self.known and self.positional[1:2] != ("target",) else ()
        return second + tuple(n for n in self.names if n not in self.positional[:2])

    def filled_by(self, name: str) -> str | None:
        """The option that fills parameter ``name`` by position: ``input`` for the first
        positional parameter, ``target`` for the second; None for any other."""
        if name in self.positional[:2]:
            return ("input", "target")[self.positional.index(name)]
        return None

    def check_given(self, given) -> None:
        """Two options filling one parameter (``-t`` and ``--arg NAME`` for the second positional
        one) are refused, and so is a required parameter given by none (not the code's TypeError, exit 3)."""
        missing = [n for n in self.needed if n not in given]
        if missing:
            raise UsageError(f"--arg {missing[0]}: missing; {self.text} needs {', '.join(missing)}: give "
                             + ", ".join(f"--arg {n}=ARRAY" for n in missing))
        second = self.positional[1] if self.known and len(self.positional) >= 2 else None
        if second is None or second == "target":  # (named target: -t fills it, and only -t)
            return
        if "target" in given and second in given:
            raise UsageError(f"--arg {second}: -t/--target already fills {second} (the second positional parameter "
                             f"of {self.text}); give it once, with -t or with --arg {second}=ARRAY")
        if self.required >= 2 and "target" not in given and second not in given:
            raise UsageError(f"--target: missing; the code needs its second argument, {second}: give it with -t ARRAY "
                             f"or --arg {second}=ARRAY")

    def arrays(self, catalogue_names: tuple[str, ...]) -> tuple[ArrayArg, ...]:
        """The array arguments this callable takes, for problem validation and ``gradcli functions``."""
        first = self.positional[0] if self.positional else "input"
        # integers stay integers unless differentiated (token ids for an nn.Embedding need int64, as in torch)
        arrays = [ArrayArg("input", f"its first argument, {first}", required=True, kind=ArrayKind.DATA)]
        if self.takes_target:
            # (a required second argument may come by name instead: :meth:`check_given` asks for one of the two)
            arrays.append(ArrayArg("target", f"its second argument, {self.second_name()}",
                                   required=self.required >= 2 and not self.known, kind=ArrayKind.INDEX_OR_FLOAT))
        for name in self.by_name():
            if name == self.second_name() and name not in catalogue_names:
                arrays.append(NamedArray(name, "its second argument, by name (or -t)", kind=ArrayKind.INDEX_OR_FLOAT))
            elif name in catalogue_names:
                arrays.append(ArrayArg(name, f"passed as {name}=", kind=ArrayKind.FLOAT))
            else:
                arrays.append(NamedArray(name, f"passed as {name}= (integers stay integers)",
                                         kind=ArrayKind.INDEX_OR_FLOAT))
        return tuple(arrays)

    def accepts(self, name: str) -> bool:
        return name in ("input", "target") and (name == "input" or self.takes_target) or name in self.by_name() \
            or self.open

    def split(self, args: Mapping[str, Any]) -> tuple[list, dict]:
        """``(positional, keywords)`` for a call: input first, target second; the second positional
        parameter given by name goes by keyword (by position where it is positional-only)."""
        positional = [args["input"]] + ([args["target"]] if "target" in args else [])
        keywords = {k: v for k, v in args.items() if k not in ("input", "target") and ":" not in k}
        second = self.positional[1] if len(self.positional) >= 2 else None
        if second in keywords and second not in self.names:  # positional-only: it can only go by position
            positional.append(keywords.pop(second))
        return positional, keywords

    def mapping(self) -> list[tuple[str, str]]:
        """``(option, parameter)`` rows for ``gradcli functions PATH.py:NAME``."""
        rows = [("-x/--input", self.positional[0] if self.positional else "first positional argument")]
        if self.takes_target:
            second = self.second_name()
            rows.append((f"-t/--target or --arg {second}=ARRAY" if second in self.by_name() else "-t/--target", second))
        rows += [(f"--arg {n}=ARRAY", n) for n in self.by_name() if n not in self.positional[:2]]
        if self.open:
            rows.append(("--arg NAME=ARRAY", "**kwargs"))
        return rows


def read_signature(obj) -> Signature:
    """The signature of a function, or of a module's ``forward``."""
    target = obj.forward if hasattr(obj, "forward") and not inspect.isfunction(obj) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return Signature(("input", "target"), (), known=False)
    params = [p for p in sig.parameters.values() if p.name != "self"]
    positional = tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    names = tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    if not positional and not any(p.kind is p.VAR_POSITIONAL for p in params):
        # TorchScript's forward reads as (*args, **kwargs) or nothing: take the positional convention.
        return Signature(("input", "target"), (), known=False, text=str(sig))
    required = sum(1 for p in params if p.name in positional and p.default is p.empty)
    needed = tuple(n for n in names if n not in positional[:2] and sig.parameters[n].default is inspect.Parameter.empty)
    return Signature(positional, names, open=any(p.kind is p.VAR_KEYWORD for p in params),
                     more_positional=any(p.kind is p.VAR_POSITIONAL for p in params), text=str(sig),
                     required=required, needed=needed)


def parse_arg_options(values: list[str] | None, taken: set[str]) -> dict[str, str]:
    """``--arg NAME=ARRAY`` options -> ``{NAME: ARRAY}``; ``taken``: arrays given by their own options."""
    found: dict[str, str] = {}
    for value in values or ():
        name, sep, spec = value.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier() or not spec:
            raise UsageError(f"--arg: {value!r} is not NAME=ARRAY; write e.g. --arg mask=mask.npy")
        if name in ("input", "target"):
            raise UsageError(f"--arg {name}: give it with --{name}")
        if name in found or name in taken:
            raise UsageError(f"--arg {name}: given twice; give each argument once")
        found[name] = spec
    return found
