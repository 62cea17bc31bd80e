"""Problem: a bound function, what to differentiate and in which dtype —
validated once, final once built. Backends trust a Problem.

Other views of the same problem are explicit and return new Problems:
:meth:`Problem.as_per_sample` (user code's per-sample blocks),
:meth:`Problem.along_axis` (an elementwise function shown as blocks) and
:meth:`Problem.restrict_rows` (``--rows``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..io.arrays import as_array, check_finite
from ..core.errors import UsageError, UserCodeError
from ..catalogue import ArrayKind, Bound, Function
from .function import lookup
from ..catalogue.base import option_name
from ..core.options import DType
from ..core.rowform import GeneralKernel, RowKernel, RowLayout
from ..core.rows import parse_rows

UPCAST_NOTE = "float32 values computed in float64 (the precise default); --dtype float32 computes in float32, as the array is"


@dataclass(frozen=True)
class Problem:
    """Everything a backend needs.

    ``bound``: the function bound to its read-only arrays (float arguments in
    ``dtype``, class indices int64) and resolved options. ``rows``: the row
    structure of the Jacobian w.r.t. ``wrt`` (None when there is none).
    ``axis``: the feature axis an elementwise function adopts when shown as
    blocks. ``per_sample``: user code seen as ``(B, F_out)`` of ``(B, F_in)``.
    """

    bound: Bound
    wrt: str
    dtype: np.dtype
    rows: RowLayout | None
    notes: tuple[str, ...] = field(default=())
    axis: int | None = None
    per_sample: bool = False

    @property
    def function(self) -> Function:
        return self.bound.function

    @property
    def args(self) -> Mapping[str, np.ndarray]:
        return self.bound.args

    @property
    def params(self) -> Mapping[str, Any]:
        return self.bound.params

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.bound.output_shape

    @property
    def wrt_shape(self) -> tuple[int, ...]:
        return self.args[self.wrt].shape

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.args["input"].shape

    @property
    def parts(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """``wrt`` several parameters joined (``param:*``, ``param:a,b``): each one's name and shape."""
        if not self.wrt.startswith("param:") or not hasattr(self.function, "parts"):
            return ()
        return self.function.parts(self.wrt[len("param:"):])

    def kernel(self, budget: int | None = None) -> RowKernel | GeneralKernel:
        """The NumPy kernel of this view (computed once per bound function);
        ``budget``: ``--max-memory`` for user code's batched evaluations."""
        return self.bound.kernel(self.wrt, axis=self.axis, budget=budget)

    def torch_forward(self, tensors: Mapping[str, Any]):
        return self.bound.torch_forward(tensors)

    # --- views ----------------------------------------------------------------

    def as_per_sample(self) -> "Problem":
        """User code as per-sample blocks: input ``(B, *in)`` and output ``(B, *out)``
        seen as ``(B, F_in)`` and ``(B, F_out)``, the batch as rows."""
        if self.wrt != "input":
            raise UsageError("--layout blocks: per-sample blocks are w.r.t. the input; use --layout full for parameters")
        bound = self.bound.per_sample()
        return dataclasses.replace(self, bound=bound, rows=bound.row_layout("input"), per_sample=True)

    def along_axis(self, axis: int) -> "Problem":
        """An elementwise problem shown as blocks: rows along ``axis``, each
        block the diagonal matrix of that row's derivatives."""
        return dataclasses.replace(self, rows=self.bound.row_layout(self.wrt, axis=axis), axis=axis)

    def restrict_rows(self, index: np.ndarray) -> "Problem":
        """The same problem on batch rows ``index`` (dim 0) of the input and of
        every argument that has the batch axis."""
        bound = self.bound.at_rows(index)
        return dataclasses.replace(self, bound=bound, rows=bound.row_layout(self.wrt, axis=self.axis))

    def with_notes(self, *notes: str) -> "Problem":
        return dataclasses.replace(self, notes=self.notes + notes)

    def astype(self, dtype: np.dtype) -> "Problem":
        """The same problem with its float arrays in ``dtype`` (fd differences
        float32 problems in float64)."""
        if np.dtype(dtype) == self.dtype:
            return self
        args = {k: _readonly(v.astype(dtype)) if v.dtype.kind == "f" else v for k, v in self.args.items()}
        return dataclasses.replace(self, bound=self.bound.rebind(args), dtype=np.dtype(dtype))


