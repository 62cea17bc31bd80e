"""From typed options to a validated Problem: the output paths checked first (an
output that is also an input is refused before anything is read), the FUNCTION
looked up, every array read within ``--max-memory`` (together, each refused before
it is read: :func:`read`, where ``health`` stops and binds the batch itself), the
problem built, ``--rows`` applied, and the vjp/jvp/hvp vector read in the shape it
must have (:func:`load`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..core.errors import UsageError
from .options import Inputs, Output


@dataclass(frozen=True)
class Loaded:
    """What a command computes on: the problem, its vectors by name (``cotangent``,
    ``tangent``), the checked output paths, and when loading began and ended."""

    problem: Any
    vectors: Mapping[str, Any]
    out_path: Path | None
    plot_path: Path | None
    started: float
    loaded: float


@dataclass(frozen=True)
class Read:
    """The arrays of a command, read: the FUNCTION looked up (user code configured with
    ``--seed`` and the ``--arg`` names), every array by name, the checked output paths."""

    function: Any
    arrays: Mapping[str, Any]
    out_path: Path | None
    plot_path: Path | None
    started: float


def read(inputs: Inputs, output: Output, *, vectors: Mapping[str, str | None] | None = None,
         also_written: Mapping[str, str | None] | None = None, also_read: Mapping[str, str | None] | None = None,
         suffixes: tuple[str, ...] | None = None) -> Read:
    """Output paths checked (``suffixes``: the extensions ``-o`` may have), the FUNCTION looked up,
    and every array read within ``--max-memory``. ``vectors`` only take part in the checks here
    (one reader of standard input, no output over an input): they are read in their shape by
    :func:`load`. ``also_written``: other output files by option (``--save-baseline``);
    ``also_read``: other input files by option (``--baseline``). No output may be an input,
    the FUNCTION's file included, nor another output, before anything is read."""
    started = time.perf_counter()
    from ..catalogue.base import option_name
    from ..io.arrays import file_of, load_array
    from ..io.files import check_output_path, check_plot_path, refuse_same_file
    from ..problem.function import user_function
    from ..usercode.signature import parse_arg_options

    if inputs.arrays.get("input") is None:
        raise UsageError("--input: missing; give the input with -x, e.g. -x randn:3,5 or -x logits.npy")
    vectors = {name: spec for name, spec in (vectors or {}).items() if spec is not None}
    out_path = None
    if output.path:
        out_path = check_output_path(output.path) if suffixes is None else \
            check_output_path(output.path, "--output", suffixes)
    plot_path = None
    if output.plot:
        _require_matplotlib()
        plot_path = check_plot_path(output.plot)
    specs = dict(inputs.arrays)
    named = parse_arg_options(list(inputs.args), set(specs))
    every = {**specs, **named, **vectors}

    def option(name: str) -> str:
        return f"--arg {name}" if name in named else option_name(name)

    readers = [option(n) for n, spec in every.items() if spec.strip() == "-"]
    if len(readers) > 1:
        raise UsageError(f"{readers[1]}: only one option can read standard input (-), and {readers[0]} does; "
                         "give the others as files")
    from ..problem.function import function_file

    read = {"FUNCTION": function_file(inputs.function), **(also_read or {}),
            **{option(n): file_of(spec) for n, spec in every.items()}}
    if inputs.weights is not None:
        from ..io.checkpoints import split_spec

        read["--weights"] = split_spec(inputs.weights)[0]
    refuse_same_file({"--output": out_path, "--plot": plot_path, **(also_written or {})}, read,
                     allowed=frozenset({("--save-baseline", "--baseline")}))  # a baseline refreshed in place
    function = user_function(inputs.function, inputs.seed, tuple(named), select=inputs.select,
                             weights=inputs.weights, weights_prefix=inputs.weights_prefix,
                             strict_weights=inputs.strict_weights, max_memory=inputs.max_memory)
    specs.update(named)
    arrays: dict[str, Any] = {}
    for name, spec in specs.items():  # together within --max-memory, each refused before it is read
        arrays[name] = load_array(spec, option(name), seed=inputs.seed, max_bytes=inputs.max_memory,
                                  held=sum(a.nbytes for a in arrays.values()))
    return Read(function, arrays, out_path, plot_path, started)


def load(inputs: Inputs, output: Output, *, vectors: Mapping[str, str | None] | None = None,
         also_written: Mapping[str, str | None] | None = None, also_read: Mapping[str, str | None] | None = None,
         differentiates_input: bool | None = None) -> Loaded:
    """:func:`read`, then the problem built, ``--rows`` applied and the vectors read:
    ``{"cotangent"|"tangent": spec}`` like the output (cotangent) or the differentiated
    argument (tangent); ``differentiates_input``: as
    :func:`gradcli.problem.problem.build_problem`'s."""
    from ..catalogue.base import option_name
    from ..io.arrays import load_array
    from ..problem.problem import build_problem, select_rows

    got = read(inputs, output, vectors=vectors, also_written=also_written, also_read=also_read)
    problem = build_problem(got.function, got.arrays, inputs.params, wrt=inputs.wrt, dtype=inputs.dtype,
                            allow_nonfinite=inputs.allow_nonfinite, differentiates_input=differentiates_input)
    if inputs.rows is not None:  # (an empty --rows is refused by its parser, not ignored)
        problem = select_rows(problem, inputs.rows)
    read_vectors = {}
    for name, spec in (vectors or {}).items():
        if spec is None:
            continue
        like = problem.output_shape if name == "cotangent" else problem.wrt_shape
        read_vectors[name] = load_array(spec, option_name(name), seed=inputs.seed, like=like,
                                        max_bytes=inputs.max_memory, held=sum(a.nbytes for a in got.arrays.values()))
    return Loaded(problem, read_vectors, got.out_path, got.plot_path, got.started, time.perf_counter())


def _require_matplotlib() -> None:
    """``--plot`` without matplotlib: refused before any work (the import itself waits
    for the drawing: it costs a third of a second)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot: needs matplotlib, which is not installed; pip install 'gradcli[plot]'")
