"""The plan of a computation, decided once before any work: the layout, the
result's shape and size, and whether it fits ``--max-memory`` (streamed to
``-o J.npy`` or held). Second order (``hessian``, ``hvp``) has its own plan,
:func:`plan_second`, at the end.

The CLI and the library ask the plan; nothing downstream re-derives it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..catalogue.softmax import WORKING_BYTES
from ..core.errors import UsageError
from ..core.options import BackendName, Layout, Quantity
from .problem import Problem, one_number_fix
from ..core.sizes import format_bytes, size_option

DEFAULT_MAX_MEMORY = 2 * 2**30


@dataclass(frozen=True)
class Plan:
    """``problem``: the view the backend computes on (per-sample, along an axis);
    ``layout``: resolved (never AUTO; FULL for every quantity but jacobian);
    ``shape``/``nbytes``: the result's; ``streamed``: a full Jacobian scattered
    from blocks straight into a memory-mapped file, so only the blocks are held."""

    problem: Problem
    quantity: Quantity
    layout: Layout
    shape: tuple[int, ...]
    nbytes: int
    streamed: bool = False

    @property
    def held_bytes(self) -> int:
        """What the run holds in memory for the result."""
        if self.streamed:
            return math.prod(self.problem.rows.blocks_shape) * self.problem.dtype.itemsize
        return self.nbytes


def make_plan(problem: Problem, quantity: Quantity, layout: Layout = Layout.AUTO, *,
              max_memory: int = DEFAULT_MAX_MEMORY, streaming: bool = False, verify_blocks: bool = True,
              vector_bytes: int | None = None) -> Plan:
    """Resolve the layout and the view, size the result, refuse what would not fit:
    the result alone, then for a built-in's vjp, jvp and grad the whole run's
    arrays (:func:`run_bytes`: the arguments, the vector — the cotangent or
    tangent, ``vector_bytes`` —, the result, the output and the chunked working
    arrays). A refusal suggests only what would run (:func:`_too_large`).
    ``verify_blocks``: user code's per-sample blocks are checked first (:func:`user_view`)."""
    given = problem
    if quantity is Quantity.JACOBIAN and not problem.function.closed_form and not problem.per_sample:
        problem, layout = user_view(problem, layout, verify_blocks)
    layout = resolve_layout(problem, quantity, layout)
    if layout is Layout.BLOCKS and problem.rows.elementwise:
        problem = problem.along_axis(len(problem.wrt_shape) - 1)
    shape = result_shape(problem, quantity, layout)
    scattered = (quantity is Quantity.JACOBIAN and layout is Layout.FULL and problem.rows is not None
                 and not problem.rows.reduced)
    plan = Plan(problem, quantity, layout, shape, math.prod(shape) * problem.dtype.itemsize,
                streamed=streaming and scattered)
    if plan.held_bytes > max_memory:
        raise UsageError(_too_large(plan, scattered, max_memory, given, streaming))
    if problem.function.closed_form and quantity in (Quantity.VJP, Quantity.JVP, Quantity.GRAD):
        # NumPy's row operations hold nothing but these (torch's backends size their own chunks, and say so)
        parts = run_bytes(plan, vector_bytes)
        if sum(parts.values()) > max_memory:
            raise UsageError(_run_too_large(plan, parts, max_memory))
    return plan


def run_bytes(plan: Plan, vector_bytes: int | None) -> dict[str, int]:
    """What a first-order run holds at once, by part: the arguments as loaded
    (each array once), the vector, the result (``Plan.held_bytes``), the
    function's output, which every result carries, and the working arrays of
    a chunked row operation."""
    problem = plan.problem
    seen, arguments = set(), 0
    for array in problem.args.values():
        base = array if getattr(array, "base", None) is None else array.base
        if isinstance(array, np.ndarray) and id(base) not in seen:
            seen.add(id(base))
            arguments += array.nbytes
    parts = {"the arguments": arguments, "the result": plan.held_bytes,
             "the output": math.prod(problem.output_shape) * problem.dtype.itemsize}
    if vector_bytes is not None:
        parts["the " + ("cotangent" if plan.quantity is Quantity.VJP else "tangent")] = vector_bytes
    # Row operations work on chunks of rows whose temporaries stay within WORKING_BYTES (catalogue.softmax.by_rows)
    parts["working arrays"] = min(WORKING_BYTES, plan.held_bytes)
    return parts


