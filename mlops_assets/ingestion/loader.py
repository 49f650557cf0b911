"""Landing files -> raw tables, exactly once per file content, with a ledger and a quarantine:
one file's load (:func:`ingest_file`) and a feed's (:func:`ingest_source`), composed of the
stages beside this module:

* :mod:`.landing` finds the feed's files and their landing day;
* :mod:`.files` checks a file is CSV text with its feed's header (else it fails alone);
* :mod:`.staging` parses it into temporary tables, every non-blank data line either a readable
  record or a quarantined line, so ``rows_loaded + rows_quarantined = data_lines``;
* ``security.sealing`` pseudonymises, encrypts identifiers for the vault and encrypts every
  quarantined line (unparsed, a line may hold anything, whatever the feed);
* :mod:`.commit` writes the file's rows and its :mod:`.ledger` row in one DuckDB transaction,
  files in order: a file whose sha256 is recorded is skipped, a changed file replaces its earlier
  rows, and a file that cannot be read raises :class:`IngestionError` naming the file and the
  problem, its transaction rolled back.

Nothing a file holds becomes SQL text (the trust boundary). Extras — columns beyond the feed's —
are kept for every feed: as JSON in ``_extra_columns`` for a feed without personal data,
encrypted in the vault for a feed with personal data (per customer for customers, per record
``_extra_columns@<file>:<line>`` for an event feed). A feed without personal data refuses a file
with an extra column named like an identifier of any feed (``full_name``, ``email``,
``customer_id``…): the file fails alone, its values are stored nowhere.

The stages are handed the feed's :class:`SourceSpec` and the identifier names of every feed
(:func:`~mlops_assets.ingestion.sources.identifier_names`): none reads a catalogue.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable
from pathlib import Path

import duckdb

from mlops_assets.faults import crash_point
from mlops_assets.ingestion.commit import commit_file, commit_in_order, ensure_schema
from mlops_assets.ingestion.files import (
    FILE_ACCESS_ERRORS,
    FILE_CONTENT_ERRORS,
    IngestionError,
    changed_message,
    changed_since,
    duckdb_message,
    extra_names,
    out_of_space,
    read_header,
)
from mlops_assets.ingestion.landing import landing_files, partition_key_of, sha256_of
from mlops_assets.ingestion.ledger import FileResult, SourceResult, loaded_sha256
from mlops_assets.ingestion.sources import SourceSpec
from mlops_assets.ingestion.staging import drop_staging, parse
from mlops_assets.security.keyring import Keyring, KeyringError
from mlops_assets.security.sealing import seal
from mlops_assets.security.vault import VaultKeys, bind_keyring, shred_erased_lines
from mlops_assets.sql import confine
from mlops_assets.warehouse import checkpoints_deferred


def ingest_file(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    path: Path,
    spec: SourceSpec,
    identifier_names: frozenset[str],
    *,
    force: bool = False,
    keyring: Keyring | None = None,
    turn: contextlib.AbstractContextManager | None = None,
    scratch: Path | None = None,
    vault_keys: VaultKeys | None = None,
) -> FileResult:
    """Load one landing file into ``raw.<source>`` exactly once; see the module docstring.

    The tables must exist (:func:`ensure_schema`). ``identifier_names``: of every feed (a feed
    without personal data refuses an extra column so named). ``keyring`` is required
    (pseudonyms, vault, and the quarantined lines of every feed, stored encrypted). ``turn`` is
    held around the file's transaction (the parsing before it needs none):
    :func:`ingest_source` uses it to commit files in order.
    ``scratch`` is where a copy with normalised line endings may be written (default: the
    system's temporary folder). ``vault_keys``: the customers with vault rows, kept by the
    load (:class:`~mlops_assets.security.vault.VaultKeys`; without, each file's rows look for
    earlier ones in the whole vault)."""
    if keyring is None:
        raise KeyringError(f"{spec.name}: a keyring is required (quarantined lines are encrypted)")
    rel = path.relative_to(landing_dir).as_posix()
    partition_key = partition_key_of(path)
    try:
        sha = sha256_of(path)
    except FILE_ACCESS_ERRORS as error:
        raise IngestionError(f"{rel}: cannot be read ({error.strerror}) — nothing loaded") from None
    known = loaded_sha256(con, rel)
    if known == sha and not force:
        return FileResult(rel, spec.name, "unchanged", partition_key)
    if partition_key is None:
        raise IngestionError(f"{rel}: file name must be YYYY-MM-DD.csv (the landing date)")
    try:
        columns = read_header(path, rel, spec)
        extras = extra_names(rel, spec, columns, identifier_names)
        # Parse into temporary tables first; the warehouse is touched only in the transaction.
        staged = parse(con, rel, path, sha, spec, columns, extras, scratch)
        if changed_since(path, sha):
            # Rewritten or replaced while read (twice: its lines, then its records): what was
            # read may mix two versions, and the ledger would name the wrong one.
            raise IngestionError(changed_message(rel))
        if staged.loaded + staged.quarantined != staged.data_lines:
            raise IngestionError(
                f"{rel}: {staged.data_lines} data lines but {staged.loaded} readable + "
                f"{staged.quarantined} quarantined — the file's line structure could not be "
                "reconciled, nothing loaded"
            )
        result = FileResult(
            rel,
            spec.name,
            "replaced" if known else "loaded",
            partition_key,
            data_lines=staged.data_lines,
            rows_loaded=staged.loaded,
            rows_quarantined=staged.quarantined,
            extra_columns=tuple(extras),
        )
        # Identifiers are pseudonymised and encrypted from the staging tables, before the
        # transaction (and outside the commit turn: the slow Python part of a customers file).
        sealed = seal(con, rel, spec, keyring, extras, staged)
        crash_point("ingest.staged")
        commit_file(
            con,
            result,
            sha,
            spec,
            extras,
            sealed,
            replacing=known is not None,
            turn=turn,
            vault_keys=vault_keys,
        )
    except FILE_CONTENT_ERRORS as error:
        # What DuckDB says about the file's content: that file fails, nothing else.
        if out_of_space(error):
            raise
        raise IngestionError(
            f"{rel}: could not be read as CSV — {duckdb_message(error)}"
        ) from error
    except FILE_ACCESS_ERRORS as error:
        raise IngestionError(f"{rel}: cannot be read ({error.strerror}) — nothing loaded") from None
    finally:
        drop_staging(con)
    return result


def ingest_source(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    spec: SourceSpec,
    identifier_names: frozenset[str],
    partition_keys: Iterable[str] | None = None,
    *,
    force: bool = False,
    keyring: Keyring | None = None,
    confined: bool = False,
) -> SourceResult:
    """Ingest every new or changed file of the feed ``spec``; a bad file fails alone, the rest
    go on. Files are parsed two at a time and committed one at a time in file order
    (:func:`~mlops_assets.ingestion.commit.commit_in_order`). ``identifier_names``: of every
    feed (:func:`ingest_file`).

    ``confined``: before any file is read, the database of ``con`` loses access to every file
    but the source's landing folder and this load's scratch folder, for good (``sql.confine``:
    SQL that slipped through could not read the keyring or write a file). Only for a
    connection opened for this load, as the Dagster step does: it affects every connection of
    this process to the same database until all are closed.

    A missing or wrong keyring fails the whole source before anything is written."""
    source = spec.name
    ensure_schema(con, spec)
    if keyring is None:
        raise KeyringError(f"{source}: a keyring is required (quarantined lines are encrypted)")
    bind_keyring(con, keyring)
    vault_keys = VaultKeys() if spec.pseudonymise else None
    # One commit per file, without a checkpoint after each (warehouse.checkpoints_deferred).
    with (
        checkpoints_deferred(con),
        tempfile.TemporaryDirectory(prefix="mlops-ingest-") as scratch,
    ):
        if confined:
            confine(con, [str(Path(landing_dir) / source), scratch])

        def load(
            cursor: duckdb.DuckDBPyConnection, path: Path, turn: contextlib.AbstractContextManager
        ) -> FileResult:
            try:
                return ingest_file(
                    cursor,
                    landing_dir,
                    path,
                    spec,
                    identifier_names,
                    force=force,
                    keyring=keyring,
                    turn=turn,
                    scratch=Path(scratch),
                    vault_keys=vault_keys,
                )
            except IngestionError as error:
                rel = path.relative_to(landing_dir).as_posix()
                return FileResult(rel, source, "failed", partition_key_of(path), error=str(error))

        files = landing_files(landing_dir, source, partition_keys)
        result = SourceResult(source, commit_in_order(con, files, load))
    # A customer erased before stays erased in the quarantine too (of any feed).
    shred_erased_lines(con, keyring, source)
    return result
