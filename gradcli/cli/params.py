"""Every option of every command, declared once as data (:class:`Opt`).

One declaration feeds the typer options (with their help panel), the conversion of
a suite entry's TOML values (:func:`from_toml`) and the CLI reference page
(``docs/cli.md``, generated from ``--help``). The built-ins' own options come from
the catalogue's ``Param``s and ``ArrayArg``s, each in the help panel of the
function family that declares it first, its help naming every function that takes it.
"""

from __future__ import annotations

import enum
import inspect
import json
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape  # help is rich markup: gradcli[plot] would lose its brackets

from ..core.errors import UsageError
from ..core.options import BackendName, CheckMode, Device, DType, FdDType, FdMethod, Format, Layout, Quantity

INPUTS, DIFF, BACKEND, OUTPUT, LIMITS = "Inputs", "Differentiation", "Backend", "Output", "Limits"
CODE = "Your code"  # options of user code (PATH.py:NAME): what it returns, its weights
COMPARE, CI = "Comparison", "CI"
ARRAY_HELP = "ARRAY: a .npy/.npz[:key]/.json/.pt file, inline JSON, - for stdin, or a generator such as randn:3,5"
SHORT = {"input": "-x", "target": "-t"}  # the two arrays every story uses


@dataclass(frozen=True)
class Opt:
    """One option: its Python name, value type (``str``, ``int``, ``float``, ``bool``, an
    enum class, or ``list`` for a repeatable text), default, flags, help and panel."""

    name: str
    kind: Any
    default: Any
    decls: tuple[str, ...]
    help: str
    panel: str
    extra: dict = field(default_factory=dict)  # typer.Option's min, max, metavar, show_default

    @property
    def flag(self) -> str:
        return self.decls[0].split("/")[0]

    def parameter(self) -> inspect.Parameter:
        """The typer option, as a keyword-only parameter of a command's signature."""
        kind = list[str] if self.kind is list else self.kind
        annotation = kind if self.default is not None else Optional[kind]
        option = typer.Option(*self.decls, help=escape(self.help), rich_help_panel=self.panel, **self.extra)
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=self.default,
                                 annotation=Annotated[annotation, option])


def opt(name: str, kind: Any, default: Any, *decls: str, help: str, panel: str, **extra: Any) -> Opt:
    return Opt(name, kind, default, decls or (f"--{name.replace('_', '-')}",), help, panel, extra)


FUNCTION_HELP = ("a built-in (see `gradcli functions`), a chain such as linear,cross_entropy, "
                 "expr:EXPRESSION in x such as 'expr:(x+1)**2', or your code: PATH.py:NAME "
                 "(a function, a torch.nn.Module or a factory; -x is its first argument, "
                 "-t its second, --arg NAME=ARRAY any other), PATH.pt (TorchScript) or "
                 "PATH.pt2 (torch.export); --wrt param:NAME differentiates a module parameter")


def function_argument(optional: bool = False) -> inspect.Parameter:
    help_ = FUNCTION_HELP + ("; omit it with --suite" if optional else "")
    argument = typer.Argument(help=escape(help_), show_default=False, metavar="[FUNCTION]" if optional else "FUNCTION")
    return inspect.Parameter("function", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                             default=None if optional else inspect.Parameter.empty,
                             annotation=Annotated[Optional[str] if optional else str, argument])


def catalogue_options() -> list[Opt]:
    """One option per array argument and per scalar Param of the built-ins, with help
    and defaults read from the catalogue: a new loss touches its own module only."""
    from ..catalogue import array_arguments, catalogue, parameters

    family = {name: family_panel(function) for name, function in catalogue().items()}
    users_of_array: dict[str, list[str]] = {}
    for function in catalogue().values():
        for arg in function.arrays:
            users_of_array.setdefault(arg.name, []).append(function.name)
    options = []
    for name, arg in array_arguments().items():
        users = users_of_array[name]
        if name in SHORT:
            decls = (f"--{name.replace('_', '-')}", SHORT[name])
            text = f"{arg.help}. {ARRAY_HELP}" if name == "input" else arg.help
            options.append(Opt(name, str, None, decls, text, INPUTS, {"show_default": False, "metavar": "ARRAY"}))
        else:
            options.append(Opt(name, str, None, (f"--{name.replace('_', '-')}",), f"{_names(users)}: {arg.help}",
                               family[users[0]], {"show_default": False, "metavar": "ARRAY"}))
    for name, users in parameters().items():
        first = users[0][1]
        defaults = {repr(p.default) for _, p in users}
        default = f"; default {first.default}" if len(defaults) == 1 and first.default is not None else ""
        names = [function for function, _ in users]
        text = first.help if first.help.split(":")[0] in _names(names) else f"{_names(names)}: {first.help}"
        dashed = name.replace("_", "-")
        decls = (f"--{dashed}/--no-{dashed}",) if first.kind is bool else (f"--{dashed}",)
        metavar = {int: "INT", float: "FLOAT"}.get(first.kind)
        options.append(Opt(name, first.kind, None, decls, f"{text}{default}", family[names[0]],
                           {"show_default": False, **({"metavar": metavar} if metavar else {})}))
    return options


