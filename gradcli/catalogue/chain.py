"""Chains: built-ins joined by commas, applied left to right
(``linear,cross_entropy``: a Linear layer, then the loss).

Arrays and options go to every stage that takes them; the ``input`` of
stage i+1 is the output of stage i. The chain rule composes the stages'
derivatives: where every stage is row-independent along the same axis (and
elementwise stages adopt that axis), blocks multiply row by row,
``B = B_k ... B_1``; otherwise (``--wrt weight``, or rows that do not line
up) the chain is a composition of vjps and jvps:
``v^T J = vjp_1(... vjp_k(v))`` and ``J t = jvp_k(... jvp_1(t))``.
"""

from __future__ import annotations


from dataclasses import dataclass
from types import MappingProxyType

from ..core import rowform
from ..core.errors import UsageError
from ..core.rowform import GeneralKernel, RowKernel, RowLayout, second
from .base import ArrayArg, Bound, Function, Param, Structure, option_name


class Chain(Function):
    def __init__(self, stages: list[Function]) -> None:
        for stage in stages:
            if not stage.closed_form:
                raise UsageError(f"FUNCTION: {stage.name} is your code, which cannot be a stage of a chain; "
                                 "apply the rest inside your file (e.g. return F.cross_entropy(model(x), target))")
        names = [arg.name for stage in stages for arg in stage.arrays if arg.name != "input"]
        shared = next((name for name in names if names.count(name) > 1), None)
        if shared is not None:
            raise UsageError(f"FUNCTION: two stages of {','.join(s.name for s in stages)} take {option_name(shared)}, "
                             "but a chain has one of each array; write the network as a .py model "
                             "(PATH.py:NAME) to give each layer its own weights")
        self.stages = stages
        self.name = ",".join(stage.name for stage in stages)
        self.summary = " then ".join(stage.name for stage in stages)
        arrays: dict[str, ArrayArg] = {}
        for i, stage in enumerate(stages):
            for arg in stage.arrays:
                if arg.name == "input" and i > 0:
                    continue
                arrays.setdefault(arg.name, arg)
        self.arrays = tuple(arrays.values())
        params: dict[str, Param] = {}
        for stage in stages:
            for p in stage.params:
                params.setdefault(p.name, p)
        self.params = tuple(params.values())
        self.formulas = tuple(f"[{stage.name}] {line}" for stage in stages for line in stage.formulas) + (
            "chain rule: J = J_last ... J_first (blocks multiply row by row); "
            "a gradient flows back through each stage's vjp",
        )
        self.second_formulas = tuple(f"[{stage.name}] {line}" for stage in stages for line in stage.second_formulas) + (
            "chain rule, second order: H t = J^T (H_outer) J t + sum_k (dL/dz)_k (d2 z_k) t, stage by stage "
            "(forward over reverse); the second term vanishes where the inner stage is linear",
        )
        structures = {stage.structure for stage in stages}
        self.structure = Structure.FULL if Structure.FULL in structures else (
            Structure.DIAGONAL if structures == {Structure.DIAGONAL} else Structure.BLOCKS)

    # --- arguments per stage -------------------------------------------------

    def owner(self, name: str) -> int:
        """The stage that takes array ``name`` (the input belongs to the first)."""
        for i, stage in enumerate(self.stages):
            if any(a.name == name for a in stage.arrays) and (name != "input" or i == 0):
                return i
        raise UsageError(f"--wrt {name}: {self.name} takes no array {name!r}")

    def stage_args(self, i: int, args, z) -> dict:
        own = {a.name for a in self.stages[i].arrays} - {"input"}
        return {"input": z, **{k: v for k, v in args.items() if k in own and self.owner(k) == i}}

    def bind(self, args, params, dtype=None) -> "ChainBound":
        """Bind every stage once, each at the NumPy activation of the stage before."""
        resolved = self.resolve_params(params)
        given = dict(params)
        bounds, notes = [], []
        z = args["input"]
        for i, stage in enumerate(self.stages):
            own = {p.name for p in stage.params}
            try:
                bound = stage.bind(self.stage_args(i, args, z), {k: v for k, v in given.items() if k in own})
            except UsageError as err:
                if i == 0:
                    raise
                raise UsageError(f"{self.name}: stage {i + 1} ({stage.name}) gets shape {list(z.shape)} "
                                 f"from the stage before: {err.cli_message()}") from None
            bounds.append(bound)
            notes += bound.notes
            if i + 1 < len(self.stages):
                if bound.output_shape == ():
                    raise UsageError(f"{self.name}: {stage.name} gives one number, so it must be the last stage "
                                     "(use --reduction none to keep rows)")
                z = rowform.forward(bound.kernel("input"), bound.row_layout("input"), z)
        return ChainBound(self, MappingProxyType(dict(args)), MappingProxyType(resolved), bounds[-1].output_shape,
                          tuple(notes), stages=tuple(bounds))


