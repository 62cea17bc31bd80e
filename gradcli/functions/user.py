"""``PATH.py:NAME``: the user's own function of torch tensors, a
``torch.nn.Module`` instance, or a zero-argument factory returning one.

The file is imported from its path (its folder on ``sys.path`` while it
loads) only because the user named it. Extra arrays reach the callable as
keyword arguments when it accepts them (``--target`` -> ``target=``), so a
custom loss ``def loss(input, target)`` works with integer targets that are
never differentiated. There is no closed form: the torch backends and fd
(evaluated under ``no_grad``) apply.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendError, UsageError
from .base import ArrayArg, ArrayKind, Function, GeneralKernel, RowKernel, RowLayout, Structure

EXTRA_ARRAYS = ("target", "weight", "bias", "class_weight", "pos_weight")


def functorch_refused(err: BaseException) -> bool:
    """torch.func cannot transform this code (an old-style autograd.Function):
    the caller falls back to classic autograd or to a loop."""
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        marker in text for marker in ("autograd.Function", "functorch", "setup_context", "transform",
                                      "does not have vmap support"))


def user_error(err: BaseException, path: Path) -> BackendError:
    """The user's exception as one or two lines: type, message, and the line in their file."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    where = f" (at {path.name}:{frames[-1].lineno}: {frames[-1].line})" if frames else ""
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return BackendError(f"{path.name}: your code raised {type(err).__name__}: {message}{where}")


