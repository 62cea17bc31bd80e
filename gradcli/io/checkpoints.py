"""``--weights PATH[:KEY]``: trained weights read as a state dict (name -> tensor),
bounded by ``--max-memory`` before any tensor is read, never unpickling code.

- ``.safetensors``: the 8-byte length and the JSON header give every tensor's
  byte range; their sum is bounded, then the safetensors library reads them.
- ``.pt``, ``.pth``, ``.bin``, ``.ckpt`` (``torch.save``): the zip directory's
  unpacked sizes are bounded (:func:`gradcli.io.arrays.bound_torch_file`), then
  ``torch.load(weights_only=True)`` reads it: tensors, numbers, strings and
  containers only, no object of the user's classes.

``:KEY`` picks a nested dict (``ckpt.pt:state_dict``, Lightning's
``state_dict``; ``a.b`` goes two levels down where no key ``a.b`` exists).
How the state dict is loaded into a module: :mod:`gradcli.usercode.weights`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.errors import UsageError
from .arrays import too_big, bound_torch_file, not_a_file

SAFETENSORS = ".safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
HEADER_LIMIT = 100 * 2**20  # the safetensors library refuses larger headers too
SHOWN = 5  # keys listed in a refusal
FIX = "use a smaller checkpoint or raise --max-memory"


def split_spec(spec: str) -> tuple[Path, str | None]:
    """``PATH[:KEY]`` -> ``(path, key)``; a file whose own name holds a colon is taken whole."""
    spec = spec.strip()
    head, sep, key = spec.rpartition(":")
    if not sep or Path(spec).is_file() or not head.lower().endswith((SAFETENSORS, *TORCH_SUFFIXES)):
        return Path(spec), None
    if not key:
        raise UsageError(f"--weights {spec}: empty KEY after the colon; write PATH:KEY (e.g. ckpt.pt:state_dict) "
                         "or PATH alone")
    return Path(head), key


def read_weights(spec: str, max_bytes: int) -> dict[str, Any]:
    """The state dict ``spec`` names, as CPU tensors; every refusal names ``--weights``."""
    path, key = split_spec(spec)
    suffix = path.suffix.lower()
    if suffix not in (SAFETENSORS, *TORCH_SUFFIXES):
        raise UsageError(f"--weights: {path} is not a weights file; give a .safetensors file or a state dict saved "
                         f"with torch.save ({', '.join(TORCH_SUFFIXES)})")
    if not path.is_file():
        raise UsageError(f"--weights: {not_a_file(path)}")
    try:
        if suffix == SAFETENSORS:
            if key is not None:
                raise UsageError(f"--weights {spec}: a .safetensors file holds one flat dict of tensors, no nested "
                                 "KEY; give the path alone (--weights-prefix strips a prefix of its keys)")
            return _read_safetensors(path, max_bytes)
        return _state_dict(_read_torch(path, max_bytes), key, path)
    except OSError as err:
        raise UsageError(f"--weights: cannot read {path}: {err.strerror or err}") from err


def _read_safetensors(path: Path, max_bytes: int) -> dict[str, Any]:
    size = path.stat().st_size
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if size < 8 or length > min(size - 8, HEADER_LIMIT):
            raise UsageError(f"--weights: {path} is not a safetensors file (its header length {length} does not fit "
                             f"a {size}-byte file)")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UsageError(f"--weights: {path} is not a safetensors file (its header is not JSON: {err})") from None
    if not isinstance(header, dict):
        raise UsageError(f"--weights: {path} is not a safetensors file (its header is not a JSON object)")
    need = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = entry["data_offsets"]
            need += int(end) - int(start)
        except (TypeError, KeyError, ValueError):
            raise UsageError(f"--weights: {path} is not a safetensors file (entry {name!r} has no data_offsets)") \
                from None
    if need > max_bytes:
        raise too_big("--weights", f"{path} ({len(header) - ('__metadata__' in header)} tensors)", need, max_bytes,
                       FIX)
    try:
        from safetensors.torch import load_file
    except ImportError as err:
        raise UsageError("--weights: reading .safetensors needs the safetensors package; pip install safetensors") \
            from err
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as err:  # noqa: BLE001 (safetensors raises its own SafetensorError and others)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"--weights: {path} is not a valid safetensors file ({first[:160]})") from err


def _read_torch(path: Path, max_bytes: int) -> Any:
    import torch

    bound_torch_file(path, "--weights", max_bytes, FIX)
    try:
        with warnings.catch_warnings():  # torch warns about what it refuses; the message below says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (the restricted unpickler raises many types)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"--weights: {path} does not load with torch.load(weights_only=True) ({first[:160]}): it "
                         "holds objects other than tensors and containers; save the state dict alone, "
                         "torch.save(model.state_dict(), path), or as .safetensors") from err


def _state_dict(obj: Any, key: str | None, path: Path) -> dict[str, Any]:
    """The state dict inside a loaded checkpoint: ``obj`` itself, or ``obj[KEY]``."""
    import torch

    where = f"{path}:{key}" if key else str(path)
    if key is not None:
        obj = _nested(obj, key, path)
    if not isinstance(obj, Mapping):
        raise UsageError(f"--weights: {where} holds a {type(obj).__name__}, not a state dict (a dict of tensors); "
                         "save model.state_dict()")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor) or not isinstance(k, str)]
    if bad:
        inner = [str(k) for k, v in obj.items() if _is_state_dict(v)]
        fix = (f"pick the state dict inside with --weights {path}:{inner[0]}" if inner else
               "give the dict of tensors (model.state_dict())")
        raise UsageError(f"--weights: {where} is not a state dict: {listed(bad)} "
                         f"{'is' if len(bad) == 1 else 'are'} not tensors; {fix}")
    # (the tensors are read already: a view expanded to 10^9 entries is bounded here, by the module it fills)
    return dict(obj)


def _nested(obj: Any, key: str, path: Path) -> Any:
    if isinstance(obj, Mapping) and key in obj:
        return obj[key]
    current = obj
    for step in key.split("."):
        if not isinstance(current, Mapping) or step not in current:
            keys = list(obj) if isinstance(obj, Mapping) else []
            has = f"its keys are {listed([str(k) for k in keys])}" if keys else f"it holds a {type(obj).__name__}"
            raise UsageError(f"--weights {path}:{key}: no key {key!r}; {has}")
        current = current[step]
    return current


def _is_state_dict(value: Any) -> bool:
    import torch

    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" (and {len(names) - SHOWN} more)" if len(names) > SHOWN else "")