def family_panel(function) -> str:
    """The help panel of the options a built-in declares first: its family's."""
    return f"Options of {function.family}"


def _names(functions: list[str]) -> str:
    return ", ".join(functions[:4]) + (", ..." if len(functions) > 4 else "")


# --- options every computing command takes --------------------------------------

# User code's own options, shared by every computing command and check.
USER_CODE = [
    opt("arg", list, None, metavar="NAME=ARRAY", help="any parameter of your code by name, NAME=ARRAY (repeatable: a "
        "mask, labels, attention_mask; the second positional one too when -t is not given); -x is its first "
        "argument, -t its second", panel=CODE, show_default=False),
    opt("select", str, None, metavar="SEL", help="what to differentiate when your code returns a tuple, list, dict, "
        "dataclass or Hugging Face ModelOutput: a key or attribute (logits, loss), an index (0) or a dotted path "
        "(0.logits)", panel=CODE, show_default=False),
    opt("weights", str, None, metavar="PATH[:KEY]", help="load trained weights into your module first: .safetensors, "
        "or a state dict in .pt/.pth/.bin/.ckpt (torch.load weights_only=True); :KEY picks a nested dict "
        "(ckpt.ckpt:state_dict)", panel=CODE, show_default=False),
    opt("weights_prefix", str, None, metavar="P", help="strip this prefix from the keys of --weights (model.)",
        panel=CODE, show_default=False),
    opt("strict_weights", bool, True, "--strict-weights/--no-strict-weights", help="refuse --weights whose keys or "
        "shapes do not fit the module; --no-strict-weights loads those that fit, with a note", panel=CODE),
]
RUN = [
    opt("wrt", str, "input", metavar="NAME[,NAME]", help="the argument to differentiate: input, target (float targets), weight, bias, "
        "a parameter of your code by its name (mask, labels), param:NAME (a parameter of your torch.nn.Module) or "
        "act:MODULE (the output of a submodule: act:bert.embeddings.word_embeddings for a token model's saliency); "
        "a comma list and globs such as 'param:*' give one named result each (hessian/hvp: one joint flat vector, "
        "each parameter's slice also in -o .npz)", panel=DIFF),
    *USER_CODE,
    opt("rows", str, None, metavar="SEL", help="only these batch rows (dim 0): 0 | 0,3 | 2:10 (row-independent outputs)", panel=DIFF,
        show_default=False),
    opt("dtype", DType, None, help="working precision (default float64; a note says when float32 data is upcast)",
        panel=DIFF, show_default=False),
    opt("seed", int, 0, metavar="INT", help="seed of the generators (randn:3,5, ...) and of dropout masks (0 to 2**64 - 1, as "
        "torch.manual_seed)", panel=INPUTS, min=0),
    opt("allow_nonfinite", bool, False, help="accept NaN/Inf in inputs and let them propagate", panel=INPUTS),
    opt("device", Device, Device.CPU, help="torch backends", panel=BACKEND),
    opt("fd_method", FdMethod, FdMethod.RICHARDSON, help="finite-difference formula", panel=BACKEND),
    opt("fd_step", str, "auto", metavar="auto|STEP", help="auto (adaptive per entry: Richardson steps from eps^(1/5), halved or doubled "
        "until they converge), or an absolute step such as 1e-4", panel=BACKEND),
    opt("fd_dtype", FdDType, FdDType.FLOAT64, help="difference float32 problems in float64, or same", panel=BACKEND),
    opt("json", bool, False, help="print one JSON document (same as --format json)", panel=OUTPUT),
    opt("format", Format, Format.TABLE, help="table or json", panel=OUTPUT),
    opt("output", str, None, "--output", "-o", metavar="PATH", help="also write the result to .npy, .npz or .json", panel=OUTPUT,
        show_default=False),
    opt("precision", int, 4, metavar="N", help="digits in tables", panel=OUTPUT, min=0, max=17),
    opt("explain", bool, False, help="add the formula, how to read the value, and its structure", panel=OUTPUT),
    opt("heatmap", bool, False, help="colour cells by value: red positive, blue negative (on a terminal)",
        panel=OUTPUT),
    opt("plot", str, None, metavar="PATH.png", help="also draw the value as a heatmap image PATH.png (needs gradcli[plot])",
        panel=OUTPUT, show_default=False),
    opt("no_summarize", bool, False, help="print every value of a large array", panel=OUTPUT),
    opt("no_timing", bool, False, help="drop timing fields (byte-identical JSON between runs)", panel=OUTPUT),
    opt("no_value", bool, False, help="JSON: leave value out (metadata and notes only); useful with -o", panel=OUTPUT),
    opt("max_memory", str, "2GiB", metavar="SIZE", help="refuse results larger than this (e.g. 512MiB, 4GiB); bounds inputs, "
        "working memory and output", panel=LIMITS),
    opt("traceback", bool, False, help="show the full traceback of an error", panel=LIMITS),
]
BACKEND_OPT = opt("backend", BackendName, BackendName.AUTO, "--backend", "-b",
                  help="auto = analytic where a closed form exists, else autograd", panel=BACKEND)
