"""`mlops pii`: personal data in the vault, one customer at a time, every access audited."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mlops_assets.cli.common import console, fail, out, say, settings, vault
from mlops_assets.text import printable

app = typer.Typer(
    help="Personal data in the vault: one customer at a time, audited.", no_args_is_help=True
)


def _feed(name: str) -> str:
    """A declared feed's name (read when the command runs: the catalogue is not cheap)."""
    from mlops_assets import catalogue

    feeds = catalogue.sources()
    if name not in feeds:
        raise typer.BadParameter(f"{name!r} is not a feed: {', '.join(feeds)}")
    return name


@app.command("reveal")
def pii_reveal(
    customer: Annotated[str, typer.Option(help="The customer_key (pseudonym) to reveal.")],
    reason: Annotated[str, typer.Option(help="Why: recorded in audit.pii_access.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Decrypt one customer's identifiers; the access is appended to audit.pii_access.
    Values are shown as text, their control characters escaped (`\\x1b`); --json gives them
    exactly."""
    from rich.table import Table

    from mlops_assets.security.vault import reveal

    with vault(settings()) as (keyring, con):
        values = reveal(con, keyring, customer, reason)
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
        say("error:", "red", f"{column} of {printable(customer)} is unreadable: {why}")
    if values.unreadable:
        raise typer.Exit(1)


@app.command("quarantined-line")
def pii_quarantined_line(
    # Any declared feed: the quarantined lines of every feed are stored encrypted.
    source: Annotated[
        str, typer.Option(parser=_feed, metavar="FEED", help="The feed the line came from.")
    ],
    file: Annotated[str, typer.Option(help="Landing path, e.g. customers/2025-01-03.csv.")],
    line: Annotated[int, typer.Option(help="Line number in that file.")],
    reason: Annotated[str, typer.Option(help="Why: recorded in audit.pii_access.")],
) -> None:
    """Decrypt one quarantined line of a feed, to fix it at the source (audited).
    Control characters are shown escaped (`\\x1b`, `\\t`; a backslash doubled). Exit 1 when the
    line is unknown, or was erased with its customer (`mlops pii forget`)."""
    from mlops_assets.security.vault import reveal_quarantined_line

    with vault(settings()) as (keyring, con):
        text = reveal_quarantined_line(con, keyring, source, file, line, reason)
    print(printable(text))


@app.command("drop-unreadable")
def pii_drop_unreadable(
    customer: Annotated[str, typer.Option(help="The customer_key (pseudonym).")],
    reason: Annotated[
        str, typer.Option(help="Why: recorded in audit.pii_access (not empty).")
    ] = "vault row damaged for good",
) -> None:
    """Delete the customer's vault rows that fail authentication (damaged for good; `pii
    reveal` names them), audited. A load keeps such a row beside the customer's new record and
    `keys rotate` refuses to run past it. A row under a key version the keyring lacks is never
    deleted (restore the keyring). Exit 1 when none of their rows fails."""
    from mlops_assets.security.vault import drop_unreadable

    with vault(settings()) as (keyring, con):
        dropped = drop_unreadable(con, keyring, customer, reason)
    if not dropped:
        fail(RuntimeError(f"no vault row of customer {customer} fails authentication"))
    console.print(
        f"dropped {len(dropped)} unreadable vault row(s) of customer {printable(customer)}: "
        f"{', '.join(map(printable, dropped))}"
    )


@app.command("forget")
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
    from mlops_assets.warehouse import WarehouseLockedError, rewrite_file

    home = settings()
    with vault(home) as (keyring, con):
        erased = forget(con, keyring, customer, reason)
    try:
        with console.status("rewriting the warehouse file without the erased data"):
            rewrite_file(home.warehouse_path, memory_limit=home.duckdb_memory_limit)
    except (WarehouseLockedError, OSError, duckdb.Error) as error:
        fail(
            RuntimeError(
                f"the erasure is recorded, but the warehouse file could not be rewritten "
                f"({error}): its free blocks may still hold the erased ciphertexts. Run this "
                "command again once nothing else uses the warehouse"
            )
        )
    done = (
        f"customer {printable(customer)} was erased before; rewrote the warehouse file"
        if erased.already_erased
        else f"erased {erased.vault_rows} vault row(s) and {erased.lines} quarantined line(s) of "
        f"customer {printable(customer)}, and rewrote the warehouse file without them"
    )
    console.print(
        f"{done}; later loads of their records are erased too. The pseudonym stays in raw and "
        "the marts: anyone holding the keyring and their customer id can recompute it. Backups "
        "made before the erasure still hold the erased data"
    )
    if erased.unreadable_lines:
        fail(
            RuntimeError(
                f"{erased.unreadable_lines} quarantined lines failed authentication and could not "
                "be checked for this customer: they are damaged or from another keyring"
            )
        )
