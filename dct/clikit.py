"""What every `dct` command shares: the one error path, the --device/--json conventions, warnings.

A user error (dct.errors.DCTError, or a file the OS refuses) is printed as ONE line on stderr and exits
with status 2; `dct --debug ...` (or DCT_DEBUG=1) re-raises it with its traceback. Messages are written
as plain text, never as rich markup: "[Errno 13]" or "acc[judge]" must print as they are. Passwords in
storage URLs are redacted on the way out.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click
import typer
from typer.core import TyperGroup

from .errors import DCTError
from .redact import redact

EXIT_USER_ERROR = 2
DEBUG_ENV = "DCT_DEBUG"
DEVICE_HELP = "Device: auto (cuda:0 when CUDA is available, else cpu), cpu, cuda or cuda:N."
DEVICE_DEFAULT = "auto"
JSON_HELP = "Print the result as JSON on stdout (logs and errors stay on stderr)."


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def error_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, DCTError) and exc.filename is not None:
        # "[Errno 13] Permission denied: 'x'" becomes a sentence naming the path
        return f"cannot use {str(exc.filename)!r}: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


def print_error(exc: BaseException) -> None:
    sys.stderr.write(f"error: {one_line(redact(error_text(exc)))}\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    sys.stderr.write(f"warning: {one_line(redact(message))}\n")
    sys.stderr.flush()


_debug = False


def set_debug(on: bool) -> None:
    """Called by the root command for each invocation (`dct --debug ...`)."""
    global _debug
    _debug = on


def debug_enabled() -> bool:
    return _debug or os.environ.get(DEBUG_ENV, "") not in ("", "0", "false")


def is_user_error(exc: BaseException) -> bool:
    # An OSError with a path is the environment (a read-only folder, a full disk), not a bug in dct.
    return isinstance(exc, DCTError) or (isinstance(exc, OSError) and exc.filename is not None)


def fail(exc: BaseException) -> NoReturn:
    """Print a user error as one line and exit 2 (with --debug: re-raise it, traceback and all)."""
    if debug_enabled():
        raise exc
    print_error(exc)
    raise typer.Exit(getattr(exc, "exit_code", EXIT_USER_ERROR))  # 130 for an interrupted training


class DCTGroup(TyperGroup):
    """The root group: a user error raised anywhere below it becomes the one-line message."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - user errors are reported, anything else re-raised
            if not is_user_error(exc):
                raise
            fail(exc)
