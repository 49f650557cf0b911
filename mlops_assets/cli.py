"""The `mlops` command: thin wrappers that parse arguments and call the stage functions."""

from __future__ import annotations

import errno
import json
import os
import sys
import textwrap
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mlops_assets.ingestion.sources import SOURCE_SPECS
from mlops_assets.settings import PROJECT_ROOT, get_settings
from mlops_assets.text import printable, printable_lines

app = typer.Typer(
    help="Operate the MLOps data platform: generate sample data, run the pipeline, open the UI.",
    no_args_is_help=True,
    add_completion=False,
)
# Everything printed is text: names, values, paths and arguments are data, so Rich never reads
# them as markup (`[/b]` would crash, `[link=…]` would become a hyperlink) nor highlights them.
# Colour is given as a style (`style=`, `Text.assemble`), never written into the text.
# Messages are not wrapped: a path broken across lines cannot be copied.
console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)
out = Console(markup=False, highlight=False)  # stdout: tables a person reads


def _say(label: str, style: str, message: str) -> None:
    """``label`` in ``style``, then ``message``."""
    console.print(Text.assemble((label, style), " ", message))


@app.command()
def generate(
    days: Annotated[int, typer.Option(min=1, help="Number of landing days.")] = 90,
    rows_per_day: Annotated[
        int, typer.Option(min=1, help="Average applications per day (weekends are quieter).")
    ] = 1100,
    seed: Annotated[
        int, typer.Option(min=0, help="Random seed; same arguments give identical files.")
    ] = 42,
    drift_from_day: Annotated[
        int | None,
        typer.Option(
            help="From this day on (0-based): lower incomes, a new purpose, and "
            "debt-to-income matters more for default."
        ),
    ] = None,
    start_date: Annotated[
        str, typer.Option(help="Date of the first landing day (YYYY-MM-DD).")
    ] = "2025-01-01",
    out: Annotated[
        Path | None, typer.Option(help="Output directory [default: $MLOPS_HOME/landing].")
    ] = None,
) -> None:
    """Write realistic landing files: <out>/<source>/<YYYY-MM-DD>.csv for customers,
    applications and outcomes (delayed labels), with the dirt real feeds have."""
    from mlops_assets.sample_data.generator import SOURCES, GeneratorConfig
    from mlops_assets.sample_data.generator import generate as write

    try:
        config = GeneratorConfig(
            days=days,
            rows_per_day=rows_per_day,
            seed=seed,
            drift_from_day=drift_from_day,
            start_date=date.fromisoformat(start_date),
        )
        config.start_date + timedelta(days=days)  # its last day must be a date too
    except (ValueError, OverflowError) as error:
        raise typer.BadParameter(str(error)) from None
    target = out or get_settings().landing_dir
    try:
        with console.status(Text(f"generating {days} days into {target}")):
            report = write(config, target)
    except OSError as error:  # --out is a file, or cannot be written
        _fail(error)
    table = Table(
        "source", "files", "data lines", "dirty records", title=f"Landing files in {target}"
    )
    for source in SOURCES:
        files = sum(1 for f in report.files if f.parent.name == source)
        dirty = sum(n for (src, _), n in report.dirty.items() if src == source)
        table.add_row(
            source,
            str(files),
            f"{report.rows[source]:,}",
            f"{dirty:,} ({report.dirty_rate(source):.1%})",
        )
    console.print(table)


# Full disk, read-only file system, no permission, quota: the storage's fault, not the data's.
STORAGE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT}


