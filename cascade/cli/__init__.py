"""`cascade`: one entry point, one subcommand per job. Errors are one line and a non-zero exit.

`parser.py` declares the flags, `commands.py` runs them, `format.py` prints results as text, `demo.py` is
`cascade demo`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Sequence

from cascade.cli.parser import build_parser
from cascade.errors import CascadeError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in trained models' cards
    if getattr(args, "backend", None):
        os.environ["CASCADE_BACKEND"] = args.backend  # what "auto" means for every model this command loads
    args.asked_quiet = getattr(args, "quiet", False)  # a log still gets a line per milestone unless asked not to
    if hasattr(args, "quiet") and not sys.stderr.isatty() and not os.environ.get("CASCADE_PROGRESS"):
        args.quiet = True  # bars are for terminals: a log or a pipe gets none (CASCADE_PROGRESS=1 keeps them)
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)  # some libraries set their own loggers to DEBUG
    handler.setFormatter(logging.Formatter("cascade: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    try:
        from cascade.cli.commands import COMMANDS  # after parsing: --help and --version load no model code

        COMMANDS[args.command](args)
    except CascadeError as e:
        print(f"cascade: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine refused: read-only folder, disk full, no permission; the user can fix it
        where = f": {e.filename}" if e.filename else ""
        print(f"cascade: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cascade: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so in one line; CASCADE_DEBUG=1 shows the traceback
        if os.environ.get("CASCADE_DEBUG"):
            raise
        print(f"cascade: internal error: {type(e).__name__}: {e} (set CASCADE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    return 0

