"""Typed option objects, built once at the CLI's edge from the parsed options (a
command line's, or a suite entry's converted by :func:`gradcli.cli.params.from_toml`).
Nothing below the command functions sees a dict of options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..checking.settings import CheckSettings
from ..core.errors import UsageError
from ..core.options import BackendName, BackendOptions, DType, Format, Layout, Quantity
from ..core.sizes import parse_size


@dataclass(frozen=True)
class Inputs:
    """What to differentiate, at which point: the FUNCTION, its arrays as given
    (ARRAY specs by catalogue name, read later within ``max_memory``), user code's
    ``--arg NAME=ARRAY``, ``--select`` and ``--weights``, the function's own options,
    and how to build the problem."""

    function: str
    arrays: Mapping[str, str]
    args: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    wrt: str = "input"
    dtype: DType | None = None
    seed: int = 0
    rows: str | None = None
    allow_nonfinite: bool = False
    max_memory: int = 2 * 2**30
    select: str | None = None  # user code: the tensor to differentiate in what it returns
    weights: str | None = None  # user code: PATH[:KEY] of trained weights, loaded first
    weights_prefix: str | None = None
    strict_weights: bool = True


@dataclass(frozen=True)
class Output:
    """How a result is shown and saved."""

    as_json: bool = False
    path: str | None = None  # -o
    precision: int = 4
    explain: bool = False
    heatmap: bool = False
    plot: str | None = None
    summarize: bool = True
    timing: bool = True
    value: bool = True  # JSON: False leaves ``value`` out (--no-value)


@dataclass(frozen=True)
class RunOptions:
    """``jacobian``, ``grad``, ``vjp``, ``jvp``, ``hessian``, ``hvp``. ``vector``: the
    ``--cotangent`` (vjp) or ``--tangent`` (jvp, hvp) spec."""

    quantity: Quantity
    inputs: Inputs
    backend: BackendName
    settings: BackendOptions
    output: Output
    layout: Layout = Layout.AUTO
    verify_blocks: bool = True
    vector: str | None = None
    per_sample: bool = False
    norms: bool = False
    top: int = 5
    eig: int | None = None


@dataclass(frozen=True)
class CheckOptions:
    """``check``: the problem's inputs, what to compare (:class:`CheckSettings`), the
    backends' settings, the report's output, the vectors, and the baseline files."""

    inputs: Inputs
    settings: CheckSettings
    backend: BackendOptions
    output: Output
    cotangent: str | None = None
    tangent: str | None = None
    baseline: str | None = None
    save_baseline: str | None = None


VECTOR = {Quantity.VJP: "cotangent", Quantity.JVP: "tangent", Quantity.HVP: "tangent"}


def run_options(quantity: Quantity, values: Mapping[str, Any]) -> RunOptions:
    refuse_empty(values)
    vector = VECTOR.get(quantity)
    return RunOptions(quantity, inputs_of(values), values["backend"], backend_settings(values), output_of(values),
                      layout=values.get("layout", Layout.AUTO), verify_blocks=values.get("verify_blocks", True),
                      vector=values.get(vector) if vector else None, per_sample=values.get("per_sample", False),
                      norms=values.get("norms", False), top=values.get("top", 5), eig=values.get("eig"))


def check_options(values: Mapping[str, Any]) -> CheckOptions:
    refuse_empty(values)
    fields = {name: values[name] for name in CheckSettings.names() if name in values}
    if fields.get("backends"):  # a comma list on the command line
        fields["backends"] = fields["backends"].split(",")
    return CheckOptions(inputs_of(values), CheckSettings(**fields), backend_settings(values), output_of(values),
                        cotangent=values.get("cotangent"), tangent=values.get("tangent"),
                        baseline=values.get("baseline"), save_baseline=values.get("save_baseline"))


def inputs_of(values: Mapping[str, Any]) -> Inputs:
    from ..catalogue import array_arguments, parameters

    if not 0 <= values["seed"] <= 2**64 - 1:  # what torch.manual_seed takes
        raise UsageError(f"--seed: {values['seed']} is not in 0 to 2**64 - 1")
    return Inputs(
        function=values["function"],
        arrays={name: values[name] for name in array_arguments() if values.get(name) is not None},
        args=tuple(values.get("arg") or ()),
        params={name: values[name] for name in parameters() if values.get(name) is not None},
        wrt=values["wrt"], dtype=values.get("dtype"), seed=values["seed"], rows=values.get("rows"),
        allow_nonfinite=values["allow_nonfinite"], max_memory=parse_size(values["max_memory"]),
        select=values.get("select"), weights=values.get("weights"), weights_prefix=values.get("weights_prefix"),
        strict_weights=values.get("strict_weights", True))


def output_of(values: Mapping[str, Any]) -> Output:
    return Output(as_json=values["json"] or values["format"] is Format.JSON, path=values.get("output"),
                  precision=values["precision"], explain=values["explain"], heatmap=values["heatmap"],
                  plot=values.get("plot"), summarize=not values["no_summarize"], timing=not values["no_timing"],
                  value=not values["no_value"])


def backend_settings(values: Mapping[str, Any]) -> BackendOptions:
    step = values["fd_step"]
    return BackendOptions(device=values["device"], fd_method=values["fd_method"], fd_dtype=values["fd_dtype"],
                          fd_step=None if step == "auto" else parse_positive_float(step, "--fd-step"))


def parse_positive_float(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{option}: {text!r} is not a positive number; write auto or e.g. 1e-4")
    if value < 2.2250738585072014e-308:  # subnormal: a difference quotient by it divides by ~0
        raise UsageError(f"{option}: {text!r} is below the smallest normal float64 (2.2e-308); write auto or e.g. 1e-4")
    return value


def refuse_empty(values: Mapping[str, Any]) -> None:
    """An option given as an empty text (``--baseline "$BASELINE"`` with the variable unset)
    is refused: read as absent, ``--baseline ''`` compared nothing and passed, ``-o ''``
    wrote nothing, ``--backends ''`` ran the defaults."""
    for name, value in values.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and not item.strip():
                option = "FUNCTION" if name == "function" else f"--{name.replace('_', '-')}"
                fix = "give one" if name in ("function", "input") else f"give a value or leave {option} out"
                raise UsageError(f"{option}: empty value (an unset shell variable?); {fix}")
