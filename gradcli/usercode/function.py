"""``PATH.py:NAME``: the user's own function of torch tensors, a
``torch.nn.Module`` instance, or a zero-argument factory returning one.

The file is imported from its path (its folder on ``sys.path`` while it
loads) only because the user named it. ``--input`` is its first positional
argument and ``--target`` its second, so a custom loss ``def loss(input,
target)`` works with integer targets that are never differentiated. How the options map to its parameters:
:mod:`.signature` (``--input`` first, ``--target`` second, ``--arg NAME=ARRAY``
by name); training-mode modules: :mod:`.training`; what it returns, picked by
``--select``: :mod:`.outputs`; trained weights (``--weights``): :mod:`.weights`;
a submodule's output as the argument (``--wrt act:MODULE``): :mod:`.submodules`.
There is no closed form: the torch backends and fd (evaluated under ``no_grad``) apply.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import inspect
import math
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from dataclasses import dataclass, field, replace
from types import MappingProxyType

from ..core.errors import BackendError, GradcliError, UsageError, UserCodeError
from ..core.rows import has_batch_axis, output_gap
from ..core.rowform import GeneralKernel, RowKernel, RowLayout
from .activations import points_per_call
from . import submodules
from .outputs import refuse_several, select
from ..catalogue.base import Bound, Function, Structure
from ..catalogue.registry import array_arguments
from .signature import NamedArray, read_signature
from .training import Modes, inspect_modes, interaction_message, pure_call


def extra_array_names() -> tuple[str, ...]:
    """The catalogue's array arguments besides the input: what user code may take by name."""
    return tuple(name for name in array_arguments() if name != "input")


def user_error(err: BaseException, path: Path) -> UserCodeError:
    """The user's exception as one or two lines: type, message, and the line in their file."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    where = f" (at {path.name}:{frames[-1].lineno}: {frames[-1].line})" if frames else ""
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return UserCodeError(f"{path.name}: your code raised {type(err).__name__}{': ' + message if message else ''}{where}",
                         err)


@contextlib.contextmanager
def running_user_code(path: Path):
    """Around every run of the user's code: its ``print()`` goes to standard
    error (standard output carries only gradcli's result), and whatever it
    raises — ``sys.exit(0)``, ``SystemExit(5)``, ``GeneratorExit``, any
    ``BaseException`` — becomes "your code raised ..." (exit 3), never an exit
    of its own. Ctrl-C stays an interrupt. The torch backends read the original
    exception (a torch.func refusal means "fall back"). A change of the working
    folder (``os.chdir``) is undone, so the paths given to gradcli keep their meaning,
    and so is one of the SIGINT or SIGTERM handlers (set to SIG_IGN at import, a later
    loop could only be killed). A child the code forked ends when it comes back here."""
    before = set(threading.enumerate())
    pid = os.getpid()
    try:
        with _stdout_to_stderr(), _same_folder(), _same_torch_modes(), _same_signal_handlers(), _own_modules(path), \
                _logging_quiet_on_error():
            yield
    except (GradcliError, KeyboardInterrupt):
        raise
    except BaseException as err:
        raise user_error(err, path) from err
    finally:
        if os.getpid() != pid:
            _end_forked_child()
        _LEFT_RUNNING.update(t for t in threading.enumerate() if t not in before and not t.daemon)


def _end_forked_child() -> None:
    """Your code called ``os.fork()`` and the child came back into gradcli: it
    ends here, quietly, before it could print a second result on standard output
    or write the output files (what the child did inside your code is its own)."""
    for stream in (sys.stderr,):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


# Threads the user's code started and did not wait for: Python would wait for them at exit, so
# a thread that never ends kept gradcli running after its result (see gradcli.__main__).
_LEFT_RUNNING: set[threading.Thread] = set()


def threads_left_running() -> list[threading.Thread]:
    """The non-daemon threads started by the user's code that are still alive."""
    return [t for t in _LEFT_RUNNING if t.is_alive()]


@contextlib.contextmanager
def _stdout_to_stderr():
    """``print()`` and file descriptor 1 itself (``os.write(1, ...)``, C code, a subprocess)
    go to standard error while the user's code runs; C's own stdout buffer is flushed
    before descriptor 1 is given back, so nothing it held reaches gradcli's output later."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # descriptor 1 or 2 closed: Python's redirection is all there is to do
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            _flush_c_stdout()
            os.dup2(saved, 1)
            os.close(saved)


def _flush_c_stdout() -> None:
    try:
        _c_library().fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library to ask (not a POSIX system)
        pass


@functools.cache
def _c_library():
    import ctypes

    return ctypes.CDLL(None)


@contextlib.contextmanager
def _same_signal_handlers():
    """SIGINT's and SIGTERM's handlers as they were: code that sets them to
    SIG_IGN when its file is imported (or in a call) left a later endless loop
    stoppable only by SIGKILL; gradcli's own (Ctrl-C and SIGTERM: exit 130,
    no output file) are back after the import and after every call. Only the
    main thread can set handlers (user code runs there)."""
    import signal

    main = threading.current_thread() is threading.main_thread()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)


@contextlib.contextmanager
def _logging_quiet_on_error():
    """A log record your code's libraries cannot write (a handler holding a stream that was
    closed since: transformers binds standard error once, at its first warning) is dropped,
    not reported as "--- Logging error ---" with a traceback amid gradcli's output."""
    import logging

    saved = logging.raiseExceptions
    logging.raiseExceptions = False
    try:
        yield
    finally:
        logging.raiseExceptions = saved


