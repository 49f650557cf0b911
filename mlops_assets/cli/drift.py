"""`mlops drift`: data drift between any two files, column by column."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from mlops_assets.cli.common import console, fail, failing
from mlops_assets.drift import names
from mlops_assets.text import printable

app = typer.Typer()


@app.command()
def drift(
    reference: Annotated[Path, typer.Argument(help="Reference data: a CSV or Parquet file.")],
    current: Annotated[Path, typer.Argument(help="Current data: a CSV or Parquet file.")],
    json_out: Annotated[
        str | None, typer.Option("--json", help="Write the JSON report here ('-': stdout).")
    ] = None,
    html_out: Annotated[
        Path | None,
        typer.Option("--html", dir_okay=False, writable=True, help="Write the HTML report here."),
    ] = None,
    stattest: Annotated[
        str | None,
        typer.Option(
            help=f"One test for every column, by Evidently's name: {', '.join(names.ALL)} "
            "(default: chosen per column, as Evidently does).",
        ),
    ] = None,
    num_stattest: Annotated[
        str | None,
        typer.Option(help=f"The test of every numerical column: {', '.join(names.NUMERICAL)}."),
    ] = None,
    cat_stattest: Annotated[
        str | None,
        typer.Option(help=f"The test of every categorical column: {', '.join(names.CATEGORICAL)}."),
    ] = None,
    text_stattest: Annotated[
        str | None,
        typer.Option(help=f"The test of every text column: {', '.join(names.TEXT)}."),
    ] = None,
    column_stattest: Annotated[
        list[str] | None,
        typer.Option(metavar="COLUMN=TEST", help="A test for one column (repeatable)."),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="One drift threshold for every column (default: the test's own: p < 0.05 for "
            "p-value tests, >= 0.1 for most distances)."
        ),
    ] = None,
    num_threshold: Annotated[
        float | None, typer.Option(help="The threshold of every numerical column.")
    ] = None,
    cat_threshold: Annotated[
        float | None, typer.Option(help="The threshold of every categorical column.")
    ] = None,
    text_threshold: Annotated[
        float | None, typer.Option(help="The threshold of every text column.")
    ] = None,
    column_threshold: Annotated[
        list[str] | None,
        typer.Option(metavar="COLUMN=X", help="A threshold for one column (repeatable)."),
    ] = None,
    text_column: Annotated[
        list[str] | None,
        typer.Option(
            metavar="COLUMN",
            help="A string column to compare as text (a domain classifier on its words), not "
            "as categories (repeatable).",
        ),
    ] = None,
    strict_evidently: Annotated[
        bool,
        typer.Option(
            help="Evidently 0.7's exact numbers and errors: every deliberate difference of "
            "this engine off."
        ),
    ] = False,
    drift_share: Annotated[
        float, typer.Option(help="Share of drifted columns that means dataset drift.")
    ] = 0.5,
    correction: Annotated[
        str, typer.Option(help="none, or bh: Benjamini-Hochberg across the p-value tests.")
    ] = "none",
    multivariate: Annotated[
        bool, typer.Option(help="Also train a domain classifier (reference vs current).")
    ] = False,
    fail_on_drift: Annotated[
        bool, typer.Option(help="Exit 1 when dataset drift is detected.")
    ] = False,
) -> None:
    """Data drift between two datasets, column by column (Evidently's DataDriftPreset tests).

    Numeric columns are numerical, --text-column ones text, time and nested
    (list, struct, map) columns are skipped, everything else is categorical.

    A column's test: its own (--column-stattest), else its kind's (--num-stattest,
    --cat-stattest, --text-stattest), else --stattest, else Evidently's choice.
    Its threshold likewise, else the test's default: Evidently's precedence.
    COLUMN=VALUE is split at the last '=', so a column name may hold '='.

    Exit 0 whether or not drift is found (1 with --fail-on-drift and dataset
    drift; 2 when the files cannot be compared)."""
    from mlops_assets.drift.engine import DriftInputError, DriftOptions, drift_files
    from mlops_assets.drift.files import as_parquet
    from mlops_assets.drift.report import summary_line, to_html

    with failing(DriftInputError, code=2):
        options = DriftOptions(
            stattest=stattest,
            per_column_stattest=_per_column("--column-stattest", "TEST", column_stattest, str),
            num_stattest=num_stattest,
            cat_stattest=cat_stattest,
            text_stattest=text_stattest,
            threshold=threshold,
            per_column_threshold=_per_column("--column-threshold", "X", column_threshold, float),
            num_threshold=num_threshold,
            cat_threshold=cat_threshold,
            text_threshold=text_threshold,
            drift_share=drift_share,
            correction=correction,
            strict_evidently=strict_evidently,
            text_columns=_columns(text_column or []),
        )
        with as_parquet(reference, current) as (ref_path, cur_path):
            report = drift_files(ref_path, cur_path, options)
            if multivariate:
                from mlops_assets.drift.multivariate import domain_classifier, parquet_sample

                compared = [c.column for c in report.columns]
                report.multivariate = domain_classifier(
                    parquet_sample(ref_path, compared), parquet_sample(cur_path, compared)
                )
    data = report.to_dict()
    if json_out == "-":
        print(json.dumps(data, indent=2))
    elif json_out:
        _write_report(Path(json_out), json.dumps(data, indent=2) + "\n")
    if html_out:
        _write_report(html_out, to_html(report, f"Data drift: {current.name} vs {reference.name}"))
    # Column names come from the user's files: printed as text (no markup, no emoji codes,
    # control characters escaped).
    console.print(Text(summary_line(report), style="red" if report.dataset_drift else "green"))
    for column in data["columns"][:10]:
        if column["drifted"]:
            console.print(
                Text(
                    f"  {printable(column['column'])}: {column['test']} {_score(column['score'])} "
                    f"(threshold {column['threshold']})"
                )
            )
    if fail_on_drift and report.dataset_drift:
        raise typer.Exit(1)


def _score(score: float | None) -> str:
    return "n/a" if score is None else f"{score:.4g}"  # None: no finite score


def _write_report(path: Path, text: str) -> None:
    """Write a report the operator asked for; a path that cannot be written (a folder, a
    missing parent, no permission, a full disk) is a bad parameter (exit 2), not a traceback.
    An existing path that is not a regular file (a FIFO would block forever) is refused."""
    if path.exists() and not path.is_file():
        fail(OSError(f"cannot write the report to {path}: not a regular file"), 2)
    try:
        path.write_text(text)
    except OSError as error:
        fail(OSError(f"cannot write the report to {path}: {error.strerror or error}"), 2)


def _per_column(option: str, what: str, assignments: list[str] | None, parse) -> dict:
    """``COLUMN=VALUE`` arguments as {column: parse(value)}, split at the last '=' (a test name
    or a number never holds one, a column name may). A column named twice is refused."""
    from mlops_assets.drift.engine import DriftInputError

    chosen = {}
    for text in assignments or []:
        column, sep, value = text.rpartition("=")
        if not sep or not column or not value:
            raise DriftInputError(f"{option} wants COLUMN={what}, got {text!r}")
        if column in chosen:
            raise DriftInputError(f"{option} names column {column!r} twice")
        try:
            chosen[column] = parse(value)
        except ValueError:
            message = f"{option} wants COLUMN={what}, {what} a number: got {text!r}"
            raise DriftInputError(message) from None
    return chosen


def _columns(names: list[str]) -> tuple[str, ...]:
    if "" in names:
        from mlops_assets.drift.engine import DriftInputError

        raise DriftInputError("--text-column wants a column name, got ''")
    return tuple(dict.fromkeys(names))
