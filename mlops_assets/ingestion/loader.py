"""Landing files -> raw tables, exactly once per file content, with a ledger and a quarantine.

Every file is loaded in one DuckDB transaction with DuckDB's native CSV reader:

* the ledger ``audit.ingested_files`` decides what is new: a file whose sha256 is already
  recorded is skipped, a file whose content changed replaces its earlier rows;
* every non-blank data line of a file ends up either in ``raw.<source>`` or in
  ``quarantine.<source>`` (one row per physical line, with the reason), so
  ``rows_loaded + rows_quarantined = data_lines`` holds for every file and is recorded;
* a file that cannot be read at all raises :class:`IngestionError` naming the file and the problem,
  and the transaction is rolled back, leaving the warehouse as it was.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import tempfile
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd

from mlops_assets.faults import crash_point
from mlops_assets.ingestion.landing import landing_files, partition_key_of, sha256_of
from mlops_assets.ingestion.sources import LINEAGE_COLUMNS, SOURCE_SPECS, SourceSpec
from mlops_assets.security.keyring import Keyring, KeyringError
from mlops_assets.security.vault import (
    bind_keyring,
    encrypt_cells,
    seal_customer_pii,
    write_sealed_pii,
)

SNIFF_BYTES = 64 * 1024

Status = Literal["loaded", "replaced", "unchanged", "failed"]


class IngestionError(Exception):
    """A whole file could not be ingested; the message starts with the file's landing path."""


@dataclass(frozen=True)
class FileResult:
    path: str  # relative to the landing directory, e.g. applications/2025-03-02.csv
    source: str
    status: Status
    partition_key: str | None = None
    data_lines: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    extra_columns: tuple[str, ...] = ()
    error: str | None = None


@dataclass
class SourceResult:
    source: str
    files: list[FileResult] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    def total(self, attribute: str) -> int:
        return sum(getattr(f, attribute) for f in self.files if f.status != "unchanged")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the raw, quarantine and audit tables if they do not exist (idempotent)."""
    for schema in ("raw", "quarantine", "audit"):
        con.execute(f"create schema if not exists {schema}")
    for spec in SOURCE_SPECS.values():
        columns = {**spec.raw_columns, **LINEAGE_COLUMNS}
        ddl = ", ".join(f"{_ident(c)} {t}" for c, t in columns.items())
        con.execute(f"create table if not exists raw.{spec.name} ({ddl})")
        # raw_line is null and raw_line_encrypted set for feeds that carry personal data.
        con.execute(
            f"create table if not exists quarantine.{spec.name} ("
            "source_file varchar not null, line_number bigint, reason varchar not null, "
            "raw_line varchar, raw_line_encrypted blob, key_version integer, "
            "quarantined_at timestamp not null)"
        )
    con.execute(
        "create table if not exists audit.ingested_files ("
        "path varchar primary key, source varchar not null, sha256 varchar not null, "
        "data_lines bigint not null, rows_loaded bigint not null, "
        "rows_quarantined bigint not null, "
        "extra_columns varchar[], partition_key varchar, loaded_at timestamp not null)"
    )


def _changed_since(path: Path, sha: str) -> bool:
    try:
        return sha256_of(path) != sha
    except FileNotFoundError:
        return True


def check_utf8(path: Path, rel: str) -> None:
    """Fail the file, naming the line, at the first byte that is not UTF-8 (streamed, 1 MiB at
    a time, so a large file is never held in memory)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines_before = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:
                line = lines_before + block.count(b"\n", 0, max(error.start, 0)) + 1
                raise IngestionError(
                    f"{rel}: line {line} is not UTF-8 text (byte 0x{block[error.start]:02x}) — "
                    "re-export the file as UTF-8"
                ) from None
            lines_before += block.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise IngestionError(
                f"{rel}: ends inside a UTF-8 character — truncated file?"
            ) from None