@contextlib.contextmanager
def _same_torch_modes():
    """torch's global grad mode and default dtype as they were (``torch.set_grad_enabled(False)``
    at the top of a file turned every later autograd gradient into zeros): what the code sets
    holds inside it, not after it."""
    torch = sys.modules.get("torch")
    grad, dtype = (True, None) if torch is None else (torch.is_grad_enabled(), torch.get_default_dtype())
    try:
        yield
    finally:
        torch = sys.modules.get("torch")  # the file may have imported it
        if torch is not None and hasattr(torch, "set_grad_enabled"):  # (None while torch itself is importing)
            torch.set_grad_enabled(grad)
            torch.set_default_dtype(torch.float32 if dtype is None else dtype)  # (float32: torch's own default)


# The modules each user file's folder provided (``import helper`` beside model.py), by folder.
_FOLDER_MODULES: dict[str, dict[str, Any]] = {}


@contextlib.contextmanager
def _own_modules(path: Path):
    """The file's folder first on ``sys.path`` (as ``python model.py`` has it, so an ``import
    helper`` inside a function works at call time too), and its own sibling modules in
    ``sys.modules``: those another user file's folder loaded under the same names (a/helper.py,
    b/helper.py in one suite or one library session) are set aside while it runs, or
    b/model.py would silently run a/helper.py."""
    folder = str(path.resolve().parent)
    own = _FOLDER_MODULES.setdefault(folder, {})
    for other, modules in _FOLDER_MODULES.items():
        for name, module in modules.items():
            if other != folder and sys.modules.get(name) is module:
                del sys.modules[name]
    sys.modules.update(own)
    count = len(sys.modules)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)  # (the first occurrence: the one inserted here)
        new = list(sys.modules)[count:] if len(sys.modules) > count else []  # new entries come last
        for name in new:
            top = name.partition(".")[0]
            if top not in own and top not in new:
                continue  # a submodule of a package loaded before (torch, gradcli): not the folder's own
            if _found_in(folder, top, getattr(sys.modules[name], "__file__", None)):
                own[name] = sys.modules[name]


def _found_in(folder: str, top: str, file: str | None) -> bool:
    """Whether a module of top-level name ``top`` came from ``folder`` through ``sys.path``:
    folder/helper.py, folder/pkg/..., not folder/.venv/lib/.../scipy (installed packages)."""
    try:
        return file is not None and Path(file).resolve().relative_to(folder).parts[0].partition(".")[0] == top
    except ValueError:  # not under the folder
        return False


@contextlib.contextmanager
def _same_folder():
    try:
        folder = os.getcwd()
    except OSError:  # the working folder was removed: nothing to restore
        folder = None
    try:
        yield
    finally:
        if folder is not None:
            with contextlib.suppress(OSError):
                if os.getcwd() != folder:
                    os.chdir(folder)


