"""The `mlops` command: thin wrappers that parse arguments and call the stage functions, one
module per command group. Importing it is cheap: each command imports what it needs."""

from __future__ import annotations

import atexit
import functools
import gc
import sys
from typing import Annotated

import typer

from mlops_assets.cli import common, drift, keys, models, pii, pipeline

PACKAGE = "mlops-assets"

app = typer.Typer(
    help="Operate the MLOps data platform: generate sample data, run the pipeline, open the UI. "
    "Without a command: the home it would use, what that holds, and the command to run next.",
    # `mlops` alone says which home it would use, what it holds and what to run next.
    invoke_without_command=True,
    add_completion=False,
    # Click's plain help, not Rich's panels: it starts ~0.1 s sooner (Rich's help loads its
    # Markdown and syntax modules), prints the help text as written (no markup read into it)
    # and does not cut the long lists of option values to the panel's width.
    rich_markup_mode=None,
)


def main() -> None:
    """The `mlops` console script: ``app`` in a process that ends with the command.

    The process's last exit handler (handlers run last-registered first, so the ones of the
    libraries a command imports run before it) moves every object out of the garbage
    collector's reach: the interpreter's full collections at exit then skip them (over a run's
    objects, more than a second). Objects are still freed as their references go; what only a
    reference cycle holds is not collected, so its finalizers do not run (the operating system
    still closes its files; committed DuckDB and SQLite writes are in their logs)."""
    common.ends_with_command = True
    sys.unraisablehook = functools.partial(quiet_teardown, _default=sys.unraisablehook)
    atexit.register(gc.freeze)
    app()


def quiet_teardown(
    unraisable, _finalizing=sys.is_finalizing, _default=sys.__unraisablehook__
) -> None:
    """The console script's hook for exceptions nothing can catch (raised in a finalizer):
    passed on to the hook before it (Python's), except once the interpreter is finalizing
    (after the exit handlers), when a library object freed while the modules are torn down
    (Dask's cluster and its connections, after a run stopped by a full disk) finds the names
    its finalizer uses already gone, and its "Exception ignored ... Traceback" would be the
    last thing the user reads. An I/O error is always passed on: the last write of redirected
    output (``--json`` into a file on a full disk) fails only then. Its arguments are bound
    here: the module's own names may be gone by then too."""
    if not _finalizing() or isinstance(unraisable.exc_value, OSError):
        _default(unraisable)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(PACKAGE)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def print_version(value: bool) -> None:
    if value:
        print(f"mlops {version()}")
        raise typer.Exit(0)


@app.callback()
def before_every_command(
    context: typer.Context,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Without a command: the home the commands would use, what it holds, what to run next."""
    # Runs before every command (and its --help), before any of them imports numpy.
    common.prefer_fast_sort()
    if context.invoked_subcommand is None:
        from mlops_assets.cli import orientation

        print("\n".join(orientation.describe(orientation.home_state(), version())))


app.add_typer(pipeline.app)
app.add_typer(models.root)
app.add_typer(drift.app)
app.add_typer(keys.app, name="keys")
app.add_typer(pii.app, name="pii")
app.add_typer(models.app, name="models")

if __name__ == "__main__":
    app()
