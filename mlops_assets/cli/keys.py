"""`mlops keys`: the keyring behind pseudonyms and the vault."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mlops_assets.cli.common import console, failing, load_keyring, refusals, settings, vault

app = typer.Typer(help="The keyring behind pseudonyms and the vault.", no_args_is_help=True)


@app.command("init")
def keys_init() -> None:
    """Create the keyring ($MLOPS_KEYRING or $MLOPS_HOME/keys/keyring.json, mode 0600).
    Refused (exit 1) when one exists, or when the home's warehouse was built with another."""
    from mlops_assets.security.keyring import Keyring, KeyringError
    from mlops_assets.security.vault import refuse_lost_keyring

    home = settings()
    path = home.keyring_path
    with failing(KeyringError):
        refuse_lost_keyring(path, home.warehouse_path)
        Keyring.create(path)
    console.print(f"created keyring {path} (mode 600) — back it up apart from the warehouse")


@app.command("status")
def keys_status(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Key versions in the keyring and how many ciphertexts (vault rows, quarantined lines) use
    each."""
    from mlops_assets.security.vault import key_usage
    from mlops_assets.warehouse import connection

    home = settings()
    with failing(*refusals()):
        keyring = load_keyring(home)
    usage = {}
    if home.warehouse_path.exists():
        with connection(home.warehouse_path, memory_limit=home.duckdb_memory_limit) as con:
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
        console.print(f"  version {version}{active}: {used:,} ciphertexts")


@app.command("rotate")
def keys_rotate() -> None:
    """Add a key version and re-encrypt every vault value with it, in one transaction."""
    from mlops_assets.security.vault import rotate

    with vault(settings()) as (keyring, con):
        version, count = rotate(con, keyring)
    console.print(
        f"key version {version} is active; {count:,} ciphertexts re-encrypted. Older "
        "versions can be retired with `mlops keys retire VERSION`."
    )


@app.command("retire")
def keys_retire(version: Annotated[int, typer.Argument(help="Key version to remove.")]) -> None:
    """Remove a key version from the keyring; refused while any value still uses it."""
    from mlops_assets.security.vault import retire

    with vault(settings()) as (keyring, con):
        retire(con, keyring, version)
    console.print(f"key version {version} retired")
