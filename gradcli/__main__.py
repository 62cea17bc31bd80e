"""``python -m gradcli``: the same program as the ``gradcli`` command."""

import signal
import sys

# First thing, before the CLI (typer, rich) is imported: SIGTERM stops like
# Ctrl-C, and either one during start-up is the same clean stop, exit 130.
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.default_int_handler)
try:
    from .cli import main
except KeyboardInterrupt:
    sys.stderr.write("gradcli: interrupted\n")
    sys.exit(130)

if __name__ == "__main__":
    main()
