"""Write docs/cli.md: every command's ``--help``, as a user sees it, in fenced text blocks.

    python3 docs/make_cli_reference.py           rewrite docs/cli.md
    python3 docs/make_cli_reference.py --check   exit 1 when docs/cli.md differs from --help

Each ``gradcli COMMAND --help`` runs in its own process (the program a user runs, from
this checkout) at a fixed width of 100 columns with no colour, so the page is the same
on every machine and in CI. tests/test_docs.py fails when the page is out of date.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "cli.md"
WIDTH = "100"

HEADER = """# Command-line reference

Every command's `--help`, exactly as it prints at 100 columns. This page is generated:
after changing an option or a help text, run `python3 docs/make_cli_reference.py`
(`tests/test_docs.py` fails until the page matches `--help`). The guides explain
the options with examples: [Jacobians and gradients](jacobians.md),
[per-sample](per-sample.md), [second order](second-order.md), [checking](checking.md).
"""


def commands() -> list[str]:
    """The app's commands in the order ``gradcli --help`` lists them."""
    sys.path.insert(0, str(ROOT))
    import typer.main

    from gradcli.cli import app

    group = typer.main.get_command(app)
    return list(group.list_commands(None))  # type: ignore[arg-type]


def help_text(command: str | None) -> str:
    """``gradcli [COMMAND] --help`` in a fresh process: 100 columns, no colour, no terminal."""
    env = {key: value for key, value in os.environ.items()
           if key not in {"FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "COLUMNS", "LINES"}}
    env.update(TERMINAL_WIDTH=WIDTH, NO_COLOR="1", _TYPER_FORCE_DISABLE_TERMINAL="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])]))
    argv = [sys.executable, "-m", "gradcli", *([command] if command else []), "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[2:])} failed ({done.returncode}): {done.stderr.strip()}")
    return "\n".join(line.rstrip() for line in done.stdout.strip("\n").splitlines())


def render() -> str:
    names = [None, *commands()]
    with ThreadPoolExecutor(max_workers=4) as pool:  # one process each: their start-up overlaps
        texts = list(pool.map(help_text, names))
    sections = [HEADER]
    for command, text in zip(names, texts):
        title = f"gradcli {command}" if command else "gradcli"
        sections.append(f"## {title}\n\n```text\n$ {title} --help\n{text}\n```\n")
    return "\n".join(sections)


def main(argv: list[str]) -> int:
    page = render()
    if "--check" in argv:
        if PAGE.exists() and PAGE.read_text() == page:
            return 0
        print("docs/cli.md is out of date with --help: run python3 docs/make_cli_reference.py", file=sys.stderr)
        return 1
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(ROOT)} ({len(page.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
