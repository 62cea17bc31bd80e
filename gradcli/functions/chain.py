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

import numpy as np

from .. import blockmath
from ..errors import UsageError
from .base import ArrayArg, Function, GeneralKernel, Param, RowKernel, RowLayout, Structure


class Chain(Function):
    def __init__(self, stages: list[Function]) -> None:
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
        structures = {stage.structure for stage in stages}
        self.structure = Structure.FULL if Structure.FULL in structures else (
            Structure.DIAGONAL if structures == {Structure.DIAGONAL} else Structure.BLOCKS)

    # --- arguments per stage -------------------------------------------------

    def owner(self, name: str) -> int:
        """The stage that takes array ``name`` (the input belongs to the first)."""
        for i, stage in enumerate(self.stages):
            if any(a.name == name for a in stage.arrays) and (name != "input" or i == 0):
                return i
        raise KeyError(name)

    def stage_args(self, i: int, args, z) -> dict[str, np.ndarray]:
        own = {a.name for a in self.stages[i].arrays} - {"input"}
        return {"input": z, **{k: v for k, v in args.items() if k in own and self.owner(k) == i}}

    def resolve_params(self, given):
        merged = super().resolve_params(given)
        merged["_stages"] = [stage.resolve_params({k: v for k, v in given.items() if k in {p.name for p in stage.params}})
                             for stage in self.stages]
        return merged

    def _walk(self, args, params, module=np):
        """Yield ``(i, stage, stage_args, stage_params)`` with each stage's input
        computed from the previous stage (NumPy values)."""
        z = args["input"]
        for i, stage in enumerate(self.stages):
            a, p = self.stage_args(i, args, z), params["_stages"][i]
            yield i, stage, a, p
            if i + 1 < len(self.stages):
                kernel = stage.kernel(a, p, "input")
                z = blockmath.forward(kernel, stage.row_layout(a, p, "input"), a["input"])

    def check(self, args, params):
        notes = []
        for i, stage, a, p in self._walk(args, params):
            try:
                notes += stage.check(a, p)
            except UsageError as err:
                if i == 0:
                    raise
                raise UsageError(f"{self.name}: stage {i + 1} ({stage.name}) gets shape {list(a['input'].shape)} "
                                 f"from the stage before: {err}") from None
            if i + 1 < len(self.stages) and stage.output_shape(a, p) == ():
                raise UsageError(f"{self.name}: {stage.name} gives one number, so it must be the last stage "
                                 "(use --reduction none to keep rows)")
        return notes

    def notes(self, args, params, wrt):
        notes = []
        for i, stage, a, p in self._walk(args, params):
            notes += [f"[{stage.name}] {n}" for n in stage.notes(a, p, wrt if i == self.owner(wrt) else "input")]
        return notes

    def differentiable(self, args):
        names = []
        for i, stage in enumerate(self.stages):
            own = {a.name for a in stage.arrays if (a.name != "input" or i == 0) and a.name in args}
            names += [n for n in stage.differentiable({k: v for k, v in args.items() if k in own or k == "input"})
                      if n in own and self.owner(n) == i]
        return tuple(dict.fromkeys(names))

    def output_shape(self, args, params):
        *_, (i, stage, a, p) = self._walk(args, params)
        return stage.output_shape(a, p)

    # --- structure and kernels ----------------------------------------------

    def _plan(self, args, params, wrt, axis=None):
        """Stages from the owner of ``wrt`` on, with their arguments, the name
        each is differentiated w.r.t., and the axis elementwise stages adopt
        (``axis``, or None, if every stage is elementwise). Returns (plan, axes, layouts)."""
        start = self.owner(wrt)
        plan = [(stage, a, p, wrt if i == start else "input") for i, stage, a, p in self._walk(args, params) if i >= start]
        plain = [stage.row_layout(a, p, w) for stage, a, p, w in plan]
        axes: list[int | None] = [None] * len(plan)
        if any(lay is None for lay in plain):
            return plan, axes, None
        feature = axis  # the feature axis of the current stage's input, once known
        first = next((j for j, lay in enumerate(plain) if not lay.elementwise), None)
        if first is not None:
            feature = plain[first].in_axis
        layouts = []
        for j, (stage, a, p, w) in enumerate(plan):
            lay = plain[j]
            if lay.elementwise and feature is not None:
                axes[j] = feature
                lay = stage.row_layout(a, p, w, axis=feature)
            elif feature is not None and lay.in_axis != feature:
                return plan, axes, None  # the rows of consecutive stages do not line up
            layouts.append(lay)
            if feature is not None:
                feature = lay.out_axis
        return plan, axes, layouts

    def row_layout(self, args, params, wrt, axis=None):
        plan, _, layouts = self._plan(args, params, wrt, axis)
        if layouts is None:
            return None
        first, last = layouts[0], layouts[-1]
        return RowLayout(first.in_shape, first.in_axis, last.out_axis, last.out_features, reduced=last.reduced)

    def kernel(self, args, params, wrt, axis=None):
        plan, axes, layouts = self._plan(args, params, wrt, axis)
        kernels = [stage.kernel(a, p, w, axis=ax) for (stage, a, p, w), ax in zip(plan, axes)]
        if layouts is not None:
            return _row_chain(kernels, layouts)
        layouts = [stage.row_layout(a, p, w) for stage, a, p, w in plan]
        return _general_chain(kernels, layouts, plan[0][1][plan[0][3]], self.output_shape(args, params))

    def torch_forward(self, args, params):
        z = args["input"]
        for i, stage in enumerate(self.stages):
            z = stage.torch_forward(self.stage_args(i, args, z), params["_stages"][i])
        return z


def _row_chain(kernels: list[RowKernel], layouts: list[RowLayout]) -> RowKernel:
    """Compose row-form kernels that share their rows."""

    def forward(x):
        for kernel, layout in zip(kernels, layouts):
            x = kernel.forward(x)
            if layout.out_axis is None and layout is not layouts[-1]:
                x = x[..., None]  # one number per row feeds the next stage as its single feature
        return x

    def blocks():
        total = None
        for kernel, layout in zip(kernels, layouts):
            b = kernel.blocks()
            b = b if layout.out_axis is not None else b[..., None, :]  # (*rows, K, C)
            total = b if total is None else b @ total
        return total if layouts[-1].out_axis is not None else total[..., 0, :]

    last = kernels[-1]
    return RowKernel(x0=kernels[0].x0, forward=forward, blocks=blocks, coef=last.coef, empty_mean=last.empty_mean)


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

    return GeneralKernel(x0=x0, output_shape=tuple(output_shape), forward=forward, vjp=vjp, jvp=jvp)


def _natural(kernel, layout) -> GeneralKernel:
    """A row kernel as natural-shape operators (stack axes allowed)."""
    if isinstance(kernel, GeneralKernel):
        return kernel
    blocks = kernel.blocks()
    out_shape = () if layout.reduced else layout.unreduced_shape
    return GeneralKernel(
        x0=layout.from_rows(kernel.x0), output_shape=out_shape,
        forward=lambda x: blockmath.forward(kernel, layout, x),
        vjp=lambda v: blockmath.vjp(blocks, layout, kernel.coef, v),
        jvp=lambda t: blockmath.jvp(blocks, layout, kernel.coef, t),
    )
