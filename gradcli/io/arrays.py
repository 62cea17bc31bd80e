"""ARRAY specs -> NumPy arrays (SPEC §2, "Arrays on the command line").

One entry point, :func:`load_array`, turns the text given to an array option
(``--input``, ``--target``, ...) into a ``np.ndarray``. It never loads a pickle:
``.npy``/``.npz`` go through ``np.load(allow_pickle=False)`` and ``.pt`` through
``torch.load(weights_only=True)``. Every refusal is a :class:`UsageError` that
names the option and the fix.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sys
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..core.errors import UsageError

FILE_SUFFIXES = (".npy", ".npz", ".json", ".pt")
GENERATORS = ("randn", "rand", "randint", "arange", "eye", "ones", "zeros")
# Generators that need no shape when the option's shape is implied (a cotangent
# is shaped like the output, a tangent like the differentiated argument).
SHAPELESS_GENERATORS = ("randn", "rand", "ones", "zeros")
_NPY_MAGIC = b"\x93NUMPY"
# A full Jacobian has the output's axes and the input's: NumPy allows 64 in all.
MAX_DIMS = 31
# Python's json holds each number as an object (24-32 bytes) in a list (8 bytes
# a pointer) before NumPy copies it: at most ~20 bytes of memory per byte of text
# ("1," is 2 bytes of text and 40 of memory). A JSON text is refused past
# max_bytes / JSON_MEMORY_FACTOR.
JSON_MEMORY_FACTOR = 20
KEYS_SHOWN = 8  # an .npz with many members: the first few names are listed
_GENERATOR_RE = re.compile(r"^(?P<name>[a-z]+)(?::(?P<args>.*))?$")


def load_array(
    spec: str,
    option: str,
    *,
    seed: int = 0,
    like: tuple[int, ...] | None = None,
    stdin: BinaryIO | None = None,
    max_bytes: int = 2**31,
    held: int = 0,
) -> np.ndarray:
    """Load the array that ``spec`` names for ``option`` (e.g. ``"--input"``).

    ``like`` is the shape implied by context; it lets shapeless generators
    (``ones``, ``randn``) through. ``stdin`` is read for ``-``. ``held``: bytes the
    arrays loaded before this one hold, so that together they stay within
    ``max_bytes`` (``--max-memory``). Returns a numeric, non-empty array (integer
    or floating); finiteness is checked by the caller.
    """
    if held:
        max_bytes = _Budget(max_bytes - held, total=max_bytes, held=held)
    spec = spec.strip()
    if not spec:
        raise UsageError(f"{option}: empty value; give a file, a JSON literal or a generator such as randn:3,5")
    if spec == "-":
        if stdin is None:
            stdin = getattr(sys.stdin, "buffer", None)  # None when standard input is closed (<&-)
        array = _from_stdin(option, stdin, max_bytes)
    elif _looks_like_generator(spec):
        array = _generate(spec, option, seed=seed, like=like, max_bytes=max_bytes)
    elif _file_part(spec).lower().endswith(FILE_SUFFIXES):
        array = _from_file(spec, option, max_bytes)
    else:
        array = _from_json_text(spec, option, source="inline value", max_bytes=max_bytes)
    return _check_numeric(array, option)


def as_array(value) -> np.ndarray:
    """A library argument as a NumPy array: a torch tensor (one that requires grad, on any
    device) as its values, detached and on the CPU, without gradcli importing torch."""
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()  # NumPy has no bfloat16
        return value.numpy()
    return np.asarray(value)


def check_finite(array: np.ndarray, option: str) -> None:
    """Refuse NaN/Inf, naming the first bad index (SPEC §2)."""
    if array.dtype.kind != "f":
        return
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise UsageError(
            f"{option}: non-finite value {array[index]} at index {list(index)}; "
            "fix the data or pass --allow-nonfinite to let it propagate"
        )


# --- forms -----------------------------------------------------------------


def file_of(spec: str) -> str | None:
    """The file an ARRAY spec reads (``batch.npz:x`` -> ``batch.npz``), or None
    for inline JSON, generators and standard input."""
    spec = spec.strip()
    if spec == "-" or _looks_like_generator(spec):
        return None
    part = _file_part(spec)
    return part if part.lower().endswith(FILE_SUFFIXES) else None


def _file_part(spec: str) -> str:
    """``batch.npz:logits`` -> ``batch.npz``; anything else unchanged."""
    head, sep, _ = spec.rpartition(":")
    return head if sep and head.lower().endswith(".npz") else spec


def _from_file(spec: str, option: str, max_bytes: int) -> np.ndarray:
    path = Path(_file_part(spec))
    if not path.is_file():
        raise UsageError(f"{option}: {not_a_file(path)}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            with path.open("rb") as handle:
                return _load_npy(handle, option, max_bytes)
        if suffix == ".npz":
            key = spec[len(str(path)) + 1 :] if len(spec) > len(str(path)) else None
            return _load_npz(path, key, option, max_bytes)
        if suffix == ".json":
            _check_json_size(path.stat().st_size, option, str(path), max_bytes)
            # utf-8-sig: a byte-order mark (what Windows editors write first) is not JSON, nor data
            return _from_json_text(path.read_text(encoding="utf-8-sig"), option, source=str(path), max_bytes=max_bytes)
        return _load_pt(path, option, max_bytes)
    except OSError as err:
        raise UsageError(f"{option}: cannot read {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise UsageError(f"{option}: {path} is not UTF-8 text; JSON files must be UTF-8") from err


class _Budget(int):
    """What is left of ``--max-memory`` (``total``) once other arrays hold ``held`` bytes."""

    def __new__(cls, left: int, *, total: int, held: int) -> "_Budget":
        budget = super().__new__(cls, max(left, 0))
        budget.total, budget.held = total, held
        return budget


def _limit_text(max_bytes: int) -> str:
    """``--max-memory 2.0 GiB``, or what the arrays loaded before leave of it."""
    from ..core.sizes import format_bytes

    if isinstance(max_bytes, _Budget):
        return (f"the {format_bytes(max_bytes)} that the arrays loaded before it ({format_bytes(max_bytes.held)}) "
                f"leave of --max-memory {format_bytes(max_bytes.total)}")
    return f"--max-memory {format_bytes(max_bytes)}"


def not_a_file(path: Path, fix: str = "save the array to a file, or pipe it to - (stdin)") -> str:
    """Why ``path`` cannot be read as a file, and the fix (a folder, a pipe or device, a link loop, nothing)."""
    try:
        path.stat()
    except OSError as err:
        if path.is_symlink():
            return f"{path} is a symbolic link that leads nowhere ({err.strerror}); check the link"
        return f"file not found: {path}; check the path"
    if path.is_dir():
        return f"{path} is a folder, not a file; name a file in it"
    return f"{path} is not a regular file (a pipe or a device); {fix}"


def open_regular(path: str | Path, option: str, fix: str = "give a regular file") -> BinaryIO:
    """``path`` opened for reading, or exit 2 naming ``option`` when it is not a
    regular file: a FIFO blocked forever at ``open`` (no writer ever came), a
    device streamed without end. It is opened without blocking and checked on
    the descriptor itself (no window for the file to be swapped), then read as
    usual."""
    import stat

    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as err:
        raise UsageError(f"{option}: cannot read {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{option}: {not_a_file(path, fix)}")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def too_big(option: str, what: str, need: int, max_bytes: int, fix: str | None = None) -> UsageError:
    """Exit 2: ``what`` needs ``need`` bytes, over ``max_bytes``; ``fix`` says what to do
    (by default: a smaller array, or the --max-memory that would hold it)."""
    from ..core.sizes import format_bytes

    return UsageError(f"{option}: {what} needs {format_bytes(need)}, over {_limit_text(max_bytes)}; "
                      f"{fix or 'use a smaller array or ' + _enough(need, max_bytes)}")


def _enough(need: int, max_bytes: int) -> str:
    """A larger ``--max-memory``: at least what would hold ``need`` beside what is
    already loaded (the arrays still to load and the result need room too, which
    the plan, once everything is loaded, names exactly)."""
    from ..core.sizes import format_bytes

    return f"a --max-memory above {format_bytes(need + getattr(max_bytes, 'held', 0))} (the arrays so far alone)"


def _check_npy_header(handle: BinaryIO, name: str, option: str, max_bytes: int) -> None:
    """Read the .npy header at ``handle``'s position (then rewind) and refuse,
    before any data is read, an object array or one larger than ``max_bytes``."""
    start = handle.tell()
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:  # 3.0 (UTF-8 field names): np.load reads it, so its size is checked as well
            shape, _, dtype = _read_header_3_0(handle)
    except (ValueError, EOFError, OSError, SyntaxError) as err:
        raise UsageError(f"{option}: {name} is not a valid .npy file ({err}); re-save it with np.save") from err
    handle.seek(start)
    if dtype.hasobject:
        raise UsageError(f"{option}: {name} holds Python objects (a pickle); gradcli never loads pickles, "
                         "save a numeric array")
    if len(shape) > MAX_DIMS:
        raise UsageError(f"{option}: {name} has {len(shape)} dimensions; gradcli takes at most {MAX_DIMS}")
    if any(n < 0 for n in shape):
        raise UsageError(f"{option}: {name} is not a valid .npy file (shape {list(shape)}); re-save it with np.save")
    need = math.prod(shape) * dtype.itemsize
    if need > max_bytes:
        raise too_big(option, f"{name} (shape {list(shape)}, {dtype})", need, max_bytes)


def _read_header_3_0(handle: BinaryIO):
    """``(shape, fortran_order, dtype)`` of a version 3.0 header (2.0's layout, UTF-8 text),
    with NumPy's own parser, which only its private name exposes."""
    from numpy.lib import format as npy_format

    reader = getattr(npy_format, "_read_array_header", None)
    if reader is None:
        from numpy.lib import _format_impl as npy_format  # NumPy 2

        reader = npy_format._read_array_header
    return reader(handle, version=(3, 0))


def _load_npy(handle: BinaryIO, option: str, max_bytes: int) -> np.ndarray:
    name = getattr(handle, "name", "standard input")
    _check_npy_header(handle, name, option, max_bytes)
    try:
        return np.load(handle, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise UsageError(f"{option}: {name} holds Python objects (a pickle); gradcli never loads pickles, save a numeric array") from err
        raise UsageError(f"{option}: {name} is not a valid .npy file ({err}); re-save it with np.save") from err
    except (EOFError, OSError) as err:
        raise UsageError(f"{option}: {name} is truncated or not a .npy file; re-save it with np.save") from err


def _load_npz(path: Path, key: str | None, option: str, max_bytes: int) -> np.ndarray:
    """One member of an .npz archive; its .npy header is checked before its data is read."""
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
        members = archive.namelist()
    except (zipfile.BadZipFile, ValueError) as err:
        raise UsageError(f"{option}: {path} is not a valid .npz archive; re-save it with np.savez") from err
    with archive:
        keys = [m[: -len(".npy")] if m.endswith(".npy") else m for m in members]
        listed = ", ".join(keys[:KEYS_SHOWN]) + (f", … ({len(keys)} in all)" if len(keys) > KEYS_SHOWN else "")
        if key is None:
            if len(keys) != 1:
                raise UsageError(f"{option}: {path} holds {len(keys)} arrays ({listed}); name one as {path}:KEY")
            key = keys[0]
        if key not in keys:
            raise UsageError(f"{option}: {path} has no array {key!r}; it holds {listed}")
        member = members[keys.index(key)]
        if not member.endswith(".npy"):
            raise UsageError(f"{option}: {path}:{key} is not a .npy array (an .npz member written by np.savez); "
                             "name an array member")
        try:
            with archive.open(member) as handle:  # a zip member can seek back to its start
                _check_npy_header(handle, f"{path}:{key}", option, max_bytes)
                return np.lib.format.read_array(handle, allow_pickle=False)
        except UsageError:
            raise
        except Exception as err:  # zipfile and numpy raise several unrelated types for a corrupt member
            raise UsageError(f"{option}: {path}:{key} is truncated or corrupt; re-save it with np.savez") from err


_PT_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8")


def bound_torch_file(path: Path, option: str, max_bytes: int, fix: str | None = None) -> None:
    """Refuse a ``torch.save`` file whose bytes exceed ``max_bytes`` before ``torch.load`` reads it:
    its size, and for the zip format the size of its entries unpacked (they may be deflated:
    a 400 KB file holding 400 MB), read from the zip's directory alone."""
    if path.stat().st_size > max_bytes:
        raise too_big(option, str(path), path.stat().st_size, max_bytes, fix)
    import zipfile

    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                unpacked = sum(info.file_size for info in archive.infolist())
        except (zipfile.BadZipFile, ValueError):
            unpacked = 0  # torch.load says what is wrong with it
        if unpacked > max_bytes:
            raise too_big(option, f"{path} (unpacked)", unpacked, max_bytes, fix)


def _load_pt(path: Path, option: str, max_bytes: int) -> np.ndarray:
    try:
        import torch
    except ImportError as err:
        raise UsageError(f"{option}: reading {path} needs torch, which is not installed; save the tensor as .npy instead") from err
    bound_torch_file(path, option, max_bytes)
    try:
        with warnings.catch_warnings():  # torch warns on stderr about what it refuses; our message says it
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the restricted unpickler raises many types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"{option}: {path} is not a tensor file that loads with weights_only=True ({first[:120]}); "
            "save a tensor with torch.save(t, path)"
        ) from err
    if not isinstance(obj, torch.Tensor):
        raise UsageError(f"{option}: {path} holds a {type(obj).__name__}, not a tensor; save a single tensor")
    with warnings.catch_warnings():  # (nested tensors warn that they are a prototype on every access)
        warnings.simplefilter("ignore")
        return _dense_array(torch, obj, path, option, max_bytes)


def _dense_array(torch, obj, path: Path, option: str, max_bytes: int) -> np.ndarray:
    """A loaded tensor as a NumPy array, or exit 2 naming what it is instead (sparse,
    nested, quantized, meta, complex, a dtype NumPy has not): never torch's own
    internal error from an operation such a tensor does not support."""
    if obj.is_nested:  # (its sizes differ per component: it has no shape to read, and no array)
        raise UsageError(f"{option}: {path} holds a nested tensor (components of different shapes); save one dense "
                         "tensor (torch.stack of equal shapes, or torch.nested.to_padded_tensor(t, 0.0))")
    # The file's size bounds its storage, not the tensor: a view of one stored number expanded
    # to 10^9 (stride 0) is a 1 KB file. Its own size is what every later copy takes.
    need = obj.numel() * obj.element_size()
    if need > max_bytes:
        raise too_big(option, f"{path} (shape {list(obj.shape)}, {str(obj.dtype).removeprefix('torch.')})", need,
                       max_bytes)
    if obj.is_complex():
        raise UsageError(f"{option}: {path} holds a complex tensor; gradcli differentiates real arrays")
    kind = ("a sparse" if obj.is_sparse or obj.layout in (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr,
                                                          torch.sparse_bsc)
            else f"a {str(obj.layout).removeprefix('torch.')}-layout" if obj.layout is not torch.strided
            else "a meta (data-less)" if obj.is_meta else "a quantized" if obj.is_quantized else None)
    if kind is None and str(obj.dtype).removeprefix("torch.") not in _PT_DTYPES:
        kind = f"a {str(obj.dtype).removeprefix('torch.')}"
    if kind is not None:
        raise UsageError(f"{option}: {path} holds {kind} tensor; save a dense tensor of a float or integer dtype "
                         "(e.g. t.to_dense().float())")
    try:
        tensor = obj.detach().cpu().contiguous()  # an expanded or strided view becomes the array it shows
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        return tensor.numpy()
    except (RuntimeError, TypeError) as err:  # a tensor subclass or layout torch cannot turn into an array
        first = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UsageError(f"{option}: {path} holds a tensor gradcli cannot read as an array ({first}); save a "
                         "plain dense tensor with torch.save(t.detach().cpu().contiguous(), path)") from err


def _from_stdin(option: str, stream: BinaryIO | None, max_bytes: int) -> np.ndarray:
    """JSON or .npy bytes from standard input, never read past what the limit allows:
    an .npy header is read and sized first, then exactly its data; JSON text up to
    ``max_bytes / JSON_MEMORY_FACTOR`` bytes (what parsing it takes), so an endless
    stream (``yes |``, ``< /dev/zero``) stops there."""
    if stream is None:
        raise UsageError(f"{option}: standard input is closed; pipe JSON or .npy bytes into it, or give a file")
    try:
        data = stream.read(len(_NPY_MAGIC) + 2)  # the magic string and the format version
        if data.startswith(_NPY_MAGIC) and len(data) == len(_NPY_MAGIC) + 2:
            length_bytes = 2 if data[len(_NPY_MAGIC)] == 1 else 4
            data += stream.read(length_bytes)
            length = int.from_bytes(data[len(data) - length_bytes:], "little")
            data += stream.read(min(length, 2**16))  # NumPy refuses headers over 10,000 bytes anyway
            buffer = io.BytesIO(data)
            _check_npy_header(buffer, "standard input", option, max_bytes)
            buffer.seek(0)
            np.lib.format.read_magic(buffer)
            shape, _, dtype = (np.lib.format.read_array_header_1_0(buffer) if length_bytes == 2
                               else np.lib.format.read_array_header_2_0(buffer) if data[len(_NPY_MAGIC)] == 2
                               else _read_header_3_0(buffer))
            data += stream.read(math.prod(shape) * dtype.itemsize)
            return _load_npy(io.BytesIO(data), option, max_bytes)
        if data.startswith(_NPY_MAGIC):  # too short to hold a header
            return _load_npy(io.BytesIO(data), option, max_bytes)
        limit = max_bytes // JSON_MEMORY_FACTOR
        data += stream.read(limit + 1 - len(data))
    except (OSError, ValueError) as err:
        raise UsageError(f"{option}: cannot read standard input ({err}); pipe JSON or .npy bytes into it") from err
    if len(data) > limit:
        from ..core.sizes import format_bytes

        raise UsageError(f"{option}: standard input holds more than {format_bytes(limit)} of JSON, which needs more "
                         f"than {_limit_text(max_bytes)} to parse (up to {JSON_MEMORY_FACTOR} bytes a "
                         "byte); pipe .npy bytes (np.save), read at their own size, or raise --max-memory")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UsageError(f"{option}: standard input is neither .npy bytes nor UTF-8 JSON") from err
    if not text.strip():
        raise UsageError(f"{option}: standard input is empty; pipe JSON or .npy bytes into it")
    return _from_json_text(text, option, source="standard input", max_bytes=max_bytes)


# --- JSON ------------------------------------------------------------------

_JSON_DTYPES = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8")


def _check_json_size(length: int, option: str, source: str, max_bytes: int) -> None:
    if length * JSON_MEMORY_FACTOR > max_bytes:
        raise too_big(option, f"{source} ({length} bytes of JSON, parsed at up to {JSON_MEMORY_FACTOR} bytes a byte)",
                       length * JSON_MEMORY_FACTOR, max_bytes)


def _from_json_text(text: str, option: str, *, source: str, max_bytes: int = 2**31) -> np.ndarray:
    _check_json_size(len(text), option, source, max_bytes)
    try:
        data = json.loads(text)
    except RecursionError as err:
        raise UsageError(f"{option}: {source} is nested too deeply to be an array") from err
    except json.JSONDecodeError as err:
        hint = "" if source != "inline value" else "; give a file (.npy, .npz, .json, .pt), JSON such as '[[0.1, 0.2]]', or a generator such as randn:3,5"
        raise UsageError(f"{option}: {source} is not valid JSON ({err.msg} at position {err.pos}){hint}") from err
    except ValueError as err:  # Python refuses integers of more than 4300 digits
        raise UsageError(f"{option}: {source} holds a number too large to read ({str(err)[:80]}); "
                         "arrays hold int64 or float values") from err
    dtype = None
    if isinstance(data, dict):
        if set(data) - {"data", "dtype"} or "data" not in data:
            raise UsageError(f'{option}: a JSON object must look like {{"data": [...], "dtype": "int64"}}; got keys {sorted(data)}')
        dtype = data.get("dtype")
        if dtype is not None and dtype not in _JSON_DTYPES:
            raise UsageError(f"{option}: unknown dtype {dtype!r} in {source}; use one of {', '.join(_JSON_DTYPES)}")
        data = data["data"]
    try:
        shape, has_float = _json_shape(data, option, source)
    except RecursionError as err:
        raise UsageError(f"{option}: {source} is nested too deeply to be an array") from err
    if dtype is None:
        dtype = "float64" if has_float else "int64"
    try:
        with np.errstate(over="raise"):  # 1e300 as float32 is inf: refused here, not warned about
            array = np.array(data, dtype=dtype)
    except FloatingPointError as err:
        raise UsageError(f"{option}: {source} has a number beyond dtype {dtype}'s range (largest "
                         f"{float(np.finfo(dtype).max):.4g}); use float64") from err
    except (OverflowError, ValueError) as err:
        raise UsageError(f"{option}: {source} does not fit dtype {dtype} ({err})") from err
    if np.dtype(dtype).kind in "iu" and has_float:
        raise UsageError(f"{option}: {source} has fractional numbers but dtype {dtype}; use a float dtype")
    assert array.shape == shape
    return array


def _json_shape(data, option: str, source: str) -> tuple[tuple[int, ...], bool]:
    """Shape of a rectangular nested list of numbers, and whether any is a float."""
    if isinstance(data, bool) or data is None or isinstance(data, (str, dict)):
        kind = "boolean" if isinstance(data, bool) else "null" if data is None else type(data).__name__.replace("str", "string").replace("dict", "object")
        raise UsageError(f"{option}: {source} contains a {kind}; arrays hold numbers only")
    if isinstance(data, (int, float)):
        return (), isinstance(data, float)
    if not data:
        raise UsageError(f"{option}: {source} contains an empty list; arrays must not be empty")
    parts = [_json_shape(item, option, source) for item in data]
    first = parts[0][0]
    if any(shape != first for shape, _ in parts):
        raise UsageError(f"{option}: {source} is ragged (rows of different lengths); every row needs the same shape")
    return (len(data), *first), any(f for _, f in parts)


# --- generators ------------------------------------------------------------


def _looks_like_generator(spec: str) -> bool:
    match = _GENERATOR_RE.match(spec)
    return bool(match) and match["name"] in GENERATORS


def _parse_shape(text: str, option: str, spec: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(n <= 0 for n in shape):
        raise UsageError(f"{option}: bad shape in {spec!r}; write positive sizes separated by commas, e.g. randn:3,5")
    return shape


def _generate(spec: str, option: str, *, seed: int, like, max_bytes: int) -> np.ndarray:
    match = _GENERATOR_RE.match(spec)
    name, args = match["name"], match["args"]
    # Each option draws from its own stream of --seed, so that `-x randn:3 -t randn:3`
    # gives two different arrays, and the same command always gives the same ones.
    rng = np.random.default_rng([seed, zlib.crc32(option.encode())])
    high = None
    if name == "randint":
        high_text, _, args = (args or "").partition(":")
        try:
            high = int(high_text)
        except ValueError:
            high = 0
        if not 0 < high <= np.iinfo(np.int64).max:
            raise UsageError(f"{option}: randint needs randint:HIGH:SHAPE with HIGH > 0 (below 2**63), e.g. randint:5:3 (3 integers in [0, 5))")
        args = args or None
    if args is None:
        if like is None or name not in (*SHAPELESS_GENERATORS, "randint"):
            raise UsageError(f"{option}: {name} needs a shape here, e.g. {name}:{'5:3' if name == 'randint' else '3,5'}")
        shape = tuple(like)
    elif name == "eye":
        (n,) = _parse_shape(args, option, spec) if "," not in args else (0,)
        if n <= 0:
            raise UsageError(f"{option}: eye takes one size, e.g. eye:3")
        shape = (n, n)
    else:
        shape = _parse_shape(args, option, spec)
    if math.prod(shape) * 8 > max_bytes:
        from ..core.sizes import format_bytes

        raise UsageError(f"{option}: {spec} would take {format_bytes(math.prod(shape) * 8)}, over "
                         f"{_limit_text(max_bytes)}; use a smaller shape or {_enough(math.prod(shape) * 8, max_bytes)}")
    if name == "randn":
        return rng.standard_normal(shape)
    if name == "rand":
        return rng.random(shape)
    if name == "randint":
        return rng.integers(0, high, size=shape, dtype=np.int64)
    if name == "arange":
        return np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
    if name == "eye":
        return np.eye(shape[0])
    return np.ones(shape) if name == "ones" else np.zeros(shape)


# --- validation ------------------------------------------------------------


def _check_numeric(array: np.ndarray, option: str) -> np.ndarray:
    kind = array.dtype.kind
    if kind == "b":
        raise UsageError(f"{option}: booleans are not numbers here; convert to 0/1 integers or floats")
    if kind == "c":
        raise UsageError(f"{option}: complex values are not supported; give a real array")
    if kind not in "iuf":
        raise UsageError(f"{option}: dtype {array.dtype} is not numeric; give integers or floats")
    if array.size == 0:
        raise UsageError(f"{option}: the array is empty (shape {list(array.shape)}); give at least one value")
    if array.ndim > MAX_DIMS:
        raise UsageError(f"{option}: {array.ndim} dimensions; gradcli takes at most {MAX_DIMS}")
    if kind == "u" and array.dtype.itemsize == 8 and array.max() > np.iinfo(np.int64).max:
        # int64 would wrap it to a negative number (2**64 - 100 would become -100: ignore_index)
        raise UsageError(f"{option}: value {int(array.max())} is above int64's range; class indices must fit int64")
    return array