def load_object(path_text: str, name: str):
    """``NAME`` as the file defines it, the file run once (its folder on ``sys.path``, its
    output on standard error): a function, a module, a class, a ``torch.library`` op."""
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"FUNCTION: file not found: {path}; give PATH.py:NAME with an existing file")
    spec = importlib.util.spec_from_file_location(f"gradcli_user_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        with running_user_code(path):  # (its folder on sys.path while it runs)
            # Registered while it runs, as `import` does: @dataclass with postponed
            # annotations looks its module up in sys.modules.
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    if not hasattr(module, name):
        public = [n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise UsageError(f"FUNCTION: {path} has no {name!r}; it defines {', '.join(public) or 'nothing callable'}")
    return getattr(module, name)


def is_library_op(obj) -> bool:
    """A ``torch.library`` custom op: ``torch.library.custom_op``'s object, or ``torch.ops.NS.OP`` (or one overload)."""
    import torch

    return isinstance(obj, (torch._library.custom_ops.CustomOpDef, torch._ops.OpOverloadPacket, torch._ops.OpOverload))


def load_callable(path_text: str, name: str):
    """``PATH.py:NAME`` as something to call on tensors (:func:`as_callable`)."""
    return as_callable(load_object(path_text, name), Path(path_text), name)


def as_callable(obj, path: Path, name: str):
    """What the file defines as something to call on tensors: a function, a module, a
    factory's product, an ``autograd.Function`` subclass's ``apply`` (such a class is
    called through ``apply``, never instantiated), a ``torch.library`` op as it is."""
    import torch

    if isinstance(obj, torch.nn.Module) or is_library_op(obj):
        return obj
    if inspect.isclass(obj) and issubclass(obj, torch.autograd.Function):
        return obj.apply
    if not callable(obj):
        kind = "Python module (imported there)" if inspect.ismodule(obj) else type(obj).__name__
        raise UsageError(f"FUNCTION: {path}:{name} is a {kind}, not a function or module (torch.nn.Module)")
    if inspect.isclass(obj) and issubclass(obj, torch.nn.Module) or _takes_no_arguments(obj):
        with running_user_code(path):
            made = obj()
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
                from .pt2_guard import inspect_pt2, no_unpickling

                data = path.read_bytes()  # inspected and loaded from the same bytes
                inspect_pt2(data, path)
                with no_unpickling():
                    return torch.export.load(io.BytesIO(data)).module()
            import zipfile

            from .pt2_guard import refuse_zip_bomb

            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    refuse_zip_bomb(archive, path.stat().st_size, path)
            return torch.jit.load(str(path), map_location="cpu")
    except UsageError:
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        kind = "a torch.export program (torch.export.save)" if path.suffix == ".pt2" else "a TorchScript module (torch.jit.save)"
        raise UsageError(f"FUNCTION: {path} is not {kind}: {first[:160]}") from err


class UserFunction(Function):
    """The user's callable; :meth:`bind` runs it once to learn its output."""

    closed_form = False
    structure = Structure.FULL
    formulas = ("no closed form: the derivative is what torch's autograd computes through your code",)

    def __init__(self, path: str, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = f"{path}:{name}" if name else path
        self.summary = f"{name or 'the model'} from {path} (your code)"
        self.callable = load_callable(path, name) if name else load_model_file(path)
        self.signature = read_signature(self.callable)
        self.arrays = self.signature.arrays(extra_array_names())
        self._dtype = None
        self.seed = 0  # dropout's mask is drawn after torch.manual_seed(seed) at every call
        self.modes: Modes | None = None  # training-mode modules, found by the first bind
        self._running = False  # inside running(): calls skip their own guards
        self.select: str | None = None  # --select: the path to the tensor differentiated in what the code returns
        self.loaded: tuple[str, ...] = ()  # notes on the weights loaded (--weights)
        self.anchors: dict[str, np.ndarray] = {}  # act:NAME -> the activation recorded (submodules.replacing)

    def configure(self, seed: int = 0, names: tuple[str, ...] = (), select: str | None = None) -> None:
        """The run's ``--seed``, ``--arg`` names a ``**kwargs`` signature takes, and ``--select``."""
        self.seed = seed
        self.select = select
        extra = [n for n in names if self.signature.open and n not in {a.name for a in self.arrays}]
        self.arrays += tuple(NamedArray(n, f"passed as {n}=") for n in extra)

    def load_weights(self, spec: str, *, prefix: str | None = None, strict: bool = True,
                     max_bytes: int = 2**31) -> None:
        """``--weights``: trained weights loaded into the module before it runs (:mod:`.weights`)."""
        from .weights import load_weights

        self.loaded = load_weights(self.module, spec, prefix=prefix, strict=strict, max_bytes=max_bytes,
                                   where=self.name)
        self._dtype = None  # the module's tensors were written: follow the working dtype again

    # --- running the user's code -------------------------------------------

    @property
    def module(self):
        import torch

        return self.callable if isinstance(self.callable, torch.nn.Module) else None

    def parameters(self) -> dict[str, tuple[int, ...]]:
        """Named parameters of a module and their shapes (empty for a function)."""
        return {} if self.module is None else {n: tuple(p.shape) for n, p in self.module.named_parameters()}

    def call(self, args: dict[str, Any], batch: tuple[tuple, tuple] | None = None):
        """Run the user's code on tensors; ``param:NAME`` entries replace module
        parameters (torch.func.functional_call). ``batch = (in_shape, out_shape)``:
        per-sample mode, the input arrives as ``(..., B, F_in)`` and the output
        leaves as ``(..., B, F_out)``. Its exceptions become UserCodeError naming the line.

        Every call gets fresh arguments: code that changes one in place (``t.mul_(2)``
        on its target) changed it for every later call, so fd's points each saw
        another function (a value of 1.3e14 for 109.4). Tensors that require grad
        (the argument autograd differentiates) are passed as they are: an in-place
        change of those is torch's own error."""
        import torch

        args = {k: v if not isinstance(v, torch.Tensor) or v.requires_grad else v.clone() for k, v in args.items()}
        x = args["input"]
        self._follow(args)
        if batch:
            x = x.reshape(x.shape[:-1] + batch[0])  # (..., B, F_in) -> (..., B, *in)
        replaced, activations = {}, {}
        for k, v in args.items():
            if k.startswith("param:"):
                replaced.update(self.split_parameters(k[len("param:"):], v))
            elif k.startswith(submodules.PREFIX):
                activations[k[len(submodules.PREFIX):]] = v
        positional, kwargs = self.signature.split({**args, "input": x})
        with self.running(), submodules.replacing(self.module, activations, self.anchors):
            if replaced:
                out = torch.func.functional_call(self.module, replaced, tuple(positional), kwargs)
            else:
                out = self.callable(*positional, **kwargs)
        if self.select is not None:
            out = self.selected(out)
        if batch:
            out = out.reshape(out.shape[: out.ndim - len(batch[1])] + (-1,))
        return out

    @contextlib.contextmanager
    def running(self):
        """The guards of every run of the user's code (:func:`running_user_code`, :func:`pure_call`),
        held once around several calls that belong together (health's forward and backward): calls
        inside it do not set them up again."""
        if self._running:
            yield
            return
        with running_user_code(self.path), pure_call(self.module, self.modes, self.seed):
            self._running = True
            try:
                yield
            finally:
                self._running = False

    def _follow(self, args, dtype=None) -> None:
        """The module in the working dtype (float64 by default) and device, as gradcli computes:
        the input's, or the first float argument's where the input holds integers (token ids),
        else ``dtype`` (bind's working dtype; None: as it is)."""
        x = next((t for t in (args["input"], *args.values()) if t.is_floating_point()), None)
        if self.module is None or (x is None and dtype is None):
            return
        want = (x.dtype, x.device) if x is not None else (dtype, args["input"].device)
        if want != self._dtype:
            tensors = [*self.module.parameters(), *self.module.buffers()]
            if any(t.device != want[1] or (t.is_floating_point() and t.dtype != want[0]) for t in tensors):
                self.module.to(dtype=want[0], device=want[1])  # a pass over every parameter: only when needed
            self._dtype = want

    def bind(self, args, params, dtype=None) -> "UserBound":
        """Run the code once (no_grad) to learn and check its output; the first
        run also finds the modules in training mode (:mod:`.training`). ``dtype``:
        the working dtype, which a module follows when no argument is float (token ids)."""
        import torch

        resolved = self.resolve_params(params)
        self.signature.check_given(args)
        tensors = _tensors(args)
        self._follow(tensors, None if dtype is None else getattr(torch, np.dtype(dtype).name))
        with torch.no_grad():
            if self.modes is None and self.module is not None:
                self.modes, out = inspect_modes(self.module, lambda: self.call(tensors))
            else:
                out = self.call(tensors)
        # The function named does not fit (exit 2, as a wrong FUNCTION): every tensor inside, with its --select.
        if not isinstance(out, torch.Tensor):
            raise refuse_several(out, self.name)
        if not out.is_floating_point():
            raise UsageError(f"FUNCTION: {self.name} returned a {out.dtype} tensor, and a derivative needs a float "
                             "output; return the float tensor it is computed from (logits, not argmax)")
        if out.is_meta:
            raise BackendError(f"{self.name} returned a tensor on the meta device, which holds no values; return "
                               "the computed tensor")
        notes = self.loaded + (self.modes.notes(self.seed) if self.modes else ())
        value = out.detach().cpu().numpy()
        value.flags.writeable = False
        return UserBound(self, MappingProxyType(dict(args)), MappingProxyType(resolved), tuple(out.shape), notes,
                         value=value)

    def selected(self, out):
        """``--select``'s tensor in what the code returned (one tensor returned: refused, nothing to pick)."""
        import torch

        if isinstance(out, torch.Tensor):
            raise UsageError(f"--select {self.select}: {self.name} returns one tensor {list(out.shape)}, so there is "
                             "nothing to pick; drop --select")
        return select(out, self.select, self.name)

    def activation_array(self, name: str, args, dtype=None) -> np.ndarray:
        """``act:NAME``: the output of submodule ``name`` at these arguments (one forward
        pass, no_grad), as a new array in the working dtype."""
        import torch

        tensors = _tensors({k: v for k, v in args.items() if not k.startswith(submodules.PREFIX)})
        self._follow(tensors, None if dtype is None else getattr(torch, np.dtype(dtype).name))
        with torch.no_grad():
            out = submodules.record(self.module, name, lambda: self.call(tensors), self.name)
        self.anchors[name] = out.detach().cpu().numpy().copy()
        return self.anchors[name].copy()

    def submodules(self, args=None) -> list[tuple[str, str, str | None]]:
        """``(name, class, output)`` of every submodule; ``output`` (its shape, from one forward
        pass on ``args``: float arrays in float64, integers as they are) is None without ``args``."""
        import torch

        if self.module is None:
            return []
        shapes = None
        if args is not None:
            self.signature.check_given(args)
            tensors = {k: torch.from_numpy(np.asarray(v, dtype=np.float64 if v.dtype.kind == "f" else np.int64))
                       for k, v in args.items()}
            self._follow(tensors, torch.float64)
            shapes = submodules.output_shapes(self.module, lambda: self.call(tensors))
        return [(name, type(sub).__name__, None if shapes is None else shapes.get(name, "not called"))
                for name, sub in self.module.named_modules() if name]

    def argument(self, name: str) -> str:
        """``--wrt NAME`` in the code's own words: its first positional parameter is
        ``input``, its second ``target`` (when ``-t`` fills it); other names as they are."""
        return self.signature.filled_by(name) or name

    def embeddings(self) -> list[str]:
        """The ``nn.Embedding`` submodules (where token ids become floats)."""
        return submodules.embeddings(self.module)

    def matching(self, pattern: str) -> list[str]:
        """Parameter names matching a glob (``*``, ``layer1.*``) or a comma list of names and
        globs (``fc.weight,param:fc.bias``), in the module's order."""
        import fnmatch

        names = [n for n, _ in self.module.named_parameters()] if self.module is not None else []
        patterns = [part.strip().removeprefix("param:") for part in pattern.split(",")]
        return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]

    def split_parameters(self, name: str, value) -> dict:
        """``param:NAME`` -> {NAME: value}; a joint flat vector ``(..., n)`` (a glob or a
        comma list) -> each parameter's view of it, ``(..., *shape)``.

        One ``torch.split`` rather than a slice per parameter: its backward is one
        concatenation, where each slice's backward pads its gradient with zeros to
        the joint vector's length and autograd sums them (a pass over all n entries
        per parameter, in the gradient and again in a double backward)."""
        import torch

        if not joint(name):
            return {name: value}
        shapes = self.parameters()
        names = self.matching(name)
        pieces = torch.split(value, [math.prod(shapes[n]) for n in names], dim=-1)
        return {n: piece.reshape(value.shape[:-1] + shapes[n]) for n, piece in zip(names, pieces)}

    def parts(self, name: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """``param:NAME`` of a joint vector (a glob or a comma list): ``(param:NAME, shape)`` of
        each piece, in order; empty for one parameter."""
        if not joint(name):
            return ()
        shapes = self.parameters()
        return tuple((f"param:{n}", shapes[n]) for n in self.matching(name))

    def parameter_array(self, name: str) -> np.ndarray:
        """``param:NAME``'s value as a new float64 array (never a view of the live
        parameter); a glob's (or a comma list's) parameters flattened and joined in the
        module's order, so a Hessian or hvp w.r.t. them all has its cross terms
        (``--wrt 'param:*'``)."""
        import torch

        params = dict(self.module.named_parameters()) if self.module is not None else {}
        has = ", ".join(params) or "none (it is not a torch.nn.Module)"
        for part in (p.strip().removeprefix("param:") for p in name.split(",")):
            if joint(part) and not self.matching(part):
                raise UsageError(f"--wrt param:{part}: no parameter of {self.name} matches; it has {has}")
            if not joint(part) and part not in params:
                raise UsageError(f"--wrt param:{part}: {self.name} has no parameter {part!r}; it has {has}")
        names = self.matching(name) if joint(name) else [name]
        tensors = [params[n].detach() for n in names]
        flat = torch.empty(sum(t.numel() for t in tensors), dtype=torch.float64)
        for piece, t in zip(torch.split(flat, [t.numel() for t in tensors]), tensors):
            piece.copy_(t.reshape(-1))  # one pass per parameter: dtype and device converted as it copies
        return flat.numpy() if joint(name) else flat.numpy().reshape(tensors[0].shape)

    def differentiable(self, args):
        return ("input",) + tuple(n for n in args if n != "input" and args[n].dtype.kind == "f")


@dataclass(frozen=True, eq=False)
class UserBound(Bound):
    """User code bound to its arrays. ``batch = (in_shape, out_shape)`` in
    per-sample mode (:meth:`per_sample`): the input and output are seen
    flattened to ``(B, F_in)`` and ``(B, F_out)``, so the row machinery
    (blocks, fd by columns) applies with the batch as rows."""

    batch: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    value: np.ndarray | None = field(default=None, repr=False, compare=False)  # the output at these arrays

    def per_sample(self) -> "UserBound":
        """The per-sample view: input ``(B, *in)`` seen as ``(B, F_in)``."""
        x = self.args["input"]
        out_shape = self.output_shape
        if x.ndim == 0 or not out_shape or out_shape[0] != x.shape[0]:
            raise UsageError(f"--layout blocks: per-sample blocks need an output whose first dim is the batch: "
                             f"input {list(x.shape)}, output {list(out_shape)}; use --layout full")
        if self.function.modes and self.function.modes.coupling:
            raise UsageError(interaction_message(self.function.modes))
        flat = x.reshape(x.shape[0], -1)
        flat.flags.writeable = False
        flat_out = (out_shape[0], int(np.prod(out_shape[1:], dtype=int)))
        return UserBound(self.function, MappingProxyType({**self.args, "input": flat}), self.params, flat_out,
                         self.notes, batch=(x.shape[1:], out_shape[1:]),
                         value=None if self.value is None else self.value.reshape(flat_out))

    def with_arguments(self, args) -> "UserBound":
        """This binding with ``param:`` and ``act:`` arguments added at the values the code
        already ran with (a parameter's own value, an activation recorded at these arrays):
        the output is the one known, so the code is not run again."""
        return replace(self, args=MappingProxyType(dict(args)), _cache={})

    def rebind(self, args):
        if self.batch is None:
            return self.function.bind(args, self.params)
        x = args["input"]
        natural = self.function.bind({**args, "input": x.reshape((x.shape[0],) + self.batch[0])}, self.params)
        return natural.per_sample()

    def at_rows(self, index):
        """``--rows`` on user code. An array whose dim 0 is the batch size B is
        per-sample and sliced with the rows (the rule of per-sample gradients);
        a shared one whose dim 0 equals B by coincidence would be sliced by
        mistake, so the selected rows' output must equal the same rows of the
        whole batch's output (to rounding: a smaller batch may sum in another
        order), else exit 2 naming the arrays. Samples that interact (batch
        statistics, a shift along the batch) are refused: the rows alone are
        another function, whose outputs differ from the whole batch's."""
        modes = self.function.modes
        if modes and modes.coupling:
            raise UsageError(f"--rows: samples interact through {', '.join(modes.coupling)} in training mode, so "
                             "the selected rows alone are another function; call .eval() on the model in your "
                             "file, or drop --rows")
        sliced = [n for n, a in self.args.items()
                  if n != "input" and has_batch_axis(n, a, self.args["input"].shape)]
        named = ", ".join("--target" if n == "target" else f"--arg {n}" for n in sliced)
        advice = (f"if it is shared by every sample, give it a leading axis of size 1 (it broadcasts the same), "
                  f"or drop --rows")
        try:
            part = super().at_rows(index)
        except UserCodeError as err:
            if not sliced:
                raise
            raise UsageError(f"--rows: {named} (dim 0 = the batch size) sliced with the rows made your code "
                             f"raise ({err}); {advice}") from None
        if (modes and modes.random) or self.value is None:
            return part  # a dropout mask depends on the batch's shape: the outputs cannot be compared
        gap = output_gap(self.value[index], part.value)
        if gap is not None and not sliced:
            raise UsageError(f"--rows: the selected rows alone give other outputs than in the whole batch (by "
                             f"{gap:.3g}): samples interact in your code, so the rows alone are another function; "
                             "drop --rows")
        if gap is not None:
            raise UsageError(f"--rows: {named} (dim 0 = the batch size) sliced with the rows changes the rows' "
                             f"output (by {gap:.3g}), so it is not per-sample; {advice}")
        return part

    def row_layout(self, wrt, axis=None):
        if self.batch is None:
            return None
        b, features = self.args["input"].shape
        return RowLayout((b, features), 1, 1, self.output_shape[1], reduced=False)

    def kernel(self, wrt, axis=None, budget=None):
        """For fd only: the forward under no_grad over a stack of points
        (``torch.func.vmap``; a loop where the code cannot be vmapped), in calls
        whose measured activations fit ``budget`` (``--max-memory``; see
        :func:`.activations.points_per_call`)."""
        import torch

        function = self.function
        tensors = _tensors(self.args)
        x0 = self.args[wrt]

        def one(x):
            return function.call({**tensors, wrt: x}, self.batch)

        def forward(x: np.ndarray) -> np.ndarray:
            stack = x.shape[: x.ndim - x0.ndim]
            # a writable C-ordered array (the problem's own are read-only): torch shares, never writes it
            flat = torch.from_numpy(np.require(x, requirements=["C", "W"]).reshape((-1,) + x0.shape))
            # activations of one point, measured; the stack of points is already held
            size = points_per_call(torch, function, flat[0], one, budget=budget, held=flat.nbytes)
            with torch.no_grad():
                try:
                    out = torch.cat([torch.func.vmap(one, randomness="same")(flat[i:i + size])  # one dropout mask
                                     for i in range(0, flat.shape[0], size)])
                except Exception:
                    # Code vmap cannot batch (.item(), control flow, an old-style autograd.Function)
                    # runs point by point; an error of the code itself raises again there.
                    out = torch.stack([one(p) for p in flat])
            return out.numpy().reshape(stack + tuple(out.shape[1:]))

        def no_closed_form(_):
            raise BackendError(f"{function.name} has no closed form")

        if self.batch is not None:
            return RowKernel(x0=x0, forward=forward, blocks=lambda: no_closed_form(None), coef=None)
        return GeneralKernel(x0=x0, output_shape=self.output_shape, forward=forward,
                             vjp=no_closed_form, jvp=no_closed_form)

    def torch_forward(self, tensors):
        return self.function.call(dict(tensors), self.batch)


def joint(name: str) -> bool:
    """Whether ``param:NAME`` names several parameters joined in one flat vector: a glob or a comma list."""
    return any(ch in name for ch in "*?[,")


def _tensors(args) -> dict[str, Any]:
    """NumPy arguments as CPU tensors (copies: the problem's arrays are read-only)."""
    import torch

    return {k: torch.from_numpy(np.array(v)) for k, v in args.items()}