@app.command()
def run(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the run summary as JSON on stdout.")
    ] = False,
    table_metadata: Annotated[
        bool, typer.Option(help="Attach dbt row counts and column lineage to the assets.")
    ] = True,
) -> None:
    """Materialize every asset (ingestion -> dbt) in-process and print a summary.

    Exit code 0 when every step and every blocking check passed, 1 otherwise, 2 when the run
    could not start."""
    from mlops_assets.runner import RunSetupError, run_pipeline

    settings = get_settings()
    with console.status("starting…") as status:

        def on_event(kind: str, step: str) -> None:
            if kind == "start":
                status.update(Text(f"running {step}"))
            else:
                style = {"success": "green", "failure": "red", "skipped": "yellow"}[kind]
                console.print(Text.assemble((f"{kind:>8}", style), f" {step}"))

        try:
            report = run_pipeline(settings, fetch_table_metadata=table_metadata, on_event=on_event)
        except RunSetupError as error:
            _say("cannot run:", "red", str(error))
            raise typer.Exit(2) from None
        except OSError as error:
            if error.errno not in STORAGE_ERRORS:
                raise
            # The disk filled up (or went read-only) under Dagster's own bookkeeping: every
            # warehouse write is a transaction and the next run redoes this one's days.
            _say(
                "run stopped:",
                "red",
                f"{error.strerror} ({error.filename or settings.home}): free space (or make "
                "MLOPS_HOME writable) and run again — nothing was left half-written, and the "
                "next run redoes what this one did not finish",
            )
            raise typer.Exit(1) from None
    if json_output:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report, settings)
    raise typer.Exit(0 if report.ok else 1)


def _print_report(report, settings) -> None:
    for notice in report.notices:
        console.print(printable_lines(notice), style="yellow")
    for refused in report.refused_files:  # already shown as text (escaped) by the runner
        console.print(f"refused, not ingested: {refused}", style="yellow")
    days = report.ingested_days
    console.print(
        f"ingested landing days {days[0]} … {days[-1]} ({len(days)} with new or changed files)"
        if days
        else "no new or changed landing files: ingestion skipped, dbt models rebuilt"
    )
    tables = Table("table", "rows", title=f"Warehouse {settings.warehouse_path}")
    for name, rows in report.tables.items():
        tables.add_row(name, f"{rows:,}")
    console.print(tables)
    stages = Table("stage", "seconds", title="Time per stage")
    for stage, seconds in report.stage_seconds.items():
        stages.add_row(stage, f"{seconds:.1f}")
    stages.add_row(Text("total run", style="bold"), f"{report.seconds:.1f}")
    console.print(stages)
    passed = sum(c.passed for c in report.checks)
    console.print(
        Text.assemble(
            "checks: ",
            (f"{passed} passed", "green"),
            ", ",
            (f"{len(report.checks) - passed} failed", "red"),
            f" ({len(report.failed_blocking_checks)} blocking)",
        )
    )
    for check in report.checks:
        if not check.passed:
            kind = ("blocking", "red") if check.blocking else ("warning", "yellow")
            console.print(Text.assemble("  ", kind, f" {check.asset} {check.name}"))
            if check.detail:
                console.print(textwrap.indent(printable_lines(check.detail), "      "))
    quarantined = sum(report.quarantined.values())
    console.print(
        f"quarantined rows: {quarantined:,} "
        + ", ".join(f"{k.split('.')[1]}={v:,}" for k, v in report.quarantined.items())
    )
    if report.drifted_days:
        _say(
            "drift",
            "yellow",
            f"on {len(report.drifted_days)} of the ingested days (from "
            f"{report.drifted_days[0]}): {settings.reports_dir / 'drift'}/<day>.html, "
            "monitoring.drift_reports",
        )
    for step in report.failed_steps:
        _say("failed step:", "red", step)
    console.print(f"dbt and Dagster log of this run: {report.log_path}")
    _say(
        *(("run succeeded", "green") if report.ok else ("run failed", "red")),
        f"in {report.seconds:.1f}s — run {report.run_id} (open `make ui` to see it in Dagster)",
    )


