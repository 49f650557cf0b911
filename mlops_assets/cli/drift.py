"""`mlops drift`: data drift between any two files, column by column."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from mlops_assets.cli.common import console, fail, failing
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
            help="One test for every column: ks, chisquare, z, wasserstein, "
            "jensenshannon, psi or hellinger [default: chosen per column]."
        ),
    ] = None,
    column_stattest: Annotated[
        list[str] | None,
        typer.Option(help="A test for one column, COLUMN=TEST (repeatable)."),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(help="Drift threshold [default: p < 0.05 for tests, >= 0.1 for distances]."),
    ] = None,
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

    Numeric columns are numerical, time and nested (list, struct, map) columns are skipped,
    everything else is categorical.
    Exit 0 whether or not drift is found (1 with --fail-on-drift and dataset drift; 2 when the
    files cannot be compared)."""
    from mlops_assets.drift.engine import DriftInputError, DriftOptions, drift_files
    from mlops_assets.drift.files import as_parquet
    from mlops_assets.drift.report import summary_line, to_html

    with failing(DriftInputError, code=2):
        per_column = dict(_split_assignment(a) for a in column_stattest or [])
        options = DriftOptions(
            stattest=stattest,
            per_column_stattest=per_column,
            threshold=threshold,
            drift_share=drift_share,
            correction=correction,
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
                    f"  {printable(column['column'])}: {column['test']} {column['score']:.4g} "
                    f"(threshold {column['threshold']})"
                )
            )
    if fail_on_drift and report.dataset_drift:
        raise typer.Exit(1)


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


def _split_assignment(text: str) -> tuple[str, str]:
    column, sep, test = text.partition("=")
    if not sep or not column or not test:
        from mlops_assets.drift.engine import DriftInputError

        raise DriftInputError(f"--column-stattest wants COLUMN=TEST, got {text!r}")
    return column, test
