"""What goes into ``-o PATH`` (``.npy``, ``.npz`` or ``.json``): a result, or the
per-sample gradients. The files are written by :mod:`gradcli.io.files`, whole
or not at all, and published only after standard output succeeded."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..core.results import Result
from ..io.files import NpyStream, Pending, pending_write
from .json import dump, dumps, result_to_dict
from .samples import samples_to_dict


def prepare_result(path: Path, result: Result, *, timing: bool = True, stream: NpyStream | None = None,
                   total_seconds=None) -> Pending:
    """The file for ``-o``, written but not yet published. ``.npy``: the value;
    ``.npz``: value, output, the vjp/jvp/hvp vector (``cotangent``/``tangent``),
    fd's ``error``, and for several arguments joined (``--wrt 'param:*'``) each
    one's piece under its name (``param:fc.weight``; a Hessian's own block); ``.json``: the --json document, streamed. A value already
    streamed into ``stream``'s file is only flushed."""
    if stream is not None and stream.holds(result.value):
        stream.array.flush()
        return stream
    suffix = path.suffix.lower()

    def write(handle: BinaryIO) -> None:
        if suffix == ".npy":
            np.save(handle, result.value, allow_pickle=False)
        elif suffix == ".npz":
            arrays = {"value": result.value, "output": result.output}
            if result.vector is not None:
                arrays["cotangent" if result.quantity.value == "vjp" else "tangent"] = result.vector
            if result.error is not None:
                arrays["error"] = result.error
            if result.nonsmooth is not None:  # fd: entries whose differences did not converge
                arrays["nonsmooth"] = result.nonsmooth
            arrays.update(result.named())  # several arguments joined: each one's piece under its name
            np.savez(handle, **arrays)
        else:
            text = io.TextIOWrapper(handle, encoding="utf-8")
            dump(result_to_dict(result, timing=timing, total_seconds=total_seconds), text.write)
            text.flush()
            text.detach()

    return pending_write(path, write)


def prepare_samples(path: Path, res) -> Pending:
    """``grad --per-sample -o``: ``.npy`` the norms; ``.npz`` the norms and each
    parameter's per-sample gradients; ``.json`` the document. Not yet published."""
    suffix = path.suffix.lower()

    def write(handle: BinaryIO) -> None:
        if suffix == ".json":
            handle.write(dumps(samples_to_dict(res, timing=False)).encode())
        elif suffix == ".npz":
            np.savez(handle, norms=res.norms, **{f"param:{n}": g for n, g in (res.grads or {}).items()})
        else:
            np.save(handle, res.norms, allow_pickle=False)

    return pending_write(path, write)
