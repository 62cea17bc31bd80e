"""Output files written whole or not at all (``-o``, ``--save-baseline``, ``--junit``,
``--plot``): what goes into them is the renderers' (:mod:`gradcli.render.files`).

The file is written to a temporary file in the same folder (:class:`Pending`)
and renamed over the target only once everything else has succeeded (the
command's standard output included), so a reader never sees half a file and an
error leaves nothing. An existing file keeps its permissions; a symbolic link
is written through (its target is replaced, the link stays); the temporary name
is short, so any name the file system accepts works.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
import numpy.lib.format  # noqa: F401  (open_memmap)

from ..core.errors import UsageError

SUFFIXES = (".npy", ".npz", ".json")


def check_output_path(path: str, option: str = "--output", suffixes: tuple[str, ...] = SUFFIXES) -> Path:
    """Refuse, before any work, a path that cannot be written (exit 2): a bad
    extension, a missing folder, a name too long, a folder where no file can
    be created (read-only, ``/proc``)."""
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise UsageError(f"{option}: unknown extension {target.suffix or '(none)'!r} in {path}; use {', '.join(suffixes)}")
    return check_writable(target, option)


def refuse_same_file(outputs: dict[str, str | Path | None], inputs: dict[str, str | Path | None],
                     allowed: frozenset[tuple[str, str]] = frozenset()) -> None:
    """Exit 2 when an output file is one of the inputs (``-x x.npy -o x.npy``: the result
    would replace the data it came from; ``-o`` through a link to the FUNCTION's ``.py``)
    or another output; ``{option: path}``, None skipped. The same file through another
    name, a symbolic or a hard link counts too (:func:`same_file`). ``allowed``: pairs
    ``(output option, input option)`` that may share a file (``--save-baseline`` refreshing
    the ``--baseline`` it read)."""
    outs = [(option, path) for option, path in outputs.items() if path is not None]
    for number, (option, path) in enumerate(outs):
        others = [*((o, p) for o, p in inputs.items() if p is not None and (option, o) not in allowed),
                  *outs[number + 1:]]
        for other, source in others:
            if same_file(path, source):
                raise UsageError(f"{option}: {path} is also {other}; writing it would replace that file, so "
                                 "give another name")


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: the same device and inode (links, hard links and
    other spellings followed), or, where one does not exist yet, the same real path."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist yet: the same path, links followed
        return os.path.realpath(a) == os.path.realpath(b)


def check_writable(target: Path, option: str) -> Path:
    folder = target.parent
    if not folder.is_dir():
        raise UsageError(f"{option}: folder {folder} does not exist; create it first")
    limit = _name_max(folder)
    if len(os.fsencode(target.name)) > limit:
        raise UsageError(f"{option}: the file name is {len(os.fsencode(target.name))} bytes long; this file system "
                         f"allows {limit}")
    final = _final_target(target)
    if final.exists() and not final.is_file() and not final.is_dir():
        # A device or a pipe (out.npy -> /dev/full): the file would be renamed over it, replacing the node
        raise UsageError(f"{option}: {target} leads to {final}, which is not a regular file (a device or a pipe); "
                         "give the path of a file")
    if target.is_dir():
        raise UsageError(f"{option}: {target} is a folder; give a file name")
    try:  # the only sure test: create (and remove) a file there
        Pending(target).abort()
    except OSError as err:
        raise UsageError(f"{option}: cannot write in folder {folder} ({err.strerror or err}); choose another") from None
    return target


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _final_target(path: Path) -> Path:
    """Where the bytes go: through a symbolic link to the file it names."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


class Pending:
    """A temporary file next to the output's final target. Fill :attr:`tmp`,
    then :meth:`publish` renames it over the target in one step (with the old
    file's mode, or the mode a plain ``open()`` would give); :meth:`abort`
    removes it. ``option`` names the output in errors: a write that fails
    (the file too large for ``ulimit -f``, the disk full) is exit 2 naming it,
    with the temporary file removed (:meth:`failed`)."""

    def __init__(self, path: Path, option: str = "--output") -> None:
        self.path, self.option = path, option
        self.target = _final_target(path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".gc", suffix=".tmp", dir=self.target.parent)  # short: ".gcXXXXXXXX.tmp"
        except OSError as err:
            raise self.failed(err) from err
        os.close(fd)
        self.tmp = Path(tmp)

    def publish(self) -> None:
        try:
            mode = os.stat(self.target).st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        try:
            os.chmod(self.tmp, mode)
            os.replace(self.tmp, self.target)
        except OSError as err:
            self.abort()
            raise self.failed(err) from err

    def abort(self) -> None:
        if hasattr(self, "tmp"):
            self.tmp.unlink(missing_ok=True)

    def failed(self, err: OSError) -> UsageError:
        """The error of a write that failed: exit 2 naming the option and the file."""
        return UsageError(f"{self.option}: cannot write {self.path} ({err.strerror or err}); no file was written")


def pending_write(path: Path, write: Callable[[BinaryIO], None], option: str = "--output") -> Pending:
    """Call ``write`` on a temporary file for ``path``; the caller publishes it.
    On any error (or Ctrl-C) the temporary file is removed; a failed write
    (``EFBIG``, ``ENOSPC``) is exit 2 naming ``option``."""
    pending = Pending(path, option)
    try:
        with pending.tmp.open("wb") as handle:
            write(handle)
    except OSError as err:
        pending.abort()
        raise pending.failed(err) from err
    except BaseException:
        pending.abort()
        raise
    return pending


def atomic_write(path: Path, write: Callable[[BinaryIO], None], option: str = "--output") -> None:
    """:func:`pending_write`, published at once."""
    pending_write(path, write, option).publish()


class NpyStream(Pending):
    """A ``.npy`` result filled in place: a memory-mapped temporary file in the
    target's folder (``allocate``), published by :meth:`publish`, removed by
    :meth:`abort`. The result is never held whole in memory: the operating
    system writes its pages out as they fill."""

    def __init__(self, path: Path, option: str = "--output") -> None:
        super().__init__(path, option)
        self.array: np.ndarray | None = None

    def allocate(self, shape, dtype=np.float64) -> np.ndarray:
        # A new file is sparse: every entry reads as zero until written. Its blocks are reserved first: a page
        # written later to a full disk (or past ulimit -f) would kill the process (SIGBUS), not raise.
        try:
            self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=dtype, shape=tuple(shape))
            with open(self.tmp, "r+b") as handle:
                if hasattr(os, "posix_fallocate"):
                    os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as err:
            self.array = None
            self.abort()
            raise self.failed(err) from err
        return self.array

    def holds(self, value: np.ndarray) -> bool:
        return self.array is not None and (value is self.array or getattr(value, "base", None) is self.array)


def check_plot_path(path: str) -> Path:
    """``--plot PATH.png``: refused before any work when it cannot be written."""
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise UsageError(f"--plot: {path} must end in .png")
    return check_writable(target, "--plot")


def write_text(path: Path, text: str, option: str = "--output") -> None:
    """Write ``text`` (UTF-8) whole or not at all."""
    write_bytes(path, text.encode("utf-8"), option)


def write_bytes(path: Path, data: bytes, option: str = "--output") -> None:
    """Write ``data`` whole or not at all."""
    atomic_write(path, lambda handle: handle.write(data), option)