def read_header(path: Path, rel: str, spec: SourceSpec) -> list[str]:
    """Validate the header line; return the column names (stripped, lower-case) in file order."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head.strip():
        raise IngestionError(f"{rel}: file is empty — expected a CSV header and data lines")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise IngestionError(f"{rel}: UTF-16 encoded — save the file as UTF-8")
    if b"\x00" in head:
        raise IngestionError(f"{rel}: binary content (NUL bytes) — not a CSV text file")
    first_line = head.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise IngestionError(f"{rel}: header is not UTF-8 text ({error.reason})") from None
    columns = [c.strip().lower() for c in next(csv.reader([text]))]
    if len(columns) < 2:
        raise IngestionError(
            # The content is not quoted: in a personal-data feed it could be personal data.
            f"{rel}: the first line has fewer than two comma-separated columns — not CSV"
        )
    if "" in columns:
        raise IngestionError(
            f"{rel}: header has an empty column name at position {columns.index('') + 1}"
        )
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise IngestionError(f"{rel}: header repeats column(s) {', '.join(duplicated)}")
    missing = [c for c in spec.columns if c not in columns]
    if missing:
        raise IngestionError(
            f"{rel}: missing required column(s) {', '.join(missing)} — "
            f"{spec.name} files need {', '.join(spec.columns)}"
        )
    return columns


# What DuckDB raises about a file's content: that file fails, the load goes on.
FILE_CONTENT_ERRORS = (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.IOException)


def ingest_file(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    path: Path,
    spec: SourceSpec,
    *,
    force: bool = False,
    keyring: Keyring | None = None,
    turn: contextlib.AbstractContextManager | None = None,
) -> FileResult:
    """Load one landing file into ``raw.<source>`` exactly once; see the module docstring.

    The tables must exist (:func:`ensure_schema`). ``keyring`` is required for sources with
    personal data (pseudonyms, vault). ``turn`` is held around the file's transaction (the
    parsing before it needs none): :func:`ingest_source` uses it to commit files in order."""
    if spec.has_personal_data and keyring is None:
        raise KeyringError(f"{spec.name} carries personal data: a keyring is required")
    rel = path.relative_to(landing_dir).as_posix()
    partition_key = partition_key_of(path)
    sha = sha256_of(path)
    row = con.execute("select sha256 from audit.ingested_files where path = ?", [rel]).fetchone()
    known = row[0] if row else None
    if known == sha and not force:
        return FileResult(rel, spec.name, "unchanged", partition_key)
    if partition_key is None:
        raise IngestionError(f"{rel}: file name must be YYYY-MM-DD.csv (the landing date)")
    columns = read_header(path, rel, spec)
    check_utf8(path, rel)
    extra = tuple(c for c in columns if c not in spec.columns)
    try:
        # Parse into temporary tables first; the warehouse is touched only in the transaction.
        counts = _stage(con, path, spec, columns)
        if _changed_since(path, sha):
            # Rewritten or replaced while DuckDB read it (twice: its lines, then its records):
            # what was read may mix two versions, and the ledger would name the wrong one.
            raise IngestionError(
                f"{rel}: changed or removed while it was being read — nothing loaded; the file "
                "as it is then is loaded on the next run"
            )
        if counts[1] + counts[2] != counts[0]:
            raise IngestionError(
                f"{rel}: {counts[0]} data lines but {counts[1]} readable + {counts[2]} "
                "quarantined — the file's line structure could not be reconciled, nothing loaded"
            )
        # Identifiers are pseudonymised and encrypted from the staging tables, before the
        # transaction (and outside the commit turn: the slow Python part of a customers file).
        sealed = _seal_personal_data(con, rel, spec, keyring, extra)
        crash_point("ingest.staged")
        with turn or contextlib.nullcontext():
            con.execute("begin transaction")
            try:
                _replace_rows(con, rel, spec, extra, sealed)
                crash_point("ingest.in_transaction")
                con.execute(
                    "insert or replace into audit.ingested_files "
                    "values (?, ?, ?, ?, ?, ?, ?, ?, now())",
                    [rel, spec.name, sha, *counts, list(extra), partition_key],
                )
                con.execute("commit")
            except BaseException:
                con.execute("rollback")
                raise
            crash_point("ingest.committed")
    except FILE_CONTENT_ERRORS as error:
        # What DuckDB says about the file's content: that file fails, nothing else.
        # First line only, never an "Original Line" quote: it could hold personal data.
        message = str(error).split("\n", 1)[0].split("Original Line", 1)[0].rstrip(" :")
        raise IngestionError(f"{rel}: could not be read as CSV — {message}") from error
    finally:
        for table in STAGING_TABLES:
            con.execute(f"drop table if exists temp.{table}")
    return FileResult(
        rel,
        spec.name,
        "replaced" if known else "loaded",
        partition_key,
        data_lines=counts[0],
        rows_loaded=counts[1],
        rows_quarantined=counts[2],
        extra_columns=extra,
    )


STAGING_TABLES = (
    "_lines",
    "_records",
    "_rejects",
    "_keys",
    "_reject_scans",
    "_quarantine",
    "_free",
    "_placed",
)

# Why a record was rejected by the CSV reader, readable: 'amount: "abc" is not a valid double'.
REJECT_REASON = """
    case when error_type = 'CAST' then column_name || ': ' || coalesce(
            '"' || regexp_extract(error_message, 'string "(.*)" to', 1) || '" is not a valid '
            || lower(regexp_extract(error_message, 'to ''(\\w+)''', 1)), error_message)
         else lower(error_type) || ': ' || error_message end
