"""Second order: ``hessian`` and ``hvp`` — compute (the plan is
:func:`gradcli.plan.plan_second`), describe, and the top eigenvalues
(``--eig K``). :func:`gradcli.api.solve` validates the tangent and calls
:func:`solve_second`; this module never imports the api (no cycle).

Layouts (SPEC §3 "Second order"): ``full`` is ``output_shape + wrt_shape +
wrt_shape`` (``torch.func.hessian``'s shape); ``blocks`` is ``(*rows,
*out_block, C, C)`` for a function of independent rows (block r of a reduced
loss's Hessian is ``coef_r d2 l_r``; every entry between rows is 0); ``diag``
is an elementwise function's ``f''`` shaped like the argument. ``auto``: diag
for elementwise functions, blocks for functions of rows, else full.

Eigenvalues of the Hessian of a scalar output over the flattened argument:
exact from the blocks when they exist (the spectrum of a block-diagonal
matrix is the union of its blocks' spectra: ``numpy.linalg.eigvalsh`` per
block), otherwise Lanczos on ``hvp`` (``scipy.sparse.linalg.eigsh`` on a
``LinearOperator``, never forming H), with the residual ``max ||H v - l v||``
and the number of hvps. Small arguments (n <= DENSE_HVPS) use the dense
Hessian from n hvps: exact, and cheaper than Lanczos there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backends import resolve
from ..backends.second import get_second_backend, hvp_operator
from ..core.errors import BackendError
from ..core.options import BackendName, BackendOptions, Layout, Quantity
from ..problem.plan import DEFAULT_MAX_MEMORY, plan_second
from ..problem.problem import Problem
from ..core.results import Result, frozen

STRUCTURE_ENTRIES = 2**16  # the notes read at most this many entries (a sample of the blocks past it) ...
STRUCTURE_FLOPS = 2**18  # ... and spend at most this on eigenvalues: they must cost little next to the result
# Lanczos's two runs (one per end of the spectrum) take at least 2 max(2K+1, 20) hvps, and with their
# restarts several times that (K = 2: 183 hvps for 32 entries, 458 for 80): up to this many entries the
# n hvps of the dense Hessian (n² numbers: 512 KiB at most) cost less and give every eigenvalue exactly.
DENSE_HVPS = 256


@dataclass(frozen=True)
class Spectrum:
    """The K smallest and K largest eigenvalues (ascending), how they were found,
    and for Lanczos its residual and hvp count. ``values``: every eigenvalue
    when exact (for ``--plot``), else None."""

    smallest: np.ndarray
    largest: np.ndarray
    method: str
    residual: float | None = None
    hvps: int | None = None
    values: np.ndarray | None = None


def solve_second(
    problem: Problem,
    quantity: Quantity,
    *,
    backend: BackendName = BackendName.AUTO,
    layout: Layout = Layout.AUTO,
    tangent: np.ndarray | None = None,
    eig: int | None = None,
    options: BackendOptions = BackendOptions(),
    max_memory: int = DEFAULT_MAX_MEMORY,
    **_: Any,
) -> Result:
    """``hessian`` (in ``layout``; with ``eig`` its K smallest and largest
    eigenvalues) or ``hvp`` (``tangent``: validated by :func:`gradcli.api.solve`,
    shaped like the argument)."""
    quantity, layout = Quantity(quantity), Layout(layout)
    name = resolve(BackendName(backend), problem)
    plan = plan_second(problem, quantity, layout, eig=eig, max_memory=max_memory, backend=name)
    view = plan.problem
    engine = get_second_backend(name, options)
    start = time.perf_counter()
    spectrum = None
    notes: tuple[str, ...] = ()
    # As first order: overflow and 0/0 (infinite logits, points beyond a domain edge) give inf and nan, counted
    # and said in notes, never NumPy warnings on stderr.
    with np.errstate(all="ignore"):
        if quantity is Quantity.HVP:
            got = engine.hvp(view, tangent)
            value = got.value
        elif plan.layout is None:  # --eig without blocks: Lanczos, the Hessian never formed
            spectrum, output = lanczos(view, engine, eig)
            got = None
            value = np.concatenate([spectrum.smallest, spectrum.largest])
            if spectrum.method.startswith("exact"):  # a small argument: H formed from n hvps, cheaper than Lanczos
                notes = ("--eig: value holds the K smallest then the K largest eigenvalues, exact from H formed from "
                         "hvps and not kept (it has no row blocks here, or they would not fit --max-memory; give "
                         "--layout full or blocks to see H as well, when it fits)",)
            else:
                notes = ("--eig: the Hessian is not formed (it has no row blocks here, or they would not fit "
                         "--max-memory): value holds the K smallest then the K largest eigenvalues by Lanczos on hvp "
                         "(give --layout full or blocks to see H as well, when it fits)",)
        else:
            got = engine.hessian(view, plan.layout)
            value = got.value
            if eig is not None:
                spectrum = exact_or_lanczos(view, engine, plan.layout, value, eig)
    seconds = time.perf_counter() - start
    if got is not None:
        output, error, evaluations, notes = got.output, got.error, got.evaluations, notes + got.notes
    else:
        error, evaluations = None, None
    dtype = problem.dtype
    value = np.asarray(value).astype(dtype, copy=False)
    structure = hessian_structure(value, plan.layout, view, dtype, error) \
        if quantity is Quantity.HESSIAN and plan.layout else ()
    return Result(
        quantity=quantity, function=problem.function.name, params=problem.params, wrt=problem.wrt, backend=name,
        dtype=str(dtype), input_shape=problem.input_shape, wrt_shape=problem.wrt_shape,
        output_shape=problem.output_shape, layout=plan.layout, value=frozen(value),
        output=frozen(np.asarray(output).astype(dtype, copy=False)), notes=view.notes + notes, structure=structure,
        seconds=seconds, error=None if error is None else frozen(np.asarray(error).astype(dtype, copy=False)),
        evaluations=evaluations, formulas=second_formulas(problem.function),
        batch_axes=len(view.rows.rows) if plan.layout is Layout.BLOCKS else 0, spectrum=spectrum,
        nonsmooth=None if got is None or got.nonsmooth is None else frozen(np.asarray(got.nonsmooth)),
        vector=frozen(np.asarray(tangent)) if quantity is Quantity.HVP else None,  # (so -o .npz reproduces it)
        parts=problem.parts if got is not None else (),  # (--eig alone: the value holds eigenvalues)
    )


def second_formulas(function) -> tuple[str, ...]:
    """What --explain shows for hessian and hvp: the first derivatives, then the second."""
    second = tuple(getattr(function, "second_formulas", ()))
    return tuple(function.formulas) + (("second derivatives:",) + tuple(f"  {line}" for line in second) if second else ())


# --- structure ---------------------------------------------------------------------


def hessian_structure(value: np.ndarray, layout: Layout, problem: Problem, dtype,
                      error: np.ndarray | None = None) -> tuple[str, ...]:
    """Notes on a Hessian: symmetry (a warning when it fails: a wrong double
    backward), block-diagonality, definiteness and null vectors of the blocks.
    Tolerances: round-off of the dtype, or fd's own error estimate."""
    if value.size == 0:
        return ()
    notes: list[str] = []
    rows = problem.rows
    if layout is Layout.DIAG:
        notes.append("diagonal (entry by entry): H[i, j] = 0 whenever i != j; the value shown is the diagonal, "
                     "so H is symmetric")
        matrices = None
    elif layout is Layout.BLOCKS:
        matrices = value.reshape((-1,) + value.shape[value.ndim - 2:])
        notes.append(f"block-diagonal across batch rows: {rows.n_rows} blocks of shape "
                     f"{list(rows.out_block + (rows.features,) * 2)}; every entry between different rows is 0")
    else:
        n = math.prod(problem.wrt_shape)
        matrices = value.reshape((-1, n, n))
    sample = value if matrices is None else matrices[: max(1, STRUCTURE_ENTRIES // matrices[0].size)]
    checked = "" if matrices is None or len(sample) == len(matrices) else \
        f" (checked on the first {len(sample)} of {len(matrices)} blocks)"
    if not np.isfinite(sample).all():
        return tuple(notes)
    scale = max(1.0, float(np.abs(sample).max()))
    tol = 100 * float(np.finfo(dtype).eps) * scale
    if error is not None and error.size:
        tol = max(tol, 10 * float(np.max(error)))
    if not np.any(sample) and not np.any(value):
        return ("the Hessian is 0: the function is linear in this argument (no curvature)",)
    if matrices is not None:
        matrices = sample
        asym = float(np.abs(matrices - np.swapaxes(matrices, -1, -2)).max())
        if asym <= tol:
            notes.append(f"symmetric, as every Hessian of a smooth function (d2f/dx_i dx_j = d2f/dx_j dx_i){checked}")
        else:
            notes.append(f"WARNING: NOT symmetric (largest |H - H^T| = {asym:.2e}): a true Hessian is symmetric, so a "
                         "double backward is wrong here (a custom autograd.Function whose backward is not differentiable "
                         "as written?); compare with `gradcli check --quantity hessian`")
            return tuple(notes)
    square = layout is Layout.BLOCKS and not rows.out_block or problem.output_shape == ()
    if matrices is not None and square and matrices.shape[-1] ** 3 <= STRUCTURE_FLOPS:
        count = max(1, STRUCTURE_FLOPS // matrices.shape[-1] ** 3)
        if count < len(matrices):
            matrices = matrices[:count]
            checked = f" (checked on the first {count} of {rows.n_rows if layout is Layout.BLOCKS else 1} blocks)"
        eigenvalues = np.linalg.eigvalsh(matrices)
        lowest = float(eigenvalues.min())
        where = "each block is" if layout is Layout.BLOCKS else "H is"
        if lowest >= -tol * matrices.shape[-1]:
            notes.append(f"{where} positive semi-definite (smallest eigenvalue {max(lowest, 0.0):.3g}): "
                         f"the function is convex there{checked}")
        elif float(eigenvalues.max()) <= tol * matrices.shape[-1]:
            notes.append(f"{where} negative semi-definite (largest eigenvalue {float(eigenvalues.max()):.3g})")
        else:
            notes.append(f"{where} indefinite: eigenvalues from {lowest:.3g} to {float(eigenvalues.max()):.3g} (a saddle)")
        if matrices.shape[-1] > 1 and np.abs(matrices.sum(axis=-1)).max() <= tol * matrices.shape[-1]:
            notes.append("each row of it sums to 0: the all-ones vector is in its null space (H 1 = 0), so moving "
                         f"every entry of a row together (shifting all logits by the same amount) changes nothing{checked}")
    zeros = float(np.mean(sample == 0))
    if zeros:
        notes.append(f"{zeros:.1%} of the entries {'checked' if checked else 'shown'} are exactly 0")
    return tuple(notes)


# --- eigenvalues -------------------------------------------------------------------


def exact_or_lanczos(problem: Problem, engine, layout: Layout, value: np.ndarray, k: int) -> Spectrum:
    """From the Hessian just computed: every block's spectrum merged (or the
    diagonal itself), else the dense matrix when small, else Lanczos."""
    rows = problem.rows
    if layout is Layout.DIAG:
        everything = np.sort(value.reshape(-1))
        method = "exact: the diagonal entries (an elementwise function's Hessian is diagonal)"
    elif layout is Layout.BLOCKS:
        everything = np.sort(np.linalg.eigvalsh(value).reshape(-1))
        method = f"exact: numpy.linalg.eigvalsh on each of the {rows.n_rows} blocks, merged"
    else:
        n = math.prod(problem.wrt_shape)
        if n > 4096:
            return lanczos(problem, engine, k)[0]
        everything = np.linalg.eigvalsh(value.reshape(n, n))
        method = "exact: numpy.linalg.eigvalsh on the full Hessian"
    k = min(k, everything.size)
    return Spectrum(everything[:k].copy(), everything[everything.size - k:].copy(), method, values=everything)


def lanczos(problem: Problem, engine, k: int) -> tuple[Spectrum, np.ndarray]:
    """The K smallest and K largest eigenvalues from hvps alone; returns
    ``(spectrum, output)``."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    shape, dtype = problem.wrt_shape, problem.dtype
    n = math.prod(shape)
    k = min(k, n)  # --eig K beyond the argument's size: every eigenvalue, as the exact paths give
    count = [0]
    apply, output = hvp_operator(engine, problem)

    def matvec(v):
        count[0] += 1
        return np.asarray(apply(np.asarray(v, dtype=np.float64).reshape(shape).astype(dtype)), dtype=np.float64).reshape(-1)

    if n <= max(DENSE_HVPS, 2 * k + 1):  # small: the dense Hessian from n hvps, exact eigenvalues
        dense = np.stack([matvec(e) for e in np.eye(n)], axis=1)
        values, vectors = np.linalg.eigh(0.5 * (dense + dense.T))
        method = (f"exact: numpy.linalg.eigh on the Hessian formed from {n} hvps (fewer than Lanczos would take "
                  f"for {n} entries)")
    else:
        # One run per end: the largest of H, then the largest of sigma I - H (sigma above H's top):
        # ARPACK's test is relative to the eigenvalue, so the small end is sought where it is
        # far from 0 (eigsh's "SA" and "BE" stall on a cluster of zero eigenvalues, common in losses).
        tol = float(np.finfo(dtype).eps) ** 0.5
        v0 = np.random.default_rng(0).standard_normal(n)
        high, high_vectors = _eigsh(eigsh, LinearOperator((n, n), matvec=matvec, dtype=np.float64), k, tol, v0)
        sigma = float(high.max()) * 1.01 + abs(float(high.max())) * 0.01 + 1e-30
        flipped = LinearOperator((n, n), matvec=lambda v: sigma * np.ravel(v) - matvec(v), dtype=np.float64)
        low, low_vectors = _eigsh(eigsh, flipped, k, tol, v0)
        values = np.concatenate([sigma - low, high])
        vectors = np.concatenate([low_vectors, high_vectors], axis=1)
        method = (f"Lanczos: scipy.sparse.linalg.eigsh on hvp (tol {tol:.0e}), the Hessian never formed; a repeated "
                  "eigenvalue may be listed once (Krylov methods do not see multiplicity)")
    order = np.argsort(values)
    values, vectors = values[order], vectors[:, order]
    keep = np.r_[0:k, len(values) - k:len(values)]
    apply_h = (lambda v: dense @ v) if n <= max(DENSE_HVPS, 2 * k + 1) else matvec  # (dense: no more hvps)
    residual = max(float(np.linalg.norm(apply_h(vectors[:, i]) - values[i] * vectors[:, i])) for i in keep)
    spectrum = Spectrum(values[:k].copy(), values[len(values) - k:].copy(), method, residual=residual, hvps=count[0])
    return spectrum, output


def _eigsh(eigsh, operator, k, tol, v0):
    """The k largest eigenvalues and vectors; BackendError (exit 3) if Lanczos does not converge."""
    from scipy.sparse.linalg import ArpackNoConvergence

    n = operator.shape[0]
    try:
        return eigsh(operator, k=k, which="LA", tol=tol, v0=v0, maxiter=max(1000, 10 * n))
    except ArpackNoConvergence as err:
        raise BackendError(f"--eig: Lanczos did not converge ({err}); try a smaller K") from None