keys_app = typer.Typer(help="The keyring behind pseudonyms and the vault.", no_args_is_help=True)
pii_app = typer.Typer(
    help="Personal data in the vault: one customer at a time, audited.", no_args_is_help=True
)
models_app = typer.Typer(
    help="The model registry: versions, champions, promotions.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(pii_app, name="pii")
app.add_typer(models_app, name="models")


def _fail(error: Exception, code: int = 1) -> None:
    # An error may quote a path or an argument: its control characters are shown escaped.
    _say("error:", "red", printable_lines(str(error)))
    raise typer.Exit(code)


@keys_app.command("init")
def keys_init() -> None:
    """Create the keyring ($MLOPS_KEYRING or $MLOPS_HOME/keys/keyring.json, mode 0600).
    Refused (exit 1) when one exists, or when the home's warehouse was built with another."""
    from mlops_assets.security.keyring import Keyring, KeyringError
    from mlops_assets.security.vault import refuse_lost_keyring

    settings = get_settings()
    path = settings.keyring_path
    try:
        refuse_lost_keyring(path, settings.warehouse_path)
        Keyring.create(path)
    except KeyringError as error:
        _fail(error)
    console.print(f"created keyring {path} (mode 600) — back it up apart from the warehouse")


@keys_app.command("status")
def keys_status(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Key versions in the keyring and how many encrypted values use each."""
    from mlops_assets.security.keyring import KeyringError
    from mlops_assets.security.vault import key_usage
    from mlops_assets.warehouse import connection

    settings = get_settings()
    try:
        keyring = _keyring(settings)
    except KeyringError as error:
        _fail(error)
    usage = {}
    if settings.warehouse_path.exists():
        with connection(settings.warehouse_path) as con:
            usage = key_usage(con)
    status = {
        "keyring": str(keyring.path),
        "fingerprint": keyring.fingerprint,
        "active_version": keyring.active_version,
        "versions": {str(v): usage.get(v, 0) for v in sorted(keyring.encryption_keys)},
    }
    if json_output:
        print(json.dumps(status, indent=2))
        return
    console.print(f"keyring {status['keyring']} (fingerprint {status['fingerprint']})")
    for version, used in status["versions"].items():
        active = " (active)" if int(version) == keyring.active_version else ""
        console.print(f"  version {version}{active}: {used:,} encrypted values")


# What the keys and pii commands refuse with a message (exit 1) rather than a traceback: the
# keyring, the vault, or a home without a warehouse (nothing is created there).
def _refusals() -> tuple[type[Exception], ...]:
    from mlops_assets.security.keyring import KeyringError
    from mlops_assets.security.vault import VaultError
    from mlops_assets.warehouse import WarehouseMissingError

    return KeyringError, VaultError, WarehouseMissingError


def _keyring(settings):
    """The keyring; a lost one of a warehouse built with it is to be restored (said so)."""
    from mlops_assets.security.keyring import Keyring
    from mlops_assets.security.vault import refuse_lost_keyring

    refuse_lost_keyring(settings.keyring_path, settings.warehouse_path)
    return Keyring.load(settings.keyring_path)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Add a key version and re-encrypt every vault value with it, in one transaction."""
    from mlops_assets.security.vault import rotate
    from mlops_assets.warehouse import connection

    settings = get_settings()
    try:
        keyring = _keyring(settings)
        with connection(settings.warehouse_path) as con:
            version, count = rotate(con, keyring)
    except _refusals() as error:
        _fail(error)
    console.print(
        f"key version {version} is active; {count:,} values re-encrypted. Older "
        "versions can be retired with `mlops keys retire VERSION`."
    )


@keys_app.command("retire")
def keys_retire(version: Annotated[int, typer.Argument(help="Key version to remove.")]) -> None:
    """Remove a key version from the keyring; refused while any value still uses it."""
    from mlops_assets.security.vault import retire
    from mlops_assets.warehouse import connection

    settings = get_settings()
    try:
        keyring = _keyring(settings)
        with connection(settings.warehouse_path) as con:
            retire(con, keyring, version)
    except _refusals() as error:
        _fail(error)
    console.print(f"key version {version} retired")


@pii_app.command("reveal")
def pii_reveal(
    customer: Annotated[str, typer.Option(help="The customer_key (pseudonym) to reveal.")],
    reason: Annotated[str, typer.Option(help="Why: recorded in audit.pii_access.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Decrypt one customer's identifiers; the access is appended to audit.pii_access.
    Values are shown as text, their control characters escaped (`\\x1b`); --json gives them
    exactly."""
    from mlops_assets.security.vault import reveal
    from mlops_assets.warehouse import connection

    settings = get_settings()
    try:
        keyring = _keyring(settings)
        with connection(settings.warehouse_path) as con:
            values = reveal(con, keyring, customer, reason)
    except _refusals() as error:
        _fail(error)
    if json_output:
        print(
            json.dumps(
                {"customer_key": customer, **values, "unreadable": values.unreadable}, indent=2
            )
        )
    else:
        table = Table("column", "value", title=f"customer {printable(customer)} (access audited)")
        for column, value in values.items():
            table.add_row(column, printable(value))
        out.print(table)
    for column, why in values.unreadable.items():
        _say("error:", "red", f"{column} of {printable(customer)} is unreadable: {why}")
    if values.unreadable:
        raise typer.Exit(1)


# The feeds --source takes: the quarantined lines of every feed are stored encrypted.
Source = StrEnum("Source", {name: name for name in SOURCE_SPECS})


@pii_app.command("quarantined-line")
def pii_quarantined_line(
    source: Annotated[Source, typer.Option(help="The feed the line came from.")],
    file: Annotated[str, typer.Option(help="Landing path, e.g. customers/2025-01-03.csv.")],
    line: Annotated[int, typer.Option(help="Line number in that file.")],
    reason: Annotated[str, typer.Option(help="Why: recorded in audit.pii_access.")],
) -> None:
    """Decrypt one quarantined line of a feed, to fix it at the source (audited).
    Control characters are shown escaped (`\\x1b`, `\\t`; a backslash doubled). Exit 1 when the
    line is unknown, or was erased with its customer (`mlops pii forget`)."""
    from mlops_assets.security.vault import reveal_quarantined_line
    from mlops_assets.warehouse import connection

    settings = get_settings()
    try:
        keyring = _keyring(settings)
        with connection(settings.warehouse_path) as con:
            text = reveal_quarantined_line(con, keyring, source.value, file, line, reason)
    except _refusals() as error:
        _fail(error)
    print(printable(text))


@pii_app.command("forget")
def pii_forget(
    customer: Annotated[str, typer.Option(help="The customer_key (pseudonym) to erase.")],
    reason: Annotated[
        str, typer.Option(help="Why: recorded in audit.pii_access (not empty).")
    ] = "right to erasure request",
) -> None:
    """Right to erasure: delete the customer's vault entry and the quarantined records that
    name them (audited), then rewrite the warehouse file so their ciphertexts are gone from its
    bytes too. Exit 1 when nothing of theirs was found, or when a quarantined line could not be
    decrypted to be checked."""
    import duckdb

    from mlops_assets.security.vault import forget
    from mlops_assets.warehouse import WarehouseLockedError, connection, rewrite_file

    settings = get_settings()
    try:
        keyring = _keyring(settings)
        with connection(settings.warehouse_path) as con:
            erased = forget(con, keyring, customer, reason)
    except _refusals() as error:
        _fail(error)
    try:
        with console.status("rewriting the warehouse file without the erased data"):
            rewrite_file(settings.warehouse_path)
    except (WarehouseLockedError, OSError, duckdb.Error) as error:
        _fail(
            RuntimeError(
                f"the erasure is recorded, but the warehouse file could not be rewritten "
                f"({error}): its free blocks may still hold the erased ciphertexts. Run this "
                "command again once nothing else uses the warehouse"
            )
        )
    done = (
        f"customer {printable(customer)} was erased before; rewrote the warehouse file"
        if erased.already_erased
        else f"erased {erased.cells} values and {erased.lines} quarantined lines of customer "
        f"{printable(customer)}, and rewrote the warehouse file without them"
    )
    console.print(
        f"{done}; later loads of their records are erased too. The pseudonym stays in raw and "
        "the marts: anyone holding the keyring and their customer id can recompute it. Backups "
        "made before the erasure still hold the erased data"
    )
    if erased.unreadable_lines:
        _fail(
            RuntimeError(
                f"{erased.unreadable_lines} quarantined lines failed authentication and could not "
                "be checked for this customer: they are damaged or from another keyring"
            )
        )


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Every registered model version, the champion marked, and whether it verifies (its seal
    under this keyring holds and its files match): one that does not is never loaded, and the
    model's next training (`mlops run`) replaces it."""
    from rich.text import Text

    from mlops_assets.training.registry import Registry, RegistryError
    from mlops_assets.warehouse import WarehouseMissingError, require_warehouse

    settings = get_settings()
    registry = Registry(settings.models_dir, settings.keyring_path)
    rows = []
    try:
        require_warehouse(settings.warehouse_path)
        for model in registry.models():
            champion = registry.champion(model)
            for card in registry.versions(model):
                data = card.data
                rows.append(
                    {
                        "model": model,
                        "version": card.version,
                        "is_champion": card.version == champion,
                        "sealed": registry.verifies(model, card.version),
                        "candidate": data.get("candidate"),
                        "metrics": card.metrics,
                        "training_data_version": data.get("training_data_version"),
                        "created_at": data.get("created_at"),
                    }
                )
    except (RegistryError, WarehouseMissingError) as error:
        _fail(error)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no models registered yet: run `mlops run`")
        return
    table = Table(title="Registered models")
    columns = ("model", "version", "champion", "sealed", "candidate", "key metric", "data")
    for column in (*columns, "created"):
        table.add_column(column)
    for row in rows:
        key = "roc_auc" if row["model"] == "default_classifier" else "rmse"
        value = row["metrics"].get(key)
        cells = (
            row["model"],
            row["version"],
            "★" if row["is_champion"] else "",
            "yes" if row["sealed"] else "NO: refused",
            row["candidate"],
            f"{key} {value:.4f}" if isinstance(value, int | float) else "-",
            row["training_data_version"],
            str(row["created_at"])[:19],
        )
        # Registry files: text, not markup, control characters escaped.
        table.add_row(*(Text(printable(str(cell))) for cell in cells))
    Console().print(table)


@models_app.command("promote")
def models_promote(
    model: Annotated[str, typer.Argument(help="default_classifier or loss_regressor.")],
    version: Annotated[str, typer.Argument(help="A registered version (`mlops models list`).")],
    reason: Annotated[str, typer.Option(help="Why: recorded in the promotion history.")],
) -> None:
    """Make VERSION the champion of MODEL by hand (recorded with who, when and why). Only a
    sealed version of MODEL itself is accepted."""
    from mlops_assets.training.registry import Registry, RegistryError

    if not reason.strip():
        raise typer.BadParameter("say why this version becomes the champion", param_hint="--reason")
    settings = get_settings()
    registry = Registry(settings.models_dir, settings.keyring_path)
    try:
        before = registry.champion(model)
        metrics_before = registry.card(model, before).metrics if before else None
        event = registry.promote(model, version, reason=reason, metrics_before=metrics_before)
    except RegistryError as error:
        _fail(error)
    console.print(
        f"{model}: champion {event['from_version'] or 'none'} -> {event['to_version']} "
        f"by {event['by']}: {reason}",
        markup=False,
    )


@app.command()
def explain(
    application_id: Annotated[str, typer.Argument(help="The application to explain.")],
    model: Annotated[str, typer.Option(help="The model whose champion explains.")] = (
        "default_classifier"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Why the champion scored one application as it did: per-feature contributions (the
    prediction minus the prediction with that feature at its typical training value)."""
    from rich.text import Text

    from mlops_assets.features.validation import FEATURE_TABLE
    from mlops_assets.training.dataset import FeatureSpec, as_model_input
    from mlops_assets.training.diagnostics import explain_row
    from mlops_assets.training.registry import Registry, RegistryError
    from mlops_assets.training.search import is_classifier
    from mlops_assets.warehouse import connection

    settings = get_settings()
    registry = Registry(settings.models_dir, settings.keyring_path)
    try:
        version = registry.champion(model)
    except RegistryError as error:
        _fail(error)
    if version is None:
        _fail(RuntimeError(f"{model} has no champion yet: run `mlops run` first"), 2)
    spec = FeatureSpec.from_contract()
    with connection(settings.warehouse_path, read_only=True) as con:
        frame = con.execute(
            f"select * from {FEATURE_TABLE} where application_id = ?", [application_id]
        ).df()
    if frame.empty:
        _fail(LookupError(f"no application {application_id} in {FEATURE_TABLE}"), 1)
    try:
        fitted = registry.load(model, version)
        card = registry.verified_card(model, version)
    except RegistryError as error:
        _fail(error)
    table, prediction = explain_row(
        fitted, as_model_input(frame, spec), card.data["reference"], is_classifier(model)
    )
    if as_json:
        print(
            json.dumps(
                {
                    "application_id": application_id,
                    "model": model,
                    "model_version": version,
                    "prediction": prediction,
                    "contributions": table.to_dict("records"),
                },
                indent=2,
                default=str,
            )
        )
        return
    # The application id and values are data: Text, never markup.
    shown = Table(title=Text(f"{model} {version}: {application_id} scored {prediction:.4f}"))
    for column in ("feature", "value", "typical value", "contribution"):
        shown.add_column(column)
    for row in table.head(12).itertuples():
        cells = (row.feature, row.value, row.reference, f"{row.contribution:+.4f}")
        shown.add_row(*(Text(str(cell)) for cell in cells))
    Console().print(shown)


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
    from mlops_assets.monitoring.engine import DriftInputError, DriftOptions, drift_files
    from mlops_assets.monitoring.files import as_parquet
    from mlops_assets.monitoring.report import summary_line, to_html

    try:
        per_column = dict(_split_assignment(a) for a in column_stattest or [])
        options = DriftOptions(
            stattest=stattest,
            per_column_stattest=per_column,
            threshold=threshold,
            drift_share=drift_share,
            correction=correction,
        )
        with as_parquet(reference, current) as (ref_path, cur_path):
            report, _ = drift_files(ref_path, cur_path, options)
            if multivariate:
                from mlops_assets.monitoring.multivariate import domain_classifier, parquet_sample

                compared = [c.column for c in report.columns]
                report.multivariate = domain_classifier(
                    parquet_sample(ref_path, compared), parquet_sample(cur_path, compared)
                )
    except DriftInputError as error:
        _fail(error, 2)
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
        _fail(OSError(f"cannot write the report to {path}: not a regular file"), 2)
    try:
        path.write_text(text)
    except OSError as error:
        _fail(OSError(f"cannot write the report to {path}: {error.strerror or error}"), 2)


def _split_assignment(text: str) -> tuple[str, str]:
    column, sep, test = text.partition("=")
    if not sep or not column or not test:
        from mlops_assets.monitoring.engine import DriftInputError

        raise DriftInputError(f"--column-stattest wants COLUMN=TEST, got {text!r}")
    return column, test


@app.command("dbt-parse")
def dbt_parse() -> None:
    """Write dbt_project/target/dagster/manifest.json (what Dagster loads the dbt assets from)."""
    from mlops_assets.transform.parse import DbtParseError, prepare_dbt_manifest

    try:
        console.print(f"manifest: {prepare_dbt_manifest()}")
    except DbtParseError as error:
        _fail(error, 2)


@app.command()
def ui(
    port: Annotated[
        int, typer.Option(help="Port of the Dagster webserver (with --secure: of nginx).")
    ] = 3000,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="Serve it through nginx on https://127.0.0.1:PORT: basic auth (user mlops, "
            "password in $MLOPS_HOME/ui-guard/password), TLS with a self-signed certificate, "
            "only its own Host, GraphQL mutations only by POST with JSON.",
        ),
    ] = False,
) -> None:
    """Serve the Dagster UI (dagster dev) on 127.0.0.1 against $MLOPS_HOME."""
    from mlops_assets.runner import RunSetupError, ensure_keyring
    from mlops_assets.security import ui_guard
    from mlops_assets.transform.parse import DbtParseError, prepare_dbt_manifest

    settings = get_settings()
    guard = None
    if secure:
        try:
            guard = ui_guard.prepare(settings.home, port, ui_guard.free_port())
            ui_guard.check_config(guard)
        except ui_guard.UiGuardError as error:
            _fail(error, 2)
    try:
        notice = ensure_keyring(settings)
    except RunSetupError as error:
        _fail(error, 2)
    if notice:
        console.print(notice, style="yellow")
    settings.ensure_dagster_home()
    os.environ["MLOPS_HOME"] = str(settings.home)
    # dagster-dbt runs `dbt` from PATH: this environment's, even when the venv is not active.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    try:
        prepare_dbt_manifest()
    except DbtParseError as error:
        _fail(error, 2)
    dagster = Path(bin_dir) / "dagster"
    args = [
        str(dagster),
        "dev",
        "-h",
        "127.0.0.1",
        "-p",
        str(guard.upstream if guard else port),
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
    ]
    if guard is None:
        os.execv(args[0], args)
    console.print(
        f"Dagster UI at {guard.url} (nginx in front of 127.0.0.1:{guard.upstream}): user "
        f"{ui_guard.USER}, password in {guard.password_file}, self-signed certificate "
        f"{guard.certificate}. Ctrl-C stops both.",
        markup=False,
        soft_wrap=True,
    )
    try:
        ui_guard.serve(args, guard)
    except ui_guard.UiGuardError as error:
        _fail(error, 1)


if __name__ == "__main__":
    app()