def select_rows(problem: Problem, text: str) -> Problem:
    """``--rows TEXT``: the problem on the rows it selects, with a note saying which.

    Only where rows are independent and the output keeps them (softmax, a loss
    with ``--reduction none``, user code's per-sample outputs): a reduced loss
    is refused, its mean couples every row through the normaliser.
    """
    x = problem.args["input"]
    user = not problem.function.closed_form
    keeps_rows = user or (problem.rows is not None and not problem.rows.reduced and problem.rows.rows
                          and problem.rows.in_axis != 0)
    if x.ndim < 2 or not keeps_rows or problem.output_shape[:1] != x.shape[:1]:
        raise UsageError("--rows: needs a batch of independent rows along dim 0 that the output keeps "
                         "(softmax, a loss with --reduction none, a per-sample model); drop --rows")
    if problem.wrt != "input":
        raise UsageError("--rows: selects rows of the input; it cannot be combined with --wrt " + problem.wrt)
    indices = parse_rows(text, x.shape[0])
    shown = indices.tolist() if indices.size <= 8 else f"{indices[0]}..{indices[-1]}"
    return problem.restrict_rows(indices).with_notes(f"--rows {text}: rows {shown} of {x.shape[0]}")


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def build_problem(
    function: str | Function,
    arrays: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    *,
    wrt: str = "input",
    dtype: DType | str | None = None,
    allow_nonfinite: bool = False,
    differentiates_input: bool | None = None,
) -> Problem:
    """Validate ``arrays`` (name -> array-like) and ``params`` for ``function``, once.

    ``dtype`` None means float64, with a note where a float32 array is upcast.
    User code's integer input (token ids) stays integer unless it is
    differentiated: ``differentiates_input`` (None: ``wrt == "input"``) says
    so for a ``--wrt`` list, whose base problem is built at ``wrt="input"``.
    Raises :class:`UsageError` naming the option at fault.
    """
    fn = lookup(function) if isinstance(function, str) else function
    upcast_note = dtype is None  # float64 by default, and the user is told when float32 data is upcast
    try:
        work = DType(dtype or DType.FLOAT64).numpy
    except ValueError:
        raise UsageError(f"--dtype: unknown dtype {dtype!r}; use float64 or float32") from None
    accepted = {a.name: a for a in fn.arrays}
    notes: list[str] = []
    args: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if value is None:
            continue
        if name not in accepted:
            raise UsageError(f"{option_name(name)}: {fn.name} takes no such array; it takes "
                             f"{', '.join(a.option for a in fn.arrays)}")
        array = as_array(value)
        if upcast_note and array.dtype == np.float32:
            notes.append(f"{option_name(name)}: {UPCAST_NOTE}")
        kind = accepted[name].kind
        if kind is ArrayKind.DATA:
            to_float = wrt == "input" if differentiates_input is None else differentiates_input
            kind = ArrayKind.FLOAT if to_float else ArrayKind.INDEX_OR_FLOAT
        args[name] = _convert(array, kind, work, option_name(name), notes)
        if not allow_nonfinite:
            check_finite(args[name], option_name(name))
    for arg in fn.arrays:
        if arg.required and arg.name not in args:
            raise UsageError(f"{arg.option}: missing; {fn.name} needs this array ({arg.help}); "
                             "give it as a file, JSON or generator")
    wrt = joined(fn, wrt, args) if "," in wrt else user_wrt(fn, wrt, args)
    if wrt.startswith("param:"):
        args[wrt] = fn.parameter_array(wrt[len("param:"):]).astype(work, copy=False)  # a new array already
    for array in args.values():
        array.flags.writeable = False
    _refuse_foreign_options(fn, params or {})
    if wrt.startswith("act:"):
        args[wrt] = _readonly(activation(fn, wrt, args, work))
    try:
        bound = fn.bind(args, dict(params or {}), dtype=work)
    except UserCodeError as err:
        if fn.closed_form or np.asarray(arrays["input"]).dtype.kind not in "iu":
            raise
        if args["input"].dtype.kind in "iu":
            # kept integer (not differentiated) and refused: integer-valued data for a Linear layer, as
            # before integers were kept; converted (with the note) it runs, else the code's own error
            bound = _bind_float_input(fn, args, params, work, notes, err)
        else:
            # integers converted to be differentiated: token ids for an nn.Embedding, whose code then fails
            found = fn.embeddings() if hasattr(fn, "embeddings") else []
            if found:  # token ids: the refusal says where they become floats
                raise UsageError(f"--wrt input: --input holds integer ids, which {fn.name} embeds "
                                 f"({', '.join(found[:3])}) and which cannot be differentiated; "
                                 f"{integer_ids_fix(fn)}") from None
            raise UsageError(f"--wrt input: --input holds integers, converted to {work} to be differentiated, and "
                             f"then {err}; {integer_ids_fix(fn)}") from None
    allowed = bound.differentiable()
    if wrt not in allowed:
        raise UsageError(wrt_message(fn, wrt, args, allowed))
    return Problem(bound=bound, wrt=wrt, dtype=work, rows=bound.row_layout(wrt),
                   notes=tuple(notes) + bound.notes + bound.wrt_notes(wrt))


