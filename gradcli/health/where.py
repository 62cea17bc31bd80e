"""Where code is: ``file:line`` of a module's ``forward``, and the innermost line of your
code in a stack (torch's, gradcli's and the standard library's frames are not yours)."""

from __future__ import annotations

import functools
import os
import re
import sysconfig
from dataclasses import dataclass

from ..checking.locate import display_path

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>[^\n]+)\n(?:\s*(?P<code>[^\n]*))?')


@dataclass(frozen=True)
class Frame:
    file: str
    line: int
    code: str

    @property
    def at(self) -> str:
        return _at(self.file, self.line)


@functools.cache
def _not_yours() -> tuple[str, ...]:
    """Folders whose frames are never "your line": torch, gradcli, the standard library."""
    import torch

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # gradcli/, above health/
    folders = [os.path.dirname(torch.__file__), package]
    folders += [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")]
    return tuple(os.path.realpath(f) + os.sep for f in folders)


def user_frame(frames) -> Frame | None:
    """The innermost frame of your code in ``frames`` (``traceback.FrameSummary`` values,
    or the strings of ``traceback.format_stack``, outermost first)."""
    parsed = []
    for f in frames:
        if isinstance(f, str):
            m = _FRAME.search(f)
            if m:
                parsed.append((m["file"], int(m["line"]), (m["code"] or "").strip()))
        else:
            parsed.append((f.filename, f.lineno, (f.line or "").strip()))
    for file, line, code in reversed(parsed):
        if file.startswith("<") or os.path.realpath(file).startswith(_not_yours()):
            continue
        return Frame(file, line, code)
    return None


def forward_location(module) -> str | None:
    """``file:line`` of ``def forward`` of the module's class, read from its code object
    (your file is loaded outside ``sys.modules``, where ``inspect`` looks; and reading
    the source to find the line costs milliseconds per class)."""
    return code_location(getattr(type(module), "forward", None))


def code_location(function) -> str | None:
    """``file:line`` where ``function`` is defined (its first decorator's line, as ``inspect`` says)."""
    code = getattr(function, "__code__", None)
    return None if code is None else _at(code.co_filename, code.co_firstlineno)


@functools.lru_cache(maxsize=1024)
def _at(path: str, line: int) -> str:
    return f"{display_path(path)}:{line}"
