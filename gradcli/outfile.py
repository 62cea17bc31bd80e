"""``-o PATH``: write a result to .npy, .npz or .json, whole or not at all.

The file is written to a temporary file in the same folder and renamed over
the target, so a reader never sees half a file and an error leaves nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import numpy.lib.format  # noqa: F401  (open_memmap)

from .errors import UsageError
from .render.json import dumps, result_to_dict
from .results import Result

SUFFIXES = (".npy", ".npz", ".json")


def check_output_path(path: str, option: str = "--output", suffixes: tuple[str, ...] = SUFFIXES) -> Path:
    """Refuse, before any work, a path that cannot be written."""
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise UsageError(f"{option}: unknown extension {target.suffix or '(none)'!r} in {path}; use {', '.join(suffixes)}")
    folder = target.parent
    if not folder.is_dir():
        raise UsageError(f"{option}: folder {folder} does not exist; create it first")
    if target.is_dir():
        raise UsageError(f"{option}: {path} is a folder; give a file name")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{option}: folder {folder} is not writable")
    return target


def _publish(tmp: Path, path: Path) -> None:
    """Give the finished temporary file the mode a plain open() would (mkstemp
    makes it 0600), then rename it over ``path`` in one step."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file in ``path``'s folder, then rename it
    over ``path``; on any error (or Ctrl-C) the temporary file is removed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        _publish(Path(tmp), path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class NpyStream:
    """A ``.npy`` result filled in place: a memory-mapped temporary file in the
    target's folder (``allocate``), renamed over the target by :meth:`commit`,
    removed by :meth:`abort`. The result is never held whole in memory: the
    operating system writes its pages out as they fill."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self.array: np.ndarray | None = None

    def allocate(self, shape, dtype=np.float64) -> np.ndarray:
        # A new file is sparse: every entry reads as zero until written.
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        return self.array

    def holds(self, value: np.ndarray) -> bool:
        return self.array is not None and (value is self.array or getattr(value, "base", None) is self.array)

    def commit(self) -> None:
        self.array.flush()
        _publish(self.tmp, self.path)

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


def write_result(path: Path, result: Result, *, timing: bool = True, stream: NpyStream | None = None) -> None:
    """``.npy``: the value; ``.npz``: value, output (and fd's error and nonsmooth); ``.json``: the --json document.
    A value already streamed into ``stream``'s file is just committed."""
    if stream is not None and stream.holds(result.value):
        stream.commit()
        return
    suffix = path.suffix.lower()

    def write(handle: BinaryIO) -> None:
        if suffix == ".npy":
            np.save(handle, result.value, allow_pickle=False)
        elif suffix == ".npz":
            arrays = {"value": result.value, "output": result.output}
            if result.error is not None:
                arrays["error"] = result.error
            if result.nonsmooth is not None:  # fd: entries whose differences did not converge
                arrays["nonsmooth"] = result.nonsmooth
            np.savez(handle, **arrays)
        else:
            handle.write(dumps(result_to_dict(result, timing=timing)).encode())

    atomic_write(path, write)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) whole or not at all."""
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` whole or not at all."""
    atomic_write(path, lambda handle: handle.write(data))