LAYOUT_HELP = {
    Quantity.JACOBIAN: "auto: diag for elementwise functions, blocks for row-independent functions of a batch, "
                       "else full; user code: blocks = per-sample Jacobians (B, *out, *in)",
    Quantity.HESSIAN: "auto: diag for elementwise functions, blocks (*rows, C, C) for functions of rows, else full "
                      "(output axes, then the argument's axes twice, as torch.func.hessian)",
}


def layout_opt(quantity: Quantity) -> Opt:
    return opt("layout", Layout, Layout.AUTO, help=LAYOUT_HELP[quantity], panel=DIFF)


VERIFY_BLOCKS = {
    Quantity.JACOBIAN: "user code, blocks: check on three samples that they do not interact before trusting "
                       "per-sample blocks",
    Quantity.GRAD: "with --per-sample: refuse when samples interact (the batch loss must be the sum or mean of the "
                   "per-sample losses, and their gradients its gradient)",
}


def verify_blocks_opt(quantity: Quantity) -> Opt:
    return opt("verify_blocks", bool, True, "--verify-blocks/--no-verify-blocks", help=VERIFY_BLOCKS[quantity],
               panel=DIFF)


COTANGENT = opt("cotangent", str, "ones", metavar="ARRAY", help="the vector v, shaped like the output (ones: what "
                "out.backward(torch.ones_like(out)) uses)", panel=DIFF)
TANGENT_HELP = {Quantity.JVP: "the direction v, shaped like the differentiated argument (randn allowed)",
                Quantity.HVP: "the vector t of H t, shaped like the differentiated argument (randn allowed)"}
EXTRA = {  # each command's own options
    Quantity.JACOBIAN: [layout_opt(Quantity.JACOBIAN), verify_blocks_opt(Quantity.JACOBIAN)],
    Quantity.VJP: [COTANGENT],
    Quantity.JVP: [opt("tangent", str, None, metavar="ARRAY", help=TANGENT_HELP[Quantity.JVP], panel=DIFF, show_default=False)],
    Quantity.GRAD: [
        opt("per_sample", bool, False, help="the gradient of each sample's loss alone (a batch of one), "
            "(B, *param_shape) per --wrt param:NAME (comma-separated, globs such as 'param:*')", panel=DIFF),
        opt("norms", bool, False, help="with --per-sample: only each sample's gradient norm over every --wrt, (B,), "
            "never forming the gradients where the layer allows", panel=DIFF),
        opt("top", int, 5, metavar="K", help="with --norms: list the K samples with the largest norms", panel=OUTPUT, min=0),
        verify_blocks_opt(Quantity.GRAD)],
    Quantity.HESSIAN: [layout_opt(Quantity.HESSIAN),
                       opt("eig", int, None, help="also the K smallest and K largest eigenvalues (scalar output): "
                           "exact from the blocks, else Lanczos on hvp", panel=DIFF, metavar="K", show_default=False)],
    Quantity.HVP: [opt("tangent", str, None, metavar="ARRAY", help=TANGENT_HELP[Quantity.HVP], panel=DIFF, show_default=False)],
}

# --- check's own options: the fields of checking.settings.CheckSettings, and its files ---

