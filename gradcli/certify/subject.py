"""What is certified: an ``autograd.Function`` subclass (called through
``.apply``), a ``torch.library`` custom op, or any callable of tensors, with the
traits the properties ask about (``setup_context``, ``jvp``, a vmap rule,
``once_differentiable``) and its parameters in call order."""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from ..core.errors import UsageError
from ..usercode.function import is_library_op, running_user_code


class Kind(str, Enum):
    FUNCTION = "autograd.Function"
    CUSTOM_OP = "custom op"
    CALLABLE = "callable"


@dataclass(frozen=True)
class Param:
    """One parameter: its name, whether it has a default (and which), and whether it takes a
    Python number rather than a tensor (a custom op's schema says so, or a default that is one)."""

    name: str
    default: Any = inspect.Parameter.empty
    number: type | None = None  # float or int: a custom op's ``float y`` takes y.item()
    keyword_only: bool = False


@dataclass(frozen=True)
class Subject:
    """The function under certification. ``obj`` is what the file defines (the
    class, the op, the callable); ``call(*args, **kwargs)`` runs it; ``path``/``attr``:
    where it came from (None for an object given to the library)."""

    kind: Kind
    obj: Any
    call: Callable
    name: str
    params: tuple[Param, ...]
    path: Path | None = None
    attr: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def new_style(self) -> bool:
        """A Function with ``setup_context`` (forward without ctx): what torch.func needs."""
        import torch

        return self.kind is Kind.FUNCTION and torch.autograd.function._is_setup_context_defined(self.obj.setup_context)

    @property
    def defines_jvp(self) -> bool:
        import torch

        return self.kind is Kind.FUNCTION and self.obj.jvp is not torch.autograd.Function.jvp

    @property
    def vmap_rule(self) -> bool:
        """The Function declares how vmap runs it: ``generate_vmap_rule = True`` or a ``vmap`` staticmethod."""
        import torch

        return self.kind is Kind.FUNCTION and (bool(self.obj.generate_vmap_rule)
                                               or self.obj.vmap is not torch.autograd.Function.vmap)

    @property
    def once_differentiable(self) -> bool:
        """The backward is wrapped in ``torch.autograd.function.once_differentiable``."""
        backward = self.obj.backward if self.kind is Kind.FUNCTION else \
            getattr(op_definition(self.obj), "_backward_fn", None) if self.kind is Kind.CUSTOM_OP else None
        return getattr(backward, "__code__", None) is _once_code()

    def guard(self):
        """Around every run of the code: the loader's safeguards (standard output to standard
        error, torch modes and the working folder restored, sibling modules), for code from a file."""
        return running_user_code(self.path) if self.path is not None else contextlib.nullcontext()

    def composite(self) -> Callable | None:
        """The same computation through torch's own autograd, or None: a Function's
        ``forward`` called as a plain function (an old-style one with a stand-in ctx), a
        custom op's Python implementation. What the dtype properties measure against
        when no ``--reference`` is given (its usability is checked before use)."""
        if self.kind is Kind.FUNCTION:
            forward = self.obj.forward
            if self.new_style:
                return forward
            return lambda *args, **kwargs: forward(_StandInContext(), *args, **kwargs)
        if self.kind is Kind.CUSTOM_OP:
            return getattr(op_definition(self.obj), "_init_fn", None)
        return None


class _StandInContext:
    """What an old-style ``forward(ctx, ...)`` may call on its ctx, doing nothing."""

    needs_input_grad = (True,) * 64

    def save_for_backward(self, *tensors):
        pass

    def mark_dirty(self, *tensors):
        pass

    def mark_non_differentiable(self, *tensors):
        pass

    def set_materialize_grads(self, value):
        pass


def _once_code():
    from torch.autograd.function import once_differentiable

    return once_differentiable(lambda ctx: None).__code__


def op_definition(op):
    """A custom op's ``CustomOpDef`` (its Python pieces), or None (an op defined in C++ or with ``torch.library.Library``)."""
    import torch

    if isinstance(op, torch._library.custom_ops.CustomOpDef):
        return op
    name = getattr(op, "_qualified_op_name", None) or getattr(getattr(op, "_schema", None), "name", None)
    return torch._library.custom_ops.OPDEFS.get(name)


def op_overload(op):
    """The one ``OpOverload`` a custom op stands for (opcheck's and the schema's)."""
    import torch

    if isinstance(op, torch._library.custom_ops.CustomOpDef):
        return op._opoverload
    if isinstance(op, torch._ops.OpOverloadPacket):
        overloads = op.overloads()
        if "default" in overloads or len(overloads) == 1:
            return getattr(op, "default" if "default" in overloads else overloads[0])
        raise UsageError(f"FUNCTION: {op._qualified_op_name} has overloads {', '.join(overloads)}; name one "
                         f"(torch.ops.NS.OP.OVERLOAD) in your file")
    return op


def make_subject(obj, name: str, path: Path | None = None, attr: str | None = None) -> Subject:
    """``obj`` classified, its parameters read. Anything else not callable is exit 2."""
    import torch

    if inspect.isclass(obj) and issubclass(obj, torch.autograd.Function):
        return Subject(Kind.FUNCTION, obj, obj.apply, name, _function_params(obj), path, attr)
    if is_library_op(obj):
        overload = op_overload(obj)
        return Subject(Kind.CUSTOM_OP, obj, overload, name, _schema_params(overload), path, attr)
    if not callable(obj):
        raise UsageError(f"FUNCTION: {name} is a {type(obj).__name__}, not an autograd.Function, a torch.library "
                         "custom op or a function of tensors")
    return Subject(Kind.CALLABLE, obj, obj, name, _signature_params(obj), path, attr)


def _signature_params(obj, skip: int = 0) -> tuple[Param, ...]:
    import torch

    target = obj.forward if isinstance(obj, torch.nn.Module) else obj
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return (Param("input"),)  # a signature Python cannot read: the input alone, positionally
    params = [p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)][skip:]
    # A parameter whose default is a Python number takes a number (alpha=2.5, dim=-1), not a tensor
    return tuple(Param(p.name, p.default, type(p.default) if type(p.default) in (int, float, bool) else None,
                       keyword_only=p.kind is p.KEYWORD_ONLY) for p in params)


def _function_params(cls) -> tuple[Param, ...]:
    """``forward``'s parameters; an old-style ``forward(ctx, ...)`` without its ctx."""
    import torch

    new_style = torch.autograd.function._is_setup_context_defined(cls.setup_context)
    return tuple(p for p in _signature_params(cls.forward, skip=0 if new_style else 1) if not p.keyword_only)


def _schema_params(overload) -> tuple[Param, ...]:
    numbers = {"float": float, "int": int, "SymInt": int, "bool": bool, "number": float}
    params = []
    for a in overload._schema.arguments:
        default = a.default_value if a.has_default_value() else inspect.Parameter.empty
        params.append(Param(a.name, default, numbers.get(str(a.type)), keyword_only=a.kwarg_only))
    return tuple(params)
