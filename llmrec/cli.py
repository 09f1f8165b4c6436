"""The `llmrec` command line.

Commands live in `llmrec.commands.*`, one module per stage; this module only
wires them together and turns user errors (`LLMRecError`) into one-line
messages with a non-zero exit code instead of tracebacks.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn

import typer

from llmrec.commands import info as info_cmd
from llmrec.errors import LLMRecError
from llmrec.logs import configure_logging

app = typer.Typer(
    name="llmrec",
    help="LLM-augmented graph recommendation with local, open models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    configure_logging(verbose)


app.command("info")(info_cmd.info)

# Stage commands: each module registers its own commands / sub-apps.
# --- command registrations (one line per module) ---
from llmrec.commands import data as data_cmd  # noqa: E402
app.add_typer(data_cmd.app, name="data", help="Find, prepare and inspect datasets.")
from llmrec.commands import cache as cache_cmd  # noqa: E402
app.add_typer(cache_cmd.app, name="cache", help="Inspect, export or clear the LLM completion store.")
from llmrec.commands import augment as augment_cmd  # noqa: E402
app.command("augment")(augment_cmd.augment)
app.command("embed")(augment_cmd.embed)
app.add_typer(augment_cmd.audit_app, name="audit", help="Check LLM-written data against ground truth.")
from llmrec.commands import train as train_cmd  # noqa: E402
train_cmd.register(app)
from llmrec.commands import run as run_cmd  # noqa: E402
app.command("run")(run_cmd.run)
# --- end of command registrations ---


def _leave(code: int) -> NoReturn:
    """Exit with `code` now that the error is reported.

    A command that failed while pyarrow was decoding a damaged parquet file can
    leave pyarrow's worker threads behind, and the interpreter's finalization
    then sometimes aborts ("terminate called without an active exception",
    exit 134 instead of 2: 5 of 40 refusals of a table with a changed byte,
    measured on a loaded 2-core box). So when `main` is the program's own entry
    point (the `llmrec` script, `python -m llmrec`) the process ends here: the
    exit handlers run (one stops a vLLM server this process started), the
    streams are flushed, then `os._exit(code)` skips the finalization. Called
    from another program (a test calling `main()` in-process) it raises
    SystemExit as usual.
    """
    if getattr(sys.modules.get("__main__"), "main", None) is not main:
        sys.exit(code)
    try:
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    """Console-script entry point: run the app, reporting user errors as one line."""
    try:
        exit_code = app(standalone_mode=False)
    except LLMRecError as exc:
        typer.echo(f"error: {exc}", err=True)
        _leave(2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        _leave(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        _leave(130)
    except Exception as exc:  # click usage errors carry their own exit codes
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            _leave(exc.exit_code)
        raise
    sys.exit(exit_code if isinstance(exit_code, int) else 0)
