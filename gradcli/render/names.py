"""Names in tables (``param:vit.layers.0.attention.q_proj.weight``): never cut.

A table too wide for the terminal shrinks its name column; rich would cut the
name's end (``param:vit.layers.0.attent…``), exactly where q, k, v and o
differ. :class:`Name` is measured and drawn at the width it is given: the
whole name when it fits, else the middle abbreviated and the distinguishing
tail kept: the middle parts shortened to their first letter, indices whole
(``param:vit.l.0.a.q_proj.weight``); where not even that fits, the whole name
wraps over lines. :func:`count_of` says "and
N more" for a long list of names in a header.
"""

from __future__ import annotations

from typing import Callable

from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

TAIL = 2  # dotted parts always kept whole at the end: the module's last name and the tensor's


class Name:
    """One name in a table cell, abbreviated in its middle to fit (see the module docstring)."""

    def __init__(self, name: str, style: str = "") -> None:
        self.name, self.style = name, style
        parts = name.split(".")
        # the middle parts shortened to their first letter one by one from the left, indices kept
        # (layers.0 -> l.0), the first part (param:vit) and the last TAIL parts whole
        middle = parts[1:len(parts) - TAIL] if len(parts) > TAIL + 1 else []
        self._candidates = list(dict.fromkeys([name] + [".".join([parts[0], *(short(p) for p in middle[:k]), *middle[k:],
                                               *parts[len(parts) - TAIL:]]) for k in range(1, len(middle) + 1)]))
        self.least = min(len(c) for c in self._candidates)  # the shortest form, characters

    def fitted(self, width: int) -> Text:
        """The longest form within ``width`` (the full name first), or the whole name folded."""
        for text in self._candidates:
            if len(text) <= width:
                return Text(text, style=self.style)
        return Text(self.name, style=self.style, overflow="fold")

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(self.least, len(self.name))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.fitted(options.max_width)

    def __str__(self) -> str:
        return self.name


class NamesFirst:
    """A table whose first column holds names, built by ``build(cell)`` (``cell(name)`` makes
    the first cell of each row), drawn at the width it is given: with the names whole when
    it fits; else with each name shortened in its middle (:class:`Name`) to the width the
    other columns leave; else numbered, each written out whole below the table. Never a
    name cut."""

    def __init__(self, build: Callable[[Callable[[str], Text]], Table], names) -> None:
        self.build, self.names = build, [Name(n) for n in names]

    def _width(self, console: Console, options: ConsoleOptions, table: Table) -> int:
        return Measurement.get(console, options.update_width(1 << 20), table).maximum

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(1, self._width(console, options, self.build(lambda n: Text(n, no_wrap=True))))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        whole = self.build(lambda n: Text(n, no_wrap=True))
        width = self._width(console, options, whole)
        if width <= options.max_width:
            yield whole
            return
        longest = max((len(n.name) for n in self.names), default=0)
        room = options.max_width - (width - longest)
        if self.names and room >= max(n.least for n in self.names):
            fitted = {n.name: n.fitted(room) for n in self.names}
            yield self.build(lambda n: fitted[n])
            return
        # too narrow even for that: each name numbered in the table and written out whole below it
        numbers = {n.name: f"[{i}]" for i, n in enumerate(self.names, 1)}
        yield self.build(lambda n: Text(numbers[n], no_wrap=True))
        for n in self.names:
            yield Text(f"{numbers[n.name]} {n.name}", style="dim")


def short(part: str) -> str:
    """A middle part of a dotted name at its shortest: its first letter; an index stays whole."""
    return part if part.isdigit() or len(part) <= 2 else part[0]


def count_of(names, shown: int = 4, what: str = "arguments") -> str:
    """``a, b, c, d and 36 more (40 arguments)`` for a header; all of them when few."""
    names = list(names)
    if len(names) <= shown + 1:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown} more ({len(names)} {what})"