def _run_too_large(plan: Plan, parts: dict[str, int], max_memory: int) -> str:
    """The refusal of a run whose arrays together exceed ``--max-memory``; the
    suggestion is a limit that holds them (the arguments are loaded whole even
    with --rows, so a smaller selection is not always enough)."""
    total = sum(parts.values())
    listed = ", ".join(f"{name} {format_bytes(size)}" for name, size in parts.items() if size)
    return (f"--max-memory: this {plan.quantity.value} holds {format_bytes(total)} at once ({listed}), over the limit of "
            f"{format_bytes(max_memory)}; give --max-memory {size_option(total)}, or a smaller input")


def user_view(problem: Problem, layout: Layout, verify: bool) -> tuple[Problem, Layout]:
    """User code's per-sample view, decided once here: ``--layout blocks`` (refused,
    exit 2, where samples interact) or ``--layout auto`` (blocks when the output keeps
    the batch and the samples do not interact, else full with a note saying why). The
    checks themselves: :mod:`gradcli.usercode.independence`."""
    from ..usercode.independence import auto_blocks, verify_blocks

    if layout is Layout.BLOCKS:
        view = problem.as_per_sample()  # refuses outputs without the batch, and batch norm in training mode
        return (view.with_notes(verify_blocks(problem.bound)) if verify else view), layout
    if layout is Layout.AUTO and problem.wrt == "input":
        use, note = auto_blocks(problem.bound, verify)
        if use:
            return problem.as_per_sample().with_notes(note), Layout.BLOCKS
        return problem.with_notes(note), Layout.FULL
    return problem, layout


def resolve_layout(problem: Problem, quantity: Quantity, layout: Layout) -> Layout:
    """``auto``: diag for elementwise functions, per-row blocks when the output
    keeps batch rows, else full."""
    if quantity is not Quantity.JACOBIAN:
        return Layout.FULL
    rows = problem.rows
    has_blocks = rows is not None and not rows.reduced
    if layout is Layout.AUTO:
        if has_blocks and rows.elementwise:
            return Layout.DIAG
        return Layout.BLOCKS if has_blocks and rows.rows else Layout.FULL
    if layout in (Layout.BLOCKS, Layout.DIAG) and not has_blocks:
        why = "its output is one number (use --reduction none to keep rows)" if rows is not None else "it has no row structure"
        raise UsageError(f"--layout {layout.value}: {problem.function.name} has no {layout.value} here because {why}; use --layout full")
    if layout is Layout.DIAG and not rows.elementwise:
        raise UsageError(f"--layout diag: {problem.function.name} is not elementwise; use --layout blocks or full")
    if layout is Layout.BLOCKS and rows.elementwise and not rows.in_shape:
        raise UsageError("--layout blocks: a 0-d input has no rows; use --layout diag or full")
    return layout


def result_shape(problem: Problem, quantity: Quantity, layout: Layout) -> tuple[int, ...]:
    if quantity is Quantity.JVP:
        return problem.output_shape
    if quantity is not Quantity.JACOBIAN:
        return problem.wrt_shape
    if layout is Layout.BLOCKS:
        return problem.rows.blocks_shape
    if layout is Layout.DIAG:
        return problem.wrt_shape
    return problem.output_shape + problem.wrt_shape


def _too_large(plan: Plan, scattered: bool, max_memory: int, given: Problem, streaming: bool) -> str:
    """The refusal of a result over ``--max-memory``, suggesting only what would
    run under the same limit (each candidate planned again): other layouts,
    -o J.npy (streamed), vjp or jvp, a few rows; and always the limit that fits."""
    problem = plan.problem
    fits = []

    def planned(quantity, layout=Layout.AUTO, *, stream=False, on=given):
        vector = {Quantity.VJP: on.output_shape, Quantity.JVP: on.wrt_shape}.get(quantity)
        return fits_in(lambda: make_plan(on, quantity, layout, max_memory=max_memory, streaming=stream,
                                         vector_bytes=None if vector is None else math.prod(vector) * on.dtype.itemsize))

    if plan.quantity is Quantity.JACOBIAN:
        if scattered and planned(Quantity.JACOBIAN, Layout.BLOCKS):
            blocks = math.prod(problem.rows.blocks_shape) * problem.dtype.itemsize
            fits.append(f"--layout blocks ({format_bytes(blocks)})")
        if scattered and not streaming and planned(Quantity.JACOBIAN, Layout.FULL, stream=True):
            fits.append("-o J.npy (the full Jacobian written in chunks, never held whole)")
        fits += [f"`gradcli {q.value}`" for q in (Quantity.VJP, Quantity.JVP) if planned(q)]
    rows = _rows_that_fit(given, lambda part: make_plan(part, plan.quantity, plan.layout, max_memory=max_memory,
                                                         streaming=streaming))
    if rows:
        fits.append(f"--rows 0:{rows}")
    fits.append(f"--max-memory {size_option(plan.held_bytes)}")
    return (f"--max-memory: the {plan.quantity.value} result {list(plan.shape)} needs {format_bytes(plan.nbytes)}, "
            f"over the limit of {format_bytes(max_memory)}; try {' or '.join(fits)}")