def load_callable(path_text: str, name: str):
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"FUNCTION: file not found: {path}; give PATH.py:NAME with an existing file")
    spec = importlib.util.spec_from_file_location(f"gradcli_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise user_error(err, path) from err
    finally:
        if sys.path and sys.path[0] == folder:
            sys.path.pop(0)
    if not hasattr(module, name):
        public = [n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise UsageError(f"FUNCTION: {path} has no {name!r}; it defines {', '.join(public) or 'nothing callable'}")
    obj = getattr(module, name)
    import torch

    if isinstance(obj, torch.nn.Module):
        return obj
    if not callable(obj):
        raise UsageError(f"FUNCTION: {path}:{name} is a {type(obj).__name__}, not a function or module")
    if inspect.isclass(obj) and issubclass(obj, torch.nn.Module) or _takes_no_arguments(obj):
        try:
            made = obj()
        except Exception as err:
            raise user_error(err, path) from err
        if not callable(made):
            raise UsageError(f"FUNCTION: {path}:{name}() returned a {type(made).__name__}, not a module or function")
        return made
    return obj


def _takes_no_arguments(obj) -> bool:
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return False
    return not any(p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                   for p in params)


def load_model_file(path_text: str):
    """``PATH.pt`` (TorchScript, ``torch.jit.load``) or ``PATH.pt2`` (``torch.export.load(...).module()``)."""
    import torch

    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"FUNCTION: file not found: {path}")
    import warnings

    try:
        with warnings.catch_warnings():  # torch.jit's deprecation notice is not the user's concern here
            warnings.simplefilter("ignore", DeprecationWarning)
            if path.suffix == ".pt2":
                return torch.export.load(str(path)).module()
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        kind = "a torch.export program (torch.export.save)" if path.suffix == ".pt2" else "a TorchScript module (torch.jit.save)"
        raise UsageError(f"FUNCTION: {path} is not {kind}: {first[:160]}") from err


class UserFunction(Function):
    """The user's callable. ``params["_batch"]`` switches on per-sample mode:
    the input and output are seen flattened to ``(B, features)``, so the
    row machinery (blocks, fd by columns) applies with the batch as rows."""

    closed_form = False
    structure = Structure.FULL
    formulas = ("no closed form: the derivative is what torch's autograd computes through your code",)

    def __init__(self, path: str, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = f"{path}:{name}" if name else path
        self.summary = f"{name or 'the model'} from {path} (your code)"
        self.callable = load_callable(path, name) if name else load_model_file(path)
        self.accepts = _keyword_names(self.callable)
        self.arrays = (ArrayArg("input", "the input your code takes first", required=True),) + tuple(
            ArrayArg(n, f"passed as {n}=", kind=ArrayKind.INDEX_OR_FLOAT if n == "target" else ArrayKind.FLOAT)
            for n in EXTRA_ARRAYS if n in self.accepts)
        self._dtype = None

    # --- running the user's code -------------------------------------------

    @property
    def module(self):
        import torch

        return self.callable if isinstance(self.callable, torch.nn.Module) else None

    def parameters(self) -> dict[str, tuple[int, ...]]:
        """Named parameters of a module and their shapes (empty for a function)."""
        return {} if self.module is None else {n: tuple(p.shape) for n, p in self.module.named_parameters()}

    def call(self, args: dict[str, Any], params: dict | None = None):
        """Run the user's code on tensors; ``param:NAME`` entries replace module
        parameters (torch.func.functional_call). Its exceptions become
        BackendError naming the line."""
        import torch

        x = args["input"]
        if self.module is not None and (x.dtype, x.device) != self._dtype:
            # The working dtype (float64 by default) and device, as gradcli computes.
            self.module.to(dtype=x.dtype, device=x.device)
            self._dtype = (x.dtype, x.device)
        batch = params is not None and params.get("_batch")
        if batch:
            x = x.reshape(x.shape[:-1] + params["_batch_in"])  # (..., B, F_in) -> (..., B, *in)
        replaced = {k[len("param:"):]: v for k, v in args.items() if k.startswith("param:")}
        kwargs = {k: v for k, v in args.items() if k != "input" and not k.startswith("param:")}
        try:
            if replaced:
                out = torch.func.functional_call(self.module, replaced, (x,), kwargs)
            else:
                out = self.callable(x, **kwargs)
        except Exception as err:
            if functorch_refused(err):
                raise
            raise user_error(err, self.path) from err
        if batch:
            out = out.reshape(out.shape[: out.ndim - len(params["_batch_out"])] + (-1,))
        return out

    def check(self, args, params):
        import torch

        if "_output_shape" in params:
            return []
        with torch.no_grad():
            out = self.call(_tensors(args))
        if not isinstance(out, torch.Tensor):
            raise BackendError(f"{self.name} returned a {type(out).__name__}; it must return one tensor")
        if not out.is_floating_point():
            raise BackendError(f"{self.name} returned a {out.dtype} tensor; a derivative needs a float output")
        params["_output_shape"] = tuple(out.shape)
        return []

    def parameter_array(self, name: str) -> np.ndarray:
        params = dict(self.module.named_parameters()) if self.module is not None else {}
        if name not in params:
            raise UsageError(f"--wrt param:{name}: {self.name} has no parameter {name!r}; it has "
                             f"{', '.join(params) or 'none (it is not a torch.nn.Module)'}")
        return params[name].detach().cpu().double().numpy()

    def differentiable(self, args):
        return ("input",) + tuple(n for n in args if n != "input" and args[n].dtype.kind == "f")

    def output_shape(self, args, params):
        if params.get("_batch"):
            return (params["_output_shape"][0], int(np.prod(params["_batch_out"], dtype=int)))
        return params["_output_shape"]

    def row_layout(self, args, params, wrt, axis=None):
        if not params.get("_batch"):
            return None
        b, features = args["input"].shape
        return RowLayout((b, features), 1, 1, self.output_shape(args, params)[1], reduced=False)

    def per_sample(self, args, params) -> tuple[dict, dict]:
        """Arguments and params of per-sample mode: input ``(B, *in)`` seen as ``(B, F_in)``."""
        x = args["input"]
        out_shape = params["_output_shape"]
        if x.ndim == 0 or not out_shape or out_shape[0] != x.shape[0]:
            raise UsageError(f"--layout blocks: per-sample blocks need an output whose first dim is the batch: "
                             f"input {list(x.shape)}, output {list(out_shape)}; use --layout full")
        flat = {**args, "input": x.reshape(x.shape[0], -1)}
        return flat, {**params, "_batch": True, "_batch_in": x.shape[1:], "_batch_out": out_shape[1:]}

    def kernel(self, args, params, wrt, axis=None):
        """For fd only: the forward under no_grad over a stack of points
        (``torch.func.vmap``; a loop where the code cannot be vmapped)."""
        import torch

        tensors = _tensors(args)
        x0 = args[wrt]

        def one(x):
            return self.call({**tensors, wrt: x}, params)

        def forward(x: np.ndarray) -> np.ndarray:
            stack = x.shape[: x.ndim - x0.ndim]
            flat = torch.from_numpy(np.ascontiguousarray(x).reshape((-1,) + x0.shape))
            with torch.no_grad():
                try:
                    out = torch.func.vmap(one)(flat)
                except BackendError:
                    raise
                except Exception:  # code vmap cannot batch (.item(), control flow, old-style autograd.Function)
                    out = torch.stack([one(p) for p in flat])
            return out.numpy().reshape(stack + tuple(out.shape[1:]))

        def no_closed_form(_):
            raise BackendError(f"{self.name} has no closed form")

        if params.get("_batch"):
            return RowKernel(x0=x0, forward=forward, blocks=lambda: no_closed_form(None), coef=None)
        return GeneralKernel(x0=x0, output_shape=self.output_shape(args, params), forward=forward,
                             vjp=no_closed_form, jvp=no_closed_form)

    def torch_forward(self, args, params):
        return self.call(dict(args), params)


def _tensors(args) -> dict[str, Any]:
    """NumPy arguments as CPU tensors (copies: the problem's arrays are read-only)."""
    import torch

    return {k: torch.from_numpy(np.array(v)) for k, v in args.items()}


def _keyword_names(obj) -> set[str]:
    target = obj.forward if hasattr(obj, "forward") and not inspect.isfunction(obj) else obj
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return set()
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return set(EXTRA_ARRAYS)
    return set(params)
