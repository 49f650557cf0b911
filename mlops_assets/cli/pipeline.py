"""Running the platform: sample landing files, the pipeline and its summary, the dbt manifest,
the Dagster UI."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import textwrap
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from mlops_assets.cli import common
from mlops_assets.cli.common import console, fail, failing, say, settings
from mlops_assets.text import printable_lines

app = typer.Typer()

# Full disk, read-only file system, no permission, quota: the storage's fault, not the data's.
STORAGE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT}
# The same faults as SQLite reports them (Dagster's instance): SQLITE_READONLY, SQLITE_IOERR
# (a write-ahead log or its index that cannot grow on a full disk), SQLITE_FULL.
SQLITE_STORAGE_ERRORS = {
    8: "read-only database",
    10: "disk I/O error",
    13: "database or disk is full",
}
FULL_BELOW_BYTES = 1 << 20  # a file system with less free space than this is full


def disk_state(fault: str, home: Path) -> str:
    """``fault``, with whether the disk holding ``home`` is full when SQLite could only say it
    failed to write."""
    if fault != SQLITE_STORAGE_ERRORS[10]:
        return fault
    try:
        free = shutil.disk_usage(home).free
    except OSError:
        return fault
    return (
        f"{fault}: the disk is full ({free // 1024} KiB free)" if free < FULL_BELOW_BYTES else fault
    )


def storage_fault(error: BaseException) -> str | None:
    """What the storage refused, when ``error`` (or what it wraps: SQLAlchemy's ``orig``, a
    cause, or the error it was raised while handling, unless raised ``from None``) is a full
    disk, a read-only file system, no permission or a quota; None for any other error."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in STORAGE_ERRORS:
            return (
                f"{current.strerror} ({current.filename})"
                if current.filename
                else (current.strerror or os.strerror(current.errno))
            )
        code = getattr(current, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in SQLITE_STORAGE_ERRORS:
            return SQLITE_STORAGE_ERRORS[code & 0xFF]
        pending += [getattr(current, "orig", None), current.__cause__]
        if not current.__suppress_context__:
            pending.append(current.__context__)
    return None


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
    """Write realistic landing files: `<out>/<source>/<YYYY-MM-DD>.csv` for customers,
    applications and outcomes (delayed labels), with the dirt real feeds have."""
    from rich.table import Table

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
    target = out or settings().landing_dir
    with (
        failing(OSError),  # --out is a file, or cannot be written
        console.status(Text(f"generating {days} days into {target}")),
    ):
        report = write(config, target)
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
    from mlops_assets.run import RunSetupError, run_pipeline

    home = settings()
    with console.status("starting…") as status:

        def on_event(kind: str, step: str) -> None:
            if kind == "start":
                status.update(Text(f"running {step}"))
            else:
                style = {"success": "green", "failure": "red", "skipped": "yellow"}[kind]
                console.print(Text.assemble((f"{kind:>8}", style), f" {step}"))

        try:
            with failing(RunSetupError, code=2, label="cannot run:"):
                report = run_pipeline(
                    home,
                    fetch_table_metadata=table_metadata,
                    on_event=on_event,
                    ends_process=common.ends_with_command,
                )
        except typer.Exit:  # a run that could not start, already said (exit 2)
            raise
        except Exception as error:
            fault = storage_fault(error)
            if fault is None:
                raise
            fault = disk_state(fault, home.home)
            # The disk filled up (or went read-only) under Dagster's own bookkeeping: every
            # warehouse write is a transaction and the next run redoes this one's days.
            fail(
                OSError(
                    f"{fault} in {home.home}: free space (or make MLOPS_HOME writable) and run "
                    "again — nothing was left half-written, and the next run redoes what this "
                    "one did not finish"
                ),
                label="run stopped:",
            )
    if json_output:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print_report(report, home)
    raise typer.Exit(0 if report.ok else 1)


def print_report(report, home) -> None:
    """The run summary a person reads (stderr): every name and finding printed as text."""
    from rich.table import Table

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
    tables = Table("table", "rows", title=f"Warehouse {home.warehouse_path}")
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
    for model, drifted in report.drifted_days.items():
        say(
            f"drift ({model})",
            "yellow",
            f"on {len(drifted)} of the ingested days (from {drifted[0]}): "
            f"{home.reports_dir / 'drift' / model}/<day>.html, monitoring.drift_reports",
        )
    for step in report.failed_steps:
        say("failed step:", "red", step)
    console.print(f"dbt and Dagster log of this run: {report.log_path}")
    say(
        *(("run succeeded", "green") if report.ok else ("run failed", "red")),
        f"in {report.seconds:.1f}s — run {report.run_id} (open `make ui` to see it in Dagster)",
    )


@app.command("dbt-parse")
def dbt_parse() -> None:
    """Write dbt_project/target/dagster/manifest.json (what Dagster loads the dbt assets from)."""
    from mlops_assets.transform.parse import DbtParseError, prepare_dbt_manifest

    with failing(DbtParseError, code=2):
        console.print(f"manifest: {prepare_dbt_manifest(os.environ)}")


def port_taken(port: int) -> bool:
    """Whether a server already listens on 127.0.0.1:``port`` (a socket in TIME_WAIT does
    not count: the servers bind with SO_REUSEADDR too)."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


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
    """Serve the Dagster UI (dg dev) on 127.0.0.1 against $MLOPS_HOME.

    Ctrl-C, SIGTERM, SIGHUP or SIGQUIT stops the webserver, the daemon, the code servers (and
    nginx) within seconds: what has not stopped by itself after 7 s is killed."""
    from mlops_assets.cli.supervise import Stop, Supervisor
    from mlops_assets.run.instance import batch_event_writes, ensure_dagster_home
    from mlops_assets.security import ui_guard
    from mlops_assets.security.keyring import KeyringError
    from mlops_assets.security.vault import ensure_keyring
    from mlops_assets.settings import PROJECT_ROOT
    from mlops_assets.transform.parse import DbtParseError, prepare_dbt_manifest
    from mlops_assets.ui_site import SITE_DIR

    # Said at once: the webserver would find out only after loading the definitions (a minute
    # on a busy machine), and a server already there would answer in its place meanwhile.
    if not 1 <= port <= 65535:  # dg dev takes 0 as "3000 or any free port"
        fail(ValueError(f"--port {port}: a port is a number from 1 to 65535"), 2)
    if port_taken(port):
        fail(OSError(f"port {port} on 127.0.0.1 is in use: stop what serves it, or pass --port"), 2)
    home = settings()
    guard = None
    if secure:
        with failing(ui_guard.UiGuardError, code=2):
            guard = ui_guard.prepare(home.home, port, ui_guard.free_port())
            ui_guard.check_config(guard)
    with failing(KeyringError, code=2):
        notice = ensure_keyring(home.keyring_path, home.warehouse_path)
    if notice:
        console.print(notice, style="yellow")
    os.environ["DAGSTER_HOME"] = str(ensure_dagster_home(home))  # for `dg dev`
    batch_event_writes(os.environ)  # for the runs it launches
    os.environ["MLOPS_HOME"] = str(home.home)
    # dagster-dbt runs `dbt` from PATH: this environment's, even when the venv is not active.
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    with failing(DbtParseError, code=2):
        prepare_dbt_manifest(os.environ, if_changed=True)
    # `dg dev`: the project's defs folder (YAML checked first), the webserver and the daemon,
    # run by this environment's Python whichever virtualenv is active. Its processes start with
    # the hook that makes the daemon look at backfills every few seconds, not every 30 s.
    os.environ["VIRTUAL_ENV"] = sys.prefix
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(SITE_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    args = [
        str(Path(bin_dir) / "dg"),
        "dev",
        "--use-active-venv",
        "--target-path",
        str(PROJECT_ROOT),
        "-h",
        "127.0.0.1",
        "-p",
        str(guard.upstream if guard else port),
    ]
    try:
        with Supervisor() as servers:
            try:
                servers.start("dg dev", args)
                if guard is not None:
                    servers.start("nginx", ui_guard.nginx_command(guard))
                    if not servers.wait_listening("nginx", guard.port, ui_guard.START_TIMEOUT):
                        fail(
                            OSError(f"nginx is not listening on {guard.url}: see {guard.error_log}")
                        )
                    console.print(
                        f"Dagster UI at {guard.url} "
                        f"(nginx in front of 127.0.0.1:{guard.upstream}): "
                        f"user {ui_guard.USER}, password in {guard.password_file}, self-signed "
                        f"certificate {guard.certificate}. Ctrl-C stops both."
                    )
                name, code = servers.watch()
            except Stop as stop:
                say("stopping:", "yellow", f"{stop} received: the Dagster UI and its servers")
                raise typer.Exit(0) from None
            except OSError as error:  # a server that cannot be started (a venv without dg)
                fail(error, 2)
    except Stop:  # one that came while the handlers were set, or just after watch() returned
        raise typer.Exit(0) from None
    # One of them stopped on its own; the supervisor has stopped the other.
    where = f": see {guard.error_log}" if guard is not None and name == "nginx" else ""
    fail(OSError(f"{name} stopped (exit {code}){where}"), code=code if code > 0 else 1)