"""


def _stage(
    con: duckdb.DuckDBPyConnection, path: Path, spec: SourceSpec, columns: list[str]
) -> tuple[int, int, int]:
    """Parse the file into temporary tables: ``_placed`` (readable records with their line) and
    ``_quarantine`` (one row per rejected physical line). Return (lines, loaded, quarantined)."""
    file = _literal(str(path))
    types = ", ".join(f"{_literal(c)}: {_literal(spec.columns.get(c, 'VARCHAR'))}" for c in columns)

    # Physical lines with their numbers: the unit of accounting (blank lines do not count).
    con.execute(
        f"""
        create or replace temp table _lines as
        with parts as (select string_split(content, chr(10)) as l from read_text({file}))
        select line_number, raw_line from (
            select unnest(l) as raw_line, generate_subscripts(l, 1) as line_number from parts
        )
        where line_number > 1 and trim(raw_line, chr(13) || ' ') <> ''
        """
    )
    _read_records(con, path, types)
    # Each rejected record covers one or more physical lines (an unterminated quote swallows
    # several); every covered line is quarantined with the record's reasons.
    con.execute(
        f"""
        create or replace temp table _quarantine as
        with rejected as (
            select line, string_agg(distinct {REJECT_REASON}, '; ') as reason,
                max(len(list_filter(string_split(csv_line, chr(10)),
                    lambda x: trim(x, chr(13) || ' ') <> ''))) as span
            from _rejects group by line
        )
        select l.line_number, r.reason, l.raw_line
        from rejected r join _lines l
          on l.line_number between r.line and r.line + greatest(r.span, 1) - 1
        """
    )
    con.execute(
        """
        create or replace temp table _free as
        select line_number, raw_line, row_number() over (order by line_number) as slot
        from _lines where line_number not in (select line_number from _quarantine)
        """
    )
    # Place readable records on the lines nobody else claimed: record k starts on the next free
    # line after the lines records 1..k-1 spanned (a quoted value may contain a line break).
    varchar = [c for c in columns if spec.columns.get(c, "VARCHAR") == "VARCHAR"]
    breaks = " + ".join(
        f"coalesce(len({_ident(c)}) - len(replace({_ident(c)}, chr(10), '')), 0)" for c in varchar
    )
    problems = [
        f"case when {_ident(c)} is null then '{c} is empty' end" for c in spec.required_values
    ] + [
        f"case when contains({_ident(c)}, chr(10)) then 'line break inside the value of {c}' end"
        for c in varchar
    ]
    con.execute(
        f"""
        create or replace temp table _placed as
        with records as (
            select *, rowid as _record, 1 + {breaks} as _span,
                   nullif(concat_ws('; ', {", ".join(problems)}), '') as _problem
            from _records
        ),
        positioned as (
            select *, sum(_span) over (order by _record) - _span + 1 as _slot from records
        )
        select p.*, f.line_number as _line_number
        from positioned p left join _free f on f.slot = p._slot
        """
    )
    con.execute(
        """
        insert into _quarantine
        select f.line_number, p._problem, f.raw_line
        from _placed p join _free f on f.slot between p._slot and p._slot + p._span - 1
        where p._problem is not null
        """
    )
    return (
        con.execute("select count(*) from _lines").fetchone()[0],
        con.execute("select count(*) from _placed where _problem is null").fetchone()[0],
        con.execute("select count(*) from _quarantine").fetchone()[0],
    )


@dataclass
class _Sealed:
    """A personal-data file's vault cells and quarantined lines, encrypted."""

    pii: pd.DataFrame | None
    quarantine: pd.DataFrame


def _extra_json(extra: tuple[str, ...]) -> str:
    """SQL for the unknown columns of a record as one JSON object (null without any)."""
    if not extra:
        return "null"
    return "to_json(struct_pack(" + ", ".join(f"{_ident(c)} := {_ident(c)}" for c in extra) + "))"