CHECK = [
    opt("quantity", Quantity, None, help="what to compare (default: grad for a scalar output, else jacobian; hessian "
        "and hvp: second order)", panel=COMPARE, show_default=False),
    opt("backends", str, None, metavar="NAME,...", help="comma-separated, e.g. analytic,fd (default: all that apply)", panel=COMPARE,
        show_default=False),
    opt("reference", str, None, metavar="NAME", help="the backend the others are compared with (default autograd)", panel=COMPARE,
        show_default=False),
    opt("atol", float, None, metavar="FLOAT", help="absolute tolerance (default from the dtype: float64 1e-8)", panel=COMPARE,
        show_default=False),
    opt("rtol", float, None, metavar="FLOAT", help="relative tolerance (default from the dtype: float64 1e-6)", panel=COMPARE,
        show_default=False),
    opt("top", int, 5, metavar="K", help="offending entries to list", panel=OUTPUT, min=0),
    layout_opt(Quantity.JACOBIAN), COTANGENT,
    opt("tangent", str, None, metavar="ARRAY", help="jvp, hvp: the direction (default randn, seeded by --seed; each --wrt entry its "
        "own)", panel=DIFF, show_default=False),
    opt("mode", CheckMode, CheckMode.AUTO, help="full: every entry; probe: vᵀ J u along --probes random directions "
        "per argument (cost independent of its size); auto: full below about 2e4 function evaluations, else probe",
        panel=COMPARE),
    opt("probes", int, 4, metavar="K", help="probe mode: seeded sign directions per argument", panel=COMPARE, min=1),
    opt("taylor", bool, False, help="Taylor remainder test along each probe: order 2 when the derivative is right, 1 "
        "when wrong (decides in float32, where fd's tolerance cannot)", panel=COMPARE),
    opt("locate", bool, None, "--locate/--no-locate", help="after a mismatch: the wrong module (each submodule "
        "checked alone) and the worst entries [default: on; --locate also says when a function has no modules to "
        "check]", panel=COMPARE, show_default=False),
    opt("baseline", str, None, metavar="FILE.json", help="compare the gradients with a fingerprint saved by --save-baseline; exit 1 if "
        "they moved", panel=CI, show_default=False),
    opt("save_baseline", str, None, metavar="FILE.json", help="store a fingerprint of the output and gradients (seeded probes) in "
        "FILE.json", panel=CI, show_default=False),
    opt("suite", str, None, metavar="FILE.toml", help="run every [[check]] of FILE.toml in one process", panel=CI, show_default=False),
    opt("junit", str, None, metavar="PATH.xml", help="--suite: also write JUnit XML to PATH.xml", panel=CI, show_default=False),
]


def command_options(quantity: Quantity) -> list[Opt]:
    return in_panel_order([*catalogue_options(), *RUN, BACKEND_OPT, *EXTRA[quantity]])


def check_options() -> list[Opt]:
    return in_panel_order([*catalogue_options(), *RUN, *CHECK])


def in_panel_order(options: list[Opt]) -> list[Opt]:
    """typer shows panels in the order their first option comes: inputs, what is
    computed, how, the functions' own options, then output and limits."""
    from ..catalogue import catalogue

    families = dict.fromkeys(family_panel(f) for f in catalogue().values())  # in catalogue order
    order = [INPUTS, CODE, DIFF, COMPARE, BACKEND, *families, OUTPUT, CI, LIMITS]
    return sorted(options, key=lambda o: order.index(o.panel) if o.panel in order else order.index(OUTPUT))


def signature(function_arg: inspect.Parameter, options: list[Opt]) -> inspect.Signature:
    return inspect.Signature([function_arg] + [o.parameter() for o in options])


# --- a suite entry's TOML values, converted as the command line would -----------------


def from_toml(option: Opt, value: Any, where: str) -> Any:
    """``value`` from a TOML table as ``option``'s type, or UsageError naming ``where`` and
    the key: data is never read as a command line (``function = "--help"`` is a name)."""
    key = option.name.replace("_", "-")

    def bad(expected: str) -> UsageError:
        return UsageError(f"{where}: {key} = {json.dumps(value, default=str)[:60]} is not {expected}")

    kind = option.kind
    if kind in (int, float) and isinstance(value, str):  # "1e-6" reads as the command line's 1e-6
        try:
            value = kind(value.strip())
        except ValueError:
            raise bad("a number") from None
    if kind is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        low, high = option.extra.get("min"), option.extra.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            raise bad(f"in [{low}, {high if high is not None else 'inf'}]")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise bad("a number")
        return float(value)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        try:
            return kind(value)
        except ValueError:
            raise bad("one of " + ", ".join(k.value for k in kind)) from None
    if kind is list:  # --arg: one NAME=ARRAY text, or a list of them
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise bad("NAME=ARRAY or a list of them")
        return items
    if isinstance(value, str):
        return value
    if option.name in ("backends", "wrt") and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)  # a list of names joins with commas
    if isinstance(value, (list, int, float)) and not isinstance(value, bool):
        return json.dumps(value)  # an array written in TOML is its JSON (an inline array)
    raise bad("a text")