def fits_in(make) -> bool:
    """Whether ``make()`` plans without a refusal (a suggestion is offered only if it would run)."""
    try:
        make()
    except UsageError:
        return False
    return True


def _rows_that_fit(problem: Problem, make) -> int:
    """The most leading rows (``--rows 0:K``) whose plan ``make(part)`` fits, by
    bisection; 0 where ``--rows`` does not apply, or for user code (selecting
    its rows runs it: no suggestion is worth that)."""
    from .problem import select_rows

    if not problem.function.closed_form or problem.args["input"].ndim < 2:
        return 0
    n = problem.args["input"].shape[0]

    def fits(k):
        try:
            make(select_rows(problem, f"0:{k}"))
        except UsageError:
            return False
        return True

    if n < 2 or not fits(1):
        return 0
    low, high = 1, n - 1  # (all n rows is the refused run itself)
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


# --- second order (hessian, hvp) -------------------------------------------------


@dataclass(frozen=True)
class SecondPlan:
    problem: Problem
    layout: Layout | None  # None: hvp, or --eig without blocks (the value is the eigenvalues)
    shape: tuple[int, ...]
    held_bytes: int


def plan_second(problem: Problem, quantity: Quantity, layout: Layout, *, eig: int | None,
                max_memory: int = DEFAULT_MAX_MEMORY, backend: BackendName = BackendName.ANALYTIC) -> SecondPlan:
    """Resolve the layout and the view, size what the run holds (the result, the
    blocks it is scattered from, and the backend's working arrays: fd's estimates
    and error estimates, torch's batch of basis vectors), refuse what would not fit."""
    rows = problem.rows
    itemsize = problem.dtype.itemsize
    n = math.prod(problem.wrt_shape)
    if quantity is Quantity.HVP or eig is not None:
        if problem.output_shape != ():
            what = "hvp" if quantity is Quantity.HVP else "--eig"
            raise UsageError(f"{what}: {problem.function.name} gives an output of shape {list(problem.output_shape)}, not "
                             f"one number; {one_number_fix(problem.function)} (the Hessian of a vector output has no "
                             "eigenvalues and no single H t)")
    if eig is not None and eig < 1:
        raise UsageError(f"--eig: {eig} is not a positive count; give e.g. --eig 1")
    def fits(plan: SecondPlan) -> SecondPlan:
        return _fits(plan, max_memory, problem, quantity, layout=given_layout, eig=eig, backend=backend)

    given_layout = layout
    if quantity is Quantity.HVP:
        return fits(SecondPlan(problem, None, problem.wrt_shape, 3 * n * itemsize))
    layout = resolve_second_layout(problem, layout, eig)
    # --eig by Lanczos: a few vectors of the argument's size
    lanczos = SecondPlan(problem, None, (2 * eig,), (max(2 * eig + 1, 20) + 4) * n * 8 if n > 2 * eig + 1 else n * n * 8) \
        if eig is not None else None
    if layout is None:
        return fits(lanczos)
    if layout is Layout.BLOCKS and rows.elementwise:
        problem = problem.along_axis(len(problem.wrt_shape) - 1)
        rows = problem.rows
    if layout is Layout.BLOCKS:
        shape = rows.rows + rows.out_block + (rows.features,) * 2
    elif layout is Layout.DIAG:
        shape = problem.wrt_shape
    else:
        shape = problem.output_shape + problem.wrt_shape * 2
    nbytes = math.prod(shape) * itemsize
    blocks = math.prod(rows.rows + rows.out_block + (rows.features,) * 2) * itemsize if rows is not None else \
        max(1, math.prod(problem.output_shape)) * n * n * itemsize
    if rows is not None and layout is Layout.FULL:  # the blocks, then the scatter
        nbytes += blocks
    elif rows is None:  # a basis of the argument swept per output entry
        nbytes += n * n * itemsize
    if backend is BackendName.FD:  # estimates, error estimates, their symmetric copies
        nbytes += 3 * blocks
    elif backend in (BackendName.AUTOGRAD, BackendName.FORWARD) and rows is not None:
        nbytes += 2 * (rows.features if rows.in_axis is not None else 1) * n * itemsize
    if nbytes > max_memory and lanczos is not None and given_layout is Layout.AUTO and lanczos.held_bytes <= max_memory:
        return lanczos  # --eig alone, its blocks over the limit: Lanczos on hvp, the Hessian never formed
    return fits(SecondPlan(problem, layout, shape, nbytes))