@dataclass(frozen=True, eq=False)
class ChainBound(Bound):
    """A chain bound once: ``stages`` holds each stage's Bound at its activation."""

    stages: tuple[Bound, ...] = ()

    def differentiable(self):
        chain = self.function
        return tuple(dict.fromkeys(n for i, bound in enumerate(self.stages) for n in bound.differentiable()
                                   if n in self.args and (n != "input" or i == 0) and chain.owner(n) == i))

    def wrt_notes(self, wrt):
        start = self.function.owner(wrt)
        return tuple(f"[{b.name}] {n}" for i, b in enumerate(self.stages) for n in b.wrt_notes(wrt if i == start else "input"))

    def kinks(self):
        return None

    def _plan(self, wrt, axis=None):
        """Stages from the owner of ``wrt`` on, the name each is differentiated
        w.r.t., and the axis elementwise stages adopt (``axis``, or None if every
        stage is elementwise). Returns ``(plan, axes, layouts)``; layouts is None
        when the stages' rows do not line up."""
        start = self.function.owner(wrt)
        plan = [(bound, wrt if i == start else "input") for i, bound in enumerate(self.stages) if i >= start]
        plain = [bound.row_layout(w) for bound, w in plan]
        axes: list[int | None] = [None] * len(plan)
        if any(lay is None for lay in plain):
            return plan, axes, None
        feature = axis  # the feature axis of the current stage's input, once known
        first = next((j for j, lay in enumerate(plain) if not lay.elementwise), None)
        if first is not None:
            feature = plain[first].in_axis
        layouts = []
        for j, (bound, w) in enumerate(plan):
            lay = plain[j]
            if lay.elementwise and feature is not None:
                axes[j] = feature
                lay = bound.row_layout(w, axis=feature)
            elif feature is not None and lay.in_axis != feature:
                return plan, axes, None
            layouts.append(lay)
            if feature is not None:
                feature = lay.out_axis
        return plan, axes, layouts

    def row_layout(self, wrt, axis=None):
        def make():
            _, _, layouts = self._plan(wrt, axis)
            if layouts is None:
                return None
            first, last = layouts[0], layouts[-1]
            return RowLayout(first.in_shape, first.in_axis, last.out_axis, last.out_features, reduced=last.reduced)

        return self._cached(("rows", wrt, axis), make)

    def kernel(self, wrt, axis=None, budget=None):  # built-ins only: no budget to pass on
        def make():
            plan, axes, layouts = self._plan(wrt, axis)
            kernels = [bound.kernel(w, axis=ax) for (bound, w), ax in zip(plan, axes)]
            if layouts is not None:
                return _row_chain(kernels, layouts)
            layouts = [bound.row_layout(w) for bound, w in plan]
            return _general_chain(kernels, layouts, plan[0][0].args[plan[0][1]], self.output_shape)

        return self._cached(("kernel", wrt, axis), make)

    def torch_forward(self, tensors):
        z = tensors["input"]
        for i, bound in enumerate(self.stages):
            z = bound.torch_forward(self.function.stage_args(i, tensors, z))
        return z


def _row_chain(kernels: list[RowKernel], layouts: list[RowLayout]) -> RowKernel:
    """Compose row-form kernels that share their rows: blocks multiply row by
    row, vjp and jvp compose the stages' own row operators (no block formed).
    A stage giving one number per row feeds the next as its single feature."""
    last = len(kernels) - 1

    def forward(x):
        for j, (kernel, layout) in enumerate(zip(kernels, layouts)):
            x = kernel.forward(x)
            if layout.out_axis is None and j < last:
                x = x[..., None]
        return x

    def blocks():
        total = None
        for kernel, layout in zip(kernels, layouts):
            b = kernel.blocks()
            b = b if layout.out_axis is not None else b[..., None, :]  # (*rows, K, C)
            total = b if total is None else b @ total
        return total if layouts[-1].out_axis is not None else total[..., 0, :]

    def vjp(u):
        for j in reversed(range(len(kernels))):
            if layouts[j].out_axis is None and j < last:
                u = u[..., 0]
            u = rowform.row_vjp(kernels[j], layouts[j], u)
        return u

    def jvp(t):
        for j, (kernel, layout) in enumerate(zip(kernels, layouts)):
            t = rowform.row_jvp(kernel, layout, t)
            if layout.out_axis is None and j < last:
                t = t[..., None]
        return t

    return RowKernel(x0=kernels[0].x0, forward=forward, blocks=blocks, coef=kernels[-1].coef,
                     empty_mean=kernels[-1].empty_mean, vjp=vjp, jvp=jvp, hvp=second.chain_row_hvp(kernels, layouts))


def _general_chain(kernels, layouts, x0, output_shape) -> GeneralKernel:
    """Compose natural-shape operators: forward, vjp (backwards), jvp (forwards)."""
    ops = [_natural(k, lay) for k, lay in zip(kernels, layouts)]

    def forward(x):
        for op in ops:
            x = op.forward(x)
        return x

    def vjp(v):
        for op in reversed(ops):
            v = op.vjp(v)
        return v

    def jvp(t):
        for op in ops:
            t = op.jvp(t)
        return t

    return GeneralKernel(x0=x0, output_shape=tuple(output_shape), forward=forward, vjp=vjp, jvp=jvp,
                         hvp=second.chain_general_hvp(ops))


def _natural(kernel, layout) -> GeneralKernel:
    """A row kernel as natural-shape operators (stack axes allowed)."""
    if isinstance(kernel, GeneralKernel):
        return kernel
    return GeneralKernel(
        x0=layout.from_rows(kernel.x0), output_shape=layout.output_shape,
        forward=lambda x: rowform.forward(kernel, layout, x),
        vjp=lambda v: rowform.vjp(kernel, layout, v),
        jvp=lambda t: rowform.jvp(kernel, layout, t),
        hvp=second.natural_hvp(kernel, layout),
    )
