"""The ``gradcli`` command and ``python -m gradcli``.

The signal handlers are installed first, when this module is imported and
before typer, rich or any of gradcli's modules load, so a Ctrl-C or SIGTERM
at any moment is the same clean stop: "gradcli: interrupted", exit 130, no
partial output file.
"""

import signal
import sys

signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM as Ctrl-C


def main(argv: list[str] | None = None) -> None:
    try:
        import typer

        from gradcli.cli import app

        command = typer.main.get_command(app)
    except KeyboardInterrupt:
        sys.stderr.write("gradcli: interrupted\n")
        sys.exit(130)
    command.main(args=argv, prog_name="gradcli")


if __name__ == "__main__":
    main()
