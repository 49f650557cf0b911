"""The `mlops` command: thin wrappers that parse arguments and call the stage functions, one
module per command group. Importing it is cheap: each command imports what it needs."""

from __future__ import annotations

import typer

from mlops_assets.cli import common, drift, keys, models, pii, pipeline

app = typer.Typer(
    help="Operate the MLOps data platform: generate sample data, run the pipeline, open the UI.",
    no_args_is_help=True,
    add_completion=False,
    # Click's plain help, not Rich's panels: it starts ~0.1 s sooner (Rich's help loads its
    # Markdown and syntax modules), prints the help text as written (no markup read into it)
    # and does not cut the long lists of option values to the panel's width.
    rich_markup_mode=None,
)


@app.callback()
def before_every_command() -> None:
    # Runs before every command (and its --help), before any of them imports numpy.
    common.prefer_fast_sort()


app.add_typer(pipeline.app)
app.add_typer(models.root)
app.add_typer(drift.app)
app.add_typer(keys.app, name="keys")
app.add_typer(pii.app, name="pii")
app.add_typer(models.app, name="models")

if __name__ == "__main__":
    app()