def integer_ids_fix(fn: Function) -> str:
    """What to differentiate instead of integer ids: the embeddings they select (input
    saliency, ``--wrt act:...``) or the parameters (the ids stay integer constants)."""
    found = fn.embeddings() if hasattr(fn, "embeddings") else []
    if found:
        return (f"integer ids are constants, their embeddings are not: --wrt act:{found[0]} differentiates w.r.t. the "
                f"output of that embedding (input saliency); --wrt param:NAME w.r.t. a parameter")
    return "to differentiate w.r.t. a model's parameters use --wrt param:NAME (the input stays integer)"


def user_wrt(fn: Function, wrt: str, args: Mapping[str, np.ndarray]) -> str:
    """``--wrt NAME`` in your code's own words: its first positional parameter's name is
    ``input``, its second's ``target`` (when ``-t`` gave it), and a module parameter's
    name alone is ``param:NAME``; anything else as written."""
    if fn.closed_form or wrt in args or ":" in wrt:
        return wrt
    alias = fn.argument(wrt) if hasattr(fn, "argument") else wrt
    if alias in args or alias == "input":
        return alias
    if wrt in (fn.parameters() if hasattr(fn, "parameters") else {}):
        return f"param:{wrt}"
    return wrt


def joined(fn: Function, wrt: str, args: Mapping[str, np.ndarray]) -> str:
    """A comma list of parameters (``param:fc.weight,param:fc.bias``, globs too) as one joint
    argument, ``param:fc.weight,fc.bias``; a list naming anything else is refused here (grad
    and check give one result per argument; the other commands take one argument)."""
    names = [user_wrt(fn, part.strip(), args) for part in wrt.split(",") if part.strip()]
    if names and all(n.startswith("param:") for n in names):
        return "param:" + ",".join(n[len("param:"):] for n in names)
    others = [n for n in names if not n.startswith("param:")]
    raise UsageError(f"--wrt {wrt}: several arguments ({', '.join(others)} beside parameters) are one result each "
                     "with grad and check; this command takes one argument, or parameters joined (param:a,param:b, "
                     "'param:*')")


def activation(fn: Function, wrt: str, args: Mapping[str, np.ndarray], work: np.dtype) -> np.ndarray:
    """``act:MODULE``: the submodule's output at ``args`` in the working dtype (user code only)."""
    if not hasattr(fn, "activation_array"):
        raise UsageError(f"--wrt {wrt}: {fn.name} is a built-in; act:MODULE names a submodule of your "
                         "torch.nn.Module (PATH.py:NAME)")
    return fn.activation_array(wrt[len("act:"):], args, work).astype(work, copy=False)