def _replace_rows(
    con: duckdb.DuckDBPyConnection,
    rel: str,
    spec: SourceSpec,
    extra: tuple[str, ...],
    sealed: _Sealed | None,
) -> None:
    """Inside the caller's transaction: swap the file's earlier rows for the staged ones.

    For a source with personal data, only pseudonyms and generalised values are written to raw,
    quarantined lines and identifiers only as ciphertext (``sealed``, made from the in-memory
    staging tables by :func:`_seal_personal_data`).
    """
    source = _literal(rel)
    con.execute(f"delete from raw.{spec.name} where _source_file = {source}")
    con.execute(f"delete from quarantine.{spec.name} where source_file = {source}")
    # Quarantined lines: as read, or (personal data) only as ciphertext.
    lines, stored = "_quarantine", "raw_line, null, null"
    if sealed is not None:
        con.register("_sealed_lines", sealed.quarantine)
        lines, stored = "_sealed_lines", "null, ciphertext, key_version"
    try:
        con.execute(
            f"""
            insert into quarantine.{spec.name}
            select {source}, line_number, reason, {stored}, now()
            from {lines} order by line_number
            """
        )
    finally:
        if sealed is not None:
            con.unregister("_sealed_lines")
    if sealed is not None and sealed.pii is not None:
        write_sealed_pii(con, sealed.pii)
    # Unknown columns of a personal-data feed may identify: they go to the vault instead.
    extra_json = "null" if spec.has_personal_data else _extra_json(extra)
    key_join = "join _keys using (_record)" if spec.pseudonymise else ""
    values = [
        spec.generalised[c][1] if c in spec.generalised else _ident(c) for c in spec.raw_columns
    ]
    target = ", ".join(_ident(c) for c in [*spec.raw_columns, *LINEAGE_COLUMNS])
    con.execute(
        f"""
        insert into raw.{spec.name} ({target})
        select {", ".join(values)}, {extra_json}, {source}, _line_number, now()
        from _placed {key_join} where _problem is null order by _record
        """
    )


def _seal_personal_data(
    con: duckdb.DuckDBPyConnection,
    rel: str,
    spec: SourceSpec,
    keyring: Keyring,
    extra: tuple[str, ...],
) -> _Sealed | None:
    """Pseudonyms into ``_keys`` (temp); identifiers, unknown columns and quarantined lines
    encrypted. None for a source without personal data."""
    if not spec.has_personal_data:
        return None
    pii = None
    if spec.pseudonymise:
        selected = [_ident(spec.pseudonymise), *map(_ident, spec.identifiers)]
        frame = con.execute(
            f"select _record, {', '.join(selected)}, {_extra_json(extra)} as _extra_columns "
            "from _placed where _problem is null order by _record"
        ).df()
        # One HMAC per id: pseudonyms are per value by nature (hashlib does the work in C).
        frame["customer_key"] = [keyring.pseudonym(v) for v in frame[spec.pseudonymise]]
        con.register("_keys_frame", frame[["_record", "customer_key"]])
        con.execute("create or replace temp table _keys as select * from _keys_frame")
        con.unregister("_keys_frame")
        if spec.identifiers:
            pii = seal_customer_pii(keyring, frame, [*spec.identifiers, "_extra_columns"])
    lines = con.execute(
        "select line_number, reason, raw_line from _quarantine order by line_number"
    ).fetchall()
    cells = encrypt_cells(
        keyring,
        f"quarantine.{spec.name}",
        [f"{rel}:{n}" for n, _, _ in lines],
        ["raw_line"] * len(lines),
        [raw for _, _, raw in lines],
    )
    quarantine = pd.DataFrame(
        {
            "line_number": pd.Series([n for n, _, _ in lines], dtype="int64"),
            "reason": pd.Series([reason for _, reason, _ in lines], dtype="object"),
            "ciphertext": pd.Series(list(cells["ciphertext"]), dtype="object"),
            "key_version": pd.Series(list(cells["key_version"]), dtype="int64"),
        }
    )
    return _Sealed(pii, quarantine)


def _read_records(con: duckdb.DuckDBPyConnection, path: Path, types: str) -> None:
    """Read the file's records into ``_records``; unreadable ones land in ``_rejects``.

    The reader runs in strict mode, so a line with too many fields is rejected rather than cut.
    Strict mode refuses files that mix CRLF and LF line endings; those are read from a copy with
    the endings normalised (the line count, and so every line number, stays the same).
    """

    def read(file: Path) -> None:
        con.execute("drop table if exists temp._rejects")
        con.execute("drop table if exists temp._reject_scans")
        # A table keeps the reader's order, so rowid is the record's position in the file.
        con.execute(
            f"""
            create or replace temp table _records as select * from read_csv({_literal(str(file))},
                header = true, auto_detect = false, delim = ',', quote = '"', escape = '"',
                strict_mode = true, columns = {{{types}}},
                store_rejects = true, rejects_table = '_rejects', rejects_scan = '_reject_scans')
            """
        )

    try:
        read(path)
    except duckdb.InvalidInputException as error:
        if "state machine" not in str(error):
            raise
        with tempfile.TemporaryDirectory(prefix="mlops-ingest-") as tmp:
            normalised = Path(tmp) / path.name
            normalised.write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))
            read(normalised)