def resolve_second_layout(problem: Problem, layout: Layout, eig: int | None) -> Layout | None:
    rows = problem.rows
    name = problem.function.name
    if layout is Layout.AUTO:
        if rows is None:
            return None if eig is not None else Layout.FULL
        if rows.elementwise:
            return Layout.DIAG
        return Layout.BLOCKS if rows.rows else Layout.FULL
    if layout in (Layout.BLOCKS, Layout.DIAG) and rows is None:
        why = "your code has no known row structure" if not problem.function.closed_form else \
            f"every row depends on all of --{problem.wrt}"
        raise UsageError(f"--layout {layout.value}: the Hessian of {name} w.r.t. {problem.wrt} has no {layout.value} "
                         f"because {why}; use --layout full, or `gradcli hvp` (H t without forming H)")
    if layout is Layout.DIAG and not rows.elementwise:
        raise UsageError(f"--layout diag: {name} is not elementwise; use --layout blocks or full")
    if layout is Layout.BLOCKS and rows.elementwise and not rows.in_shape:
        raise UsageError("--layout blocks: a 0-d input has no rows; use --layout diag or full")
    return layout


def _fits(plan: SecondPlan, max_memory: int, problem: Problem, quantity: Quantity, *, layout: Layout,
          eig: int | None, backend: BackendName) -> SecondPlan:
    """``plan``, or exit 2 suggesting only what would run under the same limit
    (each candidate planned again): blocks, ``gradcli hvp``, ``--eig K`` by
    Lanczos, a few rows; and always the limit that fits."""
    if plan.held_bytes <= max_memory:
        return plan
    fits = []

    def planned(quantity_, layout_=Layout.AUTO, eig_=None, on=problem):
        return fits_in(lambda: plan_second(on, quantity_, layout_, eig=eig_, max_memory=max_memory, backend=backend))

    rows = problem.rows
    if quantity is Quantity.HESSIAN and plan.layout is Layout.FULL and rows is not None and rows.rows \
            and planned(quantity, Layout.BLOCKS, eig):
        blocks = math.prod(rows.rows + rows.out_block + (rows.features,) * 2) * problem.dtype.itemsize
        fits.append(f"--layout blocks ({format_bytes(blocks)})")
    if quantity is Quantity.HESSIAN and problem.output_shape == ():
        if planned(Quantity.HVP):
            fits.append("`gradcli hvp` (H t, the size of one argument)")
        if (eig is None or layout is not Layout.AUTO) and plan.layout is not None and planned(quantity, eig_=eig or 1):
            fits.append(f"--eig {eig or 1}{' without --layout' if layout is not Layout.AUTO else ''} "
                        "(Lanczos on hvp, never forming H)")
    count = _rows_that_fit(problem, lambda part: plan_second(part, quantity, layout, eig=eig, max_memory=max_memory,
                                                              backend=backend))
    if count:
        fits.append(f"--rows 0:{count}")
    fits.append(f"--max-memory {size_option(plan.held_bytes)}")
    what = f"the {quantity.value} result {list(plan.shape)}" if plan.layout is not None else \
        f"hvp (its result {list(plan.shape)} and working vectors)" if quantity is Quantity.HVP else "Lanczos on hvp"
    raise UsageError(f"--max-memory: {what} needs {format_bytes(plan.held_bytes)}, over the limit of "
                     f"{format_bytes(max_memory)}; try {' or '.join(fits)}")