def _refuse_foreign_options(fn: Function, params: Mapping[str, Any]) -> None:
    """Another built-in's option given to this function is refused, naming who takes it
    (the catalogue's options share one command line, each belongs to its functions)."""
    from ..catalogue import parameters

    own = {p.name for p in fn.params}
    for name, value in params.items():
        if value is None or name in own:
            continue
        owners = [function for function, _ in parameters().get(name, [])]
        who = f" ({', '.join(owners[:3])}{', ...' if len(owners) > 3 else ''} take{'s' if len(owners) == 1 else ''} it)"
        raise UsageError(f"{option_name(name)}: {fn.name} takes no such option{who if owners else ''}; its options "
                         f"are {', '.join(p.option for p in fn.params) or 'none'}")


def _bind_float_input(fn: Function, args: dict, params, work: np.dtype, notes: list[str], err: UserCodeError) -> Bound:
    """User code that refused its integer ``--input`` bound again with the input in the working
    dtype (noted); raises ``err``, the integers' failure, when the floats fail too."""
    floats = _convert(args["input"], ArrayKind.FLOAT, work, option_name("input"), [])
    floats.flags.writeable = False
    try:
        bound = fn.bind({**args, "input": floats}, dict(params or {}), dtype=work)
    except UserCodeError:
        raise err from None
    args["input"] = floats
    notes.append(f"--input: integer values converted to {work}, since your code refused them as integers")
    return bound


def _convert(array: np.ndarray, kind: ArrayKind, work: np.dtype, option: str, notes: list[str]) -> np.ndarray:
    """Working dtype for floats; int64 for class indices; integers to differentiate get a note."""
    if array.dtype.kind not in "iuf":
        raise UsageError(f"{option}: dtype {array.dtype} is not numeric; give integers or floats")
    if array.size == 0:
        raise UsageError(f"{option}: the array is empty; give at least one value")
    if array.dtype.kind in "iu":
        if kind is not ArrayKind.FLOAT:
            return array.astype(np.int64)
        notes.append(f"{option}: integer values converted to {work} (integers cannot be differentiated; "
                     "torch.arange(n) is an integer tensor, a classic trap)")
    if array.dtype == work:
        # Already in the working dtype: a view of the caller's array, made read-only on its own
        # (the caller's array keeps its flags), rather than a copy of a possibly large input.
        return array.view()
    with np.errstate(over="ignore"):  # a value too large for float32 becomes inf: said below, not warned
        converted = array.astype(work)
    overflow = np.isinf(converted) & ~np.isinf(array) if converted.dtype.itemsize < array.dtype.itemsize else None
    if overflow is not None and overflow.any():
        index = tuple(int(i) for i in np.argwhere(overflow)[0])
        raise UsageError(f"{option}: {array[index]} at index {list(index)} does not fit {work} "
                         f"(largest {np.finfo(work).max:.4g}); use --dtype float64 or rescale the data")
    return converted


def one_number_fix(fn: Function) -> str:
    """How to make ``fn``'s output one number, for the refusals that need a scalar
    (grad, hvp, --eig): only an option ``fn`` has is suggested."""
    if any(p.name == "reduction" for p in fn.params):
        return "use --reduction mean or sum"
    if not fn.closed_form:
        return "return one number from your code (a loss, or .sum())"
    return f"{fn.name} has no --reduction: end it in a loss, e.g. {fn.name},cross_entropy"


def wrt_message(fn: Function, wrt: str, args, allowed) -> str:
    choices = ", ".join(allowed)
    if wrt in args and args[wrt].dtype.kind in "iu":
        option = next((a.option for a in fn.arrays if a.name == wrt), option_name(wrt)).removesuffix("=ARRAY")
        what, fix = ("integer class indices", "probabilities") if fn.closed_form else ("integers", "floats")
        return (f"--wrt {wrt}: {option} holds {what}, which cannot be differentiated "
                f"(torch: only floating point tensors can require gradients); "
                f"give {fix} to differentiate w.r.t. it, or use --wrt {allowed[0]}")
    arrays = {a.name: a for a in fn.arrays}
    if wrt in arrays and wrt not in args:
        option = arrays[wrt].option.removesuffix("=ARRAY")
        return f"--wrt {wrt}: {wrt} is not given; give its value with {option} ARRAY to differentiate w.r.t. it"
    if wrt in arrays:
        return f"--wrt {wrt}: {fn.name} is not differentiated w.r.t. {wrt} here; choose from {choices}"
    return f"--wrt: {wrt!r} is not an argument of {fn.name}; choose from {choices}"