class _InOrder:
    """Turns taken strictly in task order: task ``i`` enters only after tasks ``0..i-1`` have
    taken and left theirs (or given them up). Once a task fails for good, later turns raise
    instead of letting their task commit."""

    def __init__(self) -> None:
        self._next = 0
        self._taken: set[int] = set()
        self._condition = threading.Condition()
        self.failure: BaseException | None = None

    @contextlib.contextmanager
    def turn(self, index: int) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: self._next == index)
            self._taken.add(index)
        try:
            if self.failure is not None:
                raise _Abandoned from self.failure
            yield
        except BaseException as error:
            # Recorded before the next task's turn begins: it must see the failure and not
            # commit (recording it after the turn let a waiting task slip through).
            if not isinstance(error, (IngestionError, _Abandoned, *FILE_CONTENT_ERRORS)):
                self.failure = self.failure or error
            raise
        finally:
            with self._condition:
                self._next += 1
                self._condition.notify_all()

    def give_up(self, index: int) -> None:
        """Let the tasks after ``index`` go on when task ``index`` ends without its turn."""
        if index not in self._taken:
            with self.turn(index):
                pass


class _Abandoned(Exception):
    """A file not committed because an earlier one failed for good."""


PIPELINE_THREADS = 2


def ingest_source(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    source: str,
    partition_keys: Iterable[str] | None = None,
    *,
    force: bool = False,
    keyring: Keyring | None = None,
) -> SourceResult:
    """Ingest every new or changed file of ``source``; a bad file fails alone, the rest go on.

    Files are pipelined: while one file's transaction commits, the next is parsed on another
    connection (DuckDB runs both at once). Transactions still run one at a time and in file
    order, so a later file's rows (and vault entries) win exactly as in a sequential load.
    An error other than a bad file stops the load: files after it are not committed.

    A missing or wrong keyring fails the whole source before anything is written."""
    spec = SOURCE_SPECS[source]
    ensure_schema(con)
    if spec.has_personal_data:
        if keyring is None:
            raise KeyringError(f"{source} carries personal data: a keyring is required")
        bind_keyring(con, keyring)
    files = landing_files(landing_dir, source, partition_keys)
    order = _InOrder()
    local = threading.local()
    cursors: list[duckdb.DuckDBPyConnection] = []

    def ingest(index: int, path: Path) -> FileResult:
        if order.failure is not None:  # an earlier file failed for good: do not even parse
            order.give_up(index)
            raise _Abandoned from order.failure
        if not hasattr(local, "cursor"):
            local.cursor = con.cursor()
            cursors.append(local.cursor)
        try:
            return ingest_file(
                local.cursor,
                landing_dir,
                path,
                spec,
                force=force,
                keyring=keyring,
                turn=order.turn(index),
            )
        except IngestionError as error:
            rel = path.relative_to(landing_dir).as_posix()
            return FileResult(rel, source, "failed", partition_key_of(path), error=str(error))
        except _Abandoned:
            raise
        except BaseException as error:
            order.failure = order.failure or error
            raise
        finally:
            order.give_up(index)

    result = SourceResult(source)
    try:
        with ThreadPoolExecutor(PIPELINE_THREADS, thread_name_prefix="ingest") as pool:
            futures = [pool.submit(ingest, i, path) for i, path in enumerate(files)]
            wait(futures)
    finally:
        for cursor in cursors:
            cursor.close()
    if order.failure is not None:
        raise order.failure
    result.files = [future.result() for future in futures]
    return result


def unbalanced_ledger_rows(con: duckdb.DuckDBPyConnection, source: str) -> list[tuple]:
    """Ledger rows where loaded + quarantined differs from the file's data lines, or from the
    rows actually present in raw/quarantine for that file. Empty when the books balance."""
    return con.execute(
        f"""
        with raw_rows as (select _source_file as path, count(*) as n from raw.{source} group by 1),
        quarantined as (
            select source_file as path, count(*) as n from quarantine.{source} group by 1
        )
        select l.path, l.data_lines, l.rows_loaded, l.rows_quarantined,
               coalesce(r.n, 0) as in_raw, coalesce(q.n, 0) as in_quarantine
        from audit.ingested_files l
        left join raw_rows r using (path) left join quarantined q using (path)
        where l.source = ? and (l.rows_loaded + l.rows_quarantined <> l.data_lines
               or coalesce(r.n, 0) <> l.rows_loaded or coalesce(q.n, 0) <> l.rows_quarantined)
        order by l.path
        """,
        [source],
    ).fetchall()
