"""Landing files -> raw tables, exactly once per file content, with a ledger and a quarantine.

Every file is loaded in one DuckDB transaction with DuckDB's native CSV reader:

* the ledger ``audit.ingested_files`` decides what is new: a file whose sha256 is already
  recorded is skipped, a file whose content changed replaces its earlier rows;
* every non-blank data line of a file ends up either in ``raw.<source>`` or in
  ``quarantine.<source>`` (one row per physical line, with the reason and the line encrypted:
  unparsed, it may hold anything, whatever the feed), so
  ``rows_loaded + rows_quarantined = data_lines`` holds for every file and is recorded;
* a file that cannot be read at all raises :class:`IngestionError` naming the file and the problem,
  and the transaction is rolled back, leaving the warehouse as it was.

Nothing a file holds becomes SQL text (the trust boundary). The expected columns are read under
their names from the source spec; every other column ("extra") is read under a generated name,
``_extra_<position>``, whatever its header says, and its header text is kept as data only: the
key in ``_extra_columns``, the ledger's ``extra_columns``, and messages (escaped when it is not a
plain ``[a-z_][a-z0-9_]*`` name). Extras are kept for every feed: as JSON in ``_extra_columns``
for a feed without personal data, encrypted in the vault for a feed with personal data (per
customer for customers, per record ``_extra_columns@<file>:<line>`` for an event feed). A feed
without personal data refuses a file with an extra column named like an identifier of any feed
(``full_name``, ``email``, ``customer_id``…): the file fails alone, its values are stored nowhere.

One bad line costs that line: a line that is not UTF-8, holds a NUL or is longer than
``MAX_LINE_BYTES`` is quarantined with its reason (never its value: reasons name the column and
the kind of error). A file fails alone — never the rest of the load — when it is mostly not text
(re-export as UTF-8), has more than ``MAX_COLUMNS`` columns, or DuckDB cannot parse it at all.
CR-only (classic Mac) and mixed line endings are read from a normalised copy.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
import pandas as pd

from mlops_assets.faults import crash_point
from mlops_assets.ingestion.landing import (
    NotARegularFile,
    landing_files,
    partition_key_of,
    sha256_of,
)
from mlops_assets.ingestion.sources import (
    IDENTIFIER_COLUMNS,
    LINEAGE_COLUMNS,
    SOURCE_SPECS,
    SourceSpec,
    identifier_name,
)
from mlops_assets.security.keyring import Keyring, KeyringError
from mlops_assets.security.vault import (
    PII_TABLE,
    bind_keyring,
    encrypt_cells,
    seal_customer_pii,
    shred_erased_lines,
    write_sealed_pii,
)
from mlops_assets.sql import confine, glob_literal, ident, literal, qualified

# The header line must end within the first SNIFF_BYTES of a file.
SNIFF_BYTES = 256 * 1024
MAX_COLUMNS = 2_000
# A longer line is quarantined (DuckDB keeps its first 10,000 characters as the rejected line).
MAX_LINE_BYTES = 1 << 20
# A header name shown as it is in messages; any other is shown JSON-escaped.
PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# What ``str.strip()`` removes (the customer id's normalisation): a required value made only of
# these is empty.
BLANK_CHARS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# The vault cell of an event feed's record extras: ``_extra_columns@<file>:<line>``.
EXTRA_CELL = "_extra_columns@"
# The columns the loader writes to a quarantine table, named in its insert: erasure adds
# ``erased_at`` (security/vault.py) to the tables of feeds with personal data.
QUARANTINE_COLUMNS_SQL = (
    "source_file, line_number, reason, raw_line, raw_line_encrypted, key_version, quarantined_at"
)

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


def shown(name: str) -> str:
    """A header name for a message: as it is when plain, else JSON-escaped (quotes, control
    characters and non-ASCII letters visible, nothing a terminal or markdown acts on unquoted)."""
    return name if PLAIN_NAME.match(name) else json.dumps(name)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the raw, quarantine and audit tables if they do not exist (idempotent)."""
    for schema in ("raw", "quarantine", "audit"):
        con.execute(f"create schema if not exists {qualified(schema)}")
    for spec in SOURCE_SPECS.values():
        columns = {**spec.raw_columns, **LINEAGE_COLUMNS}
        ddl_sql = ", ".join(f"{ident(c)} {t}" for c, t in columns.items())
        con.execute(f"create table if not exists {qualified('raw', spec.name)} ({ddl_sql})")
        # A quarantined line is unparsed and may hold anything: raw_line_encrypted is set, for
        # every feed; raw_line stays null.
        con.execute(
            f"create table if not exists {qualified('quarantine', spec.name)} ("
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


def line_endings(path: Path) -> Literal["lf", "cr", "mixed"]:
    """How the file's lines end, from one streamed pass (1 MiB at a time, counted in C): ``lf``
    (LF or CRLF throughout: DuckDB reads the file as it is), ``cr`` (classic Mac, CR only) or
    ``mixed`` (CRLF and LF)."""
    lf = cr = crlf = 0
    previous_cr = False
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            lf += block.count(b"\n")
            cr += block.count(b"\r")
            crlf += block.count(b"\r\n") + (previous_cr and block.startswith(b"\n"))
            previous_cr = block.endswith(b"\r")
    if cr and not lf:
        return "cr"
    return "mixed" if 0 < crlf < lf else "lf"


@contextlib.contextmanager
def _readable(path: Path, scratch: Path | None) -> Iterator[Path]:
    """The file DuckDB reads: ``path`` itself, or for CR-only or mixed line endings a copy (in a
    temporary folder under ``scratch``) whose lines all end in LF. Strict CSV parsing refuses
    mixed endings; the copy keeps every line, so line numbers stay those of ``path``."""
    endings = line_endings(path)
    if endings == "lf":
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="mlops-ingest-", dir=scratch) as tmp:
        copy = Path(tmp) / path.name
        with open(path, "rb") as source, open(copy, "wb") as target:
            carry = b""
            for block in iter(lambda: source.read(1 << 20), b""):
                block = carry + block
                carry = b"\r" if block.endswith(b"\r") else b""  # a CRLF split by the block
                block = block[: len(block) - len(carry)].replace(b"\r\n", b"\n")
                target.write(block.replace(b"\r", b"\n") if endings == "cr" else block)
            target.write(b"\n" if carry and endings == "cr" else carry)
        yield copy


def _first_line(head: bytes) -> tuple[bytes, bool]:
    """The first line of ``head`` and whether it ended within ``head``."""
    end = re.search(rb"\r\n|\n|\r", head)
    return (head[: end.start()], True) if end else (head, False)


def read_header(path: Path, rel: str, spec: SourceSpec) -> list[str]:
    """Validate the header line; return the column names (stripped, lower-case) in file order."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head.strip():
        raise IngestionError(f"{rel}: file is empty — expected a CSV header and data lines")
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise IngestionError(f"{rel}: UTF-16 encoded — save the file as UTF-8")
    first_line, ended = _first_line(head)
    if b"\x00" in first_line:
        raise IngestionError(f"{rel}: binary content (NUL bytes) — not a CSV text file")
    if not ended and len(head) == SNIFF_BYTES:
        raise IngestionError(
            f"{rel}: the header line is longer than {SNIFF_BYTES // 1024} KiB — not a CSV header"
        )
    try:
        text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise IngestionError(f"{rel}: header is not UTF-8 text ({error.reason})") from None
    columns = [c.strip().lower() for c in next(csv.reader([text]))]
    if len(columns) > MAX_COLUMNS:
        raise IngestionError(
            f"{rel}: {len(columns)} columns — at most {MAX_COLUMNS} are accepted; nothing loaded"
        )
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
        raise IngestionError(f"{rel}: header repeats column(s) {', '.join(map(shown, duplicated))}")
    missing = [c for c in spec.columns if c not in columns]
    if missing:
        raise IngestionError(
            f"{rel}: missing required column(s) {', '.join(missing)} — "
            f"{spec.name} files need {', '.join(spec.columns)}"
        )
    return columns


def extra_names(rel: str, spec: SourceSpec, columns: list[str]) -> dict[str, str]:
    """The file's extra columns: header name -> the generated name DuckDB reads it under.

    A feed without personal data refuses an extra named like an identifier of any feed: its
    values would land in plaintext (``_extra_columns``)."""
    extras = {c: f"_extra_{i}" for i, c in enumerate(columns, 1) if c not in spec.columns}
    if not spec.has_personal_data:
        named = [c for c in extras if identifier_name(c) in IDENTIFIER_COLUMNS]
        if named:
            raise IngestionError(
                f"{rel}: column(s) {', '.join(map(shown, named))} named like personal data, "
                f"which {spec.name} files must not carry — remove them from the feed (they are "
                "stored nowhere); nothing loaded"
            )
    return extras


# What DuckDB raises about a file's content while its rows are written: that file fails, the
# load goes on. (While a file is parsed, every DuckDB error but STOPPING_ERRORS is the file's.)
FILE_CONTENT_ERRORS = (duckdb.InvalidInputException, duckdb.ConversionException, duckdb.IOException)
# What stops the load even while a file is parsed: the database or the process is in trouble.
STOPPING_ERRORS = (
    duckdb.FatalException,
    duckdb.InternalException,
    duckdb.ConnectionException,
    duckdb.TransactionException,
    duckdb.InterruptException,
)
# ... and DuckDB's IO errors that say the disk is full (spilling a large file), not the file.
OUT_OF_SPACE = ("No space left on device", "disk is full", "Disk quota exceeded")
# Errors reading a landing file itself (gone, unreadable): that file fails.
FILE_ACCESS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotARegularFile)


def _out_of_space(error: BaseException) -> bool:
    return any(phrase in str(error) for phrase in OUT_OF_SPACE)


def _duckdb_message(error: BaseException) -> str:
    """DuckDB's first line, without "Original Line" and without anything it quotes: a quoted
    value or line could hold personal data."""
    first = str(error).split("\n", 1)[0].split("Original Line", 1)[0].rstrip(" :")
    return re.sub(r"\"[^\"]*\"|'[^']*'", "…", first)


def ingest_file(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    path: Path,
    spec: SourceSpec,
    *,
    force: bool = False,
    keyring: Keyring | None = None,
    turn: contextlib.AbstractContextManager | None = None,
    scratch: Path | None = None,
) -> FileResult:
    """Load one landing file into ``raw.<source>`` exactly once; see the module docstring.

    The tables must exist (:func:`ensure_schema`). ``keyring`` is required (pseudonyms, vault,
    and the quarantined lines of every feed, stored encrypted). ``turn`` is held around the
    file's transaction (the parsing before it needs none): :func:`ingest_source` uses it to
    commit files in order.
    ``scratch`` is where a copy with normalised line endings may be written (default: the
    system's temporary folder)."""
    if keyring is None:
        raise KeyringError(f"{spec.name}: a keyring is required (quarantined lines are encrypted)")
    rel = path.relative_to(landing_dir).as_posix()
    partition_key = partition_key_of(path)
    try:
        sha = sha256_of(path)
    except FILE_ACCESS_ERRORS as error:
        raise IngestionError(f"{rel}: cannot be read ({error.strerror}) — nothing loaded") from None
    row = con.execute("select sha256 from audit.ingested_files where path = ?", [rel]).fetchone()
    known = row[0] if row else None
    if known == sha and not force:
        return FileResult(rel, spec.name, "unchanged", partition_key)
    if partition_key is None:
        raise IngestionError(f"{rel}: file name must be YYYY-MM-DD.csv (the landing date)")
    try:
        columns = read_header(path, rel, spec)
        extras = extra_names(rel, spec, columns)
        # Parse into temporary tables first; the warehouse is touched only in the transaction.
        counts = _parse(con, rel, path, spec, columns, extras, scratch)
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
        sealed = _seal(con, rel, spec, keyring, extras)
        crash_point("ingest.staged")
        with turn or contextlib.nullcontext():
            con.execute("begin transaction")
            try:
                _replace_rows(con, rel, spec, extras, sealed, replacing=known is not None)
                crash_point("ingest.in_transaction")
                con.execute(
                    "insert or replace into audit.ingested_files "
                    "values (?, ?, ?, ?, ?, ?, ?, ?, now())",
                    [rel, spec.name, sha, *counts, list(extras), partition_key],
                )
                con.execute("commit")
            except BaseException:
                con.execute("rollback")
                raise
            crash_point("ingest.committed")
    except FILE_CONTENT_ERRORS as error:
        # What DuckDB says about the file's content: that file fails, nothing else.
        if _out_of_space(error):
            raise
        raise IngestionError(
            f"{rel}: could not be read as CSV — {_duckdb_message(error)}"
        ) from error
    except FILE_ACCESS_ERRORS as error:
        raise IngestionError(f"{rel}: cannot be read ({error.strerror}) — nothing loaded") from None
    finally:
        for table in STAGING_TABLES:
            con.execute(f"drop table if exists {qualified('temp', table)}")
    return FileResult(
        rel,
        spec.name,
        "replaced" if known else "loaded",
        partition_key,
        data_lines=counts[0],
        rows_loaded=counts[1],
        rows_quarantined=counts[2],
        extra_columns=tuple(extras),
    )


def _parse(
    con: duckdb.DuckDBPyConnection,
    rel: str,
    path: Path,
    spec: SourceSpec,
    columns: list[str],
    extras: dict[str, str],
    scratch: Path | None,
) -> tuple[int, int, int]:
    """:func:`_stage` the file; any DuckDB error while parsing it is the file's (it fails
    alone), except :data:`STOPPING_ERRORS`."""
    try:
        with _readable(path, scratch) as file:
            return _stage(con, rel, file, spec, columns, extras)
    except STOPPING_ERRORS:
        raise
    except duckdb.Error as error:
        if _out_of_space(error):
            raise
        raise IngestionError(
            f"{rel}: could not be read as CSV — {_duckdb_message(error)}"
        ) from error


STAGING_TABLES = (
    "_physical",
    "_line_rejects",
    "_line_reject_scans",
    "_lines",
    "_records",
    "_rejects",
    "_keys",
    "_reject_scans",
    "_quarantine",
    "_free",
    "_placed",
)


def _reject_reason_sql(spec: SourceSpec) -> str:
    """Why the CSV reader rejected a record, from the kind of error and the column only (never
    DuckDB's message, which quotes the value): 'amount: not a valid double'."""
    kinds_sql = " ".join(
        f"when column_name = {literal(c)} then {literal(t.lower())}"
        for c, t in spec.columns.items()
        if t != "VARCHAR"
    )
    return f"""
        case error_type
            when 'CAST' then column_name || ': not a valid '
                || case when false then null {kinds_sql} else 'value' end
            when 'INVALID ENCODING' then 'not UTF-8 text'
            when 'LINE SIZE OVER MAXIMUM' then {literal(f"longer than {MAX_LINE_BYTES} bytes")}
            else lower(error_type)
        end
    """


def _stage(
    con: duckdb.DuckDBPyConnection,
    rel: str,
    file: Path,
    spec: SourceSpec,
    columns: list[str],
    extras: dict[str, str],
) -> tuple[int, int, int]:
    """Parse the file into temporary tables: ``_placed`` (readable records with their line) and
    ``_quarantine`` (one row per rejected physical line). Return (lines, loaded, quarantined)."""
    names = [extras.get(c, c) for c in columns]  # what DuckDB reads each column as, file order
    labels = {name: shown(c) for c, name in extras.items()}  # how a reason names an extra
    types_sql = ", ".join(f"{literal(n)}: {literal(spec.columns.get(n, 'VARCHAR'))}" for n in names)
    data_lines, not_text = _read_lines(con, file)
    if not_text and not_text * 2 > data_lines:
        raise IngestionError(
            f"{rel}: {not_text} of {data_lines} lines are not UTF-8 text — re-export the file as "
            "UTF-8; nothing loaded"
        )
    _read_records(con, file, types_sql)
    # Each rejected record covers one or more data lines (a quoted line break, an unterminated
    # quote); every covered line is quarantined with the record's reasons. DuckDB's ``line``
    # counts records, not lines, once a value held a line break: a record is placed by its
    # byte position instead (:func:`_lines_at`), on the first data line from there on (blank
    # lines before a record are part of its text to DuckDB), and covers the data lines it spans.
    positions = [
        p for (p,) in con.execute("select distinct line_byte_position from _rejects").fetchall()
    ]
    con.register(
        "_reject_positions",
        pd.DataFrame({"position": positions, "line_number": _lines_at(file, positions)}),
    )
    try:
        con.execute(
            f"""
            create or replace temp table _quarantine as
            with rejected as (
                select line_byte_position as position,
                    string_agg(distinct reason, '; ' order by reason) as reason,
                    max(len(list_filter(string_split(csv_line, chr(10)),
                        lambda x: trim(x, chr(13) || ' ') <> ''))) as span
                from (select *, {_reject_reason_sql(spec)} as reason from _rejects)
                group by line_byte_position
            ),
            ordered as (
                select *, row_number() over (order by line_number) as ordinal from _lines
            ),
            started as (  -- a record of blanks (a line of spaces) is no data line
                select r.reason, coalesce(r.span, 1) as span, o.ordinal
                from rejected r join _reject_positions p using (position)
                asof join ordered o on o.line_number >= p.line_number
                where coalesce(r.span, 1) > 0
            )
            select l.line_number, any_value(s.reason order by s.ordinal) as reason,
                any_value(l.raw_line) as raw_line
            from started s join ordered l
              on l.ordinal between s.ordinal and s.ordinal + s.span - 1
            group by l.line_number
            """
        )
    finally:
        con.unregister("_reject_positions")
    con.execute(
        """
        create or replace temp table _free as
        select line_number, raw_line, row_number() over (order by line_number) as slot
        from _lines where line_number not in (select line_number from _quarantine)
        """
    )
    # Place readable records on the lines nobody else claimed: record k starts on the next free
    # line after the data lines records 1..k-1 spanned (a quoted value may contain a line break;
    # a blank line inside a value is no data line).
    # Expressions over all columns are flat (one function of n arguments): a chain of n
    # operators would exceed DuckDB's expression depth at a few thousand columns.
    text = [n for n in names if spec.columns.get(n, "VARCHAR") == "VARCHAR"]
    joined_sql = "concat_ws('', " + ", ".join(ident(n) for n in text) + ")"
    blank_inside_sql = (
        "list_sum(["
        + ", ".join(
            f"len(list_filter(string_split({ident(n)}, chr(10))[2:-2], "
            "lambda x: trim(x, chr(13) || ' ') = ''))"
            for n in text
        )
        + "])"
    )
    problems_sql = ", ".join(
        [
            f"case when {ident(c)} is null"
            + (
                f" or trim({ident(c)}, {literal(BLANK_CHARS)}) = ''"
                if spec.columns[c] == "VARCHAR"
                else ""
            )
            + f" then {literal(f'{c} is empty')} end"
            for c in spec.required_values
        ]
        + [
            f"case when contains({ident(n)}, chr(10)) then "
            f"{literal('line break inside the value of ' + labels.get(n, n))} end"
            for n in text
        ]
        + [
            f"case when contains({ident(n)}, chr(0)) then "
            f"{literal('NUL character in the value of ' + labels.get(n, n))} end"
            for n in text
        ]
    )
    con.execute(
        f"""
        create or replace temp table _placed as
        with records as (
            select *, rowid as _record,
                   case when contains({joined_sql}, chr(10))
                        then 1 + len({joined_sql}) - len(replace({joined_sql}, chr(10), ''))
                             - {blank_inside_sql}
                        else 1 end as _span,
                   nullif(concat_ws('; ', {problems_sql}), '') as _problem
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
        data_lines,
        con.execute("select count(*) from _placed where _problem is null").fetchone()[0],
        con.execute("select count(*) from _quarantine").fetchone()[0],
    )


def _lines_at(file: Path, positions: list[int]) -> np.ndarray:
    """The physical line (1-based) of each of DuckDB's ``line_byte_position``: one plus the
    line breaks before it. The position is 1-based, of the first byte after the previous
    record's line break (of the LF of a CRLF: DuckDB ends a line at its CR), so the breaks at
    0-based offsets below it come before; blank lines may follow before the record's text. One
    streamed pass, the breaks found and counted by numpy."""
    wanted = np.asarray(positions, dtype=np.int64)
    before = np.zeros(len(wanted), dtype=np.int64)
    if not positions:
        return before
    offset = 0
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            breaks = np.flatnonzero(np.frombuffer(block, np.uint8) == ord("\n")) + offset
            before += np.searchsorted(breaks, wanted, side="left")
            offset += len(block)
    return before + 1


def _read_lines(con: duckdb.DuckDBPyConnection, file: Path) -> tuple[int, int]:
    """The file's data lines (not the header, not blank) with their numbers into ``_lines``: the
    unit of accounting. Return (data lines, lines that are not text: not UTF-8 or with a NUL).

    DuckDB reads each line as one unquoted field, in C and streamed. A line that is not UTF-8
    or longer than ``MAX_LINE_BYTES`` is a reject of that read, kept with DuckDB's copy of it
    ('?' for bytes that are not UTF-8, the first 10,000 characters of a long line); a line with
    the separator (U+0001) is a reject kept whole. Rows keep the file's order, so the k-th row
    is on the k-th line number that is not a reject."""
    for table in ("_line_rejects", "_line_reject_scans"):
        con.execute(f"drop table if exists {qualified('temp', table)}")
    con.execute(
        f"""
        create or replace temp table _physical as select raw_line from read_csv(
            {literal(glob_literal(file))}, header = false, auto_detect = false, delim = chr(1),
            quote = '', escape = '', strict_mode = true, columns = {{'raw_line': 'VARCHAR'}},
            max_line_size = {int(MAX_LINE_BYTES)}, store_rejects = true,
            rejects_table = '_line_rejects', rejects_scan = '_line_reject_scans')
        """
    )
    con.execute(
        """
        create or replace temp table _lines as
        with rejected as (
            select line as line_number, trim(any_value(csv_line), chr(10) || chr(13)) as raw_line,
                   bool_or(error_type = 'INVALID ENCODING') as not_utf8
            from _line_rejects group by line
        ),
        numbered as (
            select n as line_number, row_number() over (order by n) - 1 as k
            from range(1, 1 + (select count(*) from _physical)
                             + (select count(*) from rejected)) as t(n)
            where n not in (select line_number from rejected)
        ),
        lines as (
            select n.line_number, p.raw_line, false as not_utf8
            from numbered n join (select rowid as k, raw_line from _physical) p using (k)
            union all
            select line_number, raw_line, not_utf8 from rejected
        )
        select line_number, raw_line, not_utf8 or contains(raw_line, chr(0)) as not_text
        from lines
        where line_number > 1 and trim(coalesce(raw_line, ''), chr(13) || ' ') <> ''
        """
    )
    return con.execute("select count(*), count(*) filter (where not_text) from _lines").fetchone()


@dataclass
class _Sealed:
    """A file's vault cells (feeds with personal data) and quarantined lines, encrypted."""

    pii: pd.DataFrame | None
    quarantine: pd.DataFrame


def _extra_json_sql(extras: dict[str, str]) -> str:
    """SQL for the extra columns of a record as one JSON object keyed by their header names
    (null without any)."""
    if not extras:
        return "null"
    return (
        "json_object("
        + ", ".join(f"{literal(header)}, {ident(name)}" for header, name in extras.items())
        + ")"
    )


def _replace_rows(
    con: duckdb.DuckDBPyConnection,
    rel: str,
    spec: SourceSpec,
    extras: dict[str, str],
    sealed: _Sealed,
    *,
    replacing: bool = False,
) -> None:
    """Inside the caller's transaction: swap the file's earlier rows for the staged ones.

    Quarantined lines are written only as ciphertext; for a source with personal data, only
    pseudonyms and generalised values are written to raw, identifiers only as ciphertext
    (``sealed``, made from the in-memory staging tables by :func:`_seal`).
    """
    raw_sql, quarantine_sql = qualified("raw", spec.name), qualified("quarantine", spec.name)
    con.execute(f"delete from {raw_sql} where _source_file = ?", [rel])
    con.execute(f"delete from {quarantine_sql} where source_file = ?", [rel])
    if replacing and spec.pseudonymise and not spec.identifiers:
        # The earlier version's record extras (their lines may have moved).
        con.execute(f"delete from {PII_TABLE} where starts_with(column_name, ?)", [_cell(rel, "")])
    con.register("_sealed_lines", sealed.quarantine)
    try:
        con.execute(
            f"""
            insert into {quarantine_sql} ({QUARANTINE_COLUMNS_SQL})
            select ?, line_number, reason, null, ciphertext, key_version, now()
            from _sealed_lines order by line_number
            """,
            [rel],
        )
    finally:
        con.unregister("_sealed_lines")
    if sealed.pii is not None:
        write_sealed_pii(con, sealed.pii)
    # Unknown columns of a personal-data feed may identify: they go to the vault instead.
    extra_json_sql = "null" if spec.has_personal_data else _extra_json_sql(extras)
    key_join_sql = "join _keys using (_record)" if spec.pseudonymise else ""
    values_sql = ", ".join(
        spec.generalised[c][1] if c in spec.generalised else ident(c) for c in spec.raw_columns
    )
    target_sql = ", ".join(ident(c) for c in [*spec.raw_columns, *LINEAGE_COLUMNS])
    con.execute(
        f"""
        insert into {raw_sql} ({target_sql})
        select {values_sql}, {extra_json_sql}, ?, _line_number, now()
        from _placed {key_join_sql} where _problem is null order by _record
        """,
        [rel],
    )


def _seal(
    con: duckdb.DuckDBPyConnection,
    rel: str,
    spec: SourceSpec,
    keyring: Keyring,
    extras: dict[str, str],
) -> _Sealed:
    """Quarantined lines encrypted (of every feed: an unparsed line may hold anything); for a
    feed with personal data also pseudonyms into ``_keys`` (temp) and identifiers and extra
    columns encrypted.

    A feed with identifiers (one row per customer) keeps a customer's extras as one vault cell
    beside their identifiers, the latest winning like theirs; an event feed keeps each
    record's extras as a cell of its customer named by the record's line (:func:`_cell`)."""
    pii = None
    if spec.pseudonymise:
        selected_sql = ", ".join(ident(c) for c in [spec.pseudonymise, *spec.identifiers])
        frame = con.execute(
            f"select _record, _line_number, {selected_sql}, "
            f"{_extra_json_sql(extras)} as _extra_columns "
            "from _placed where _problem is null order by _record"
        ).df()
        # One HMAC per id: pseudonyms are per value by nature (hashlib does the work in C).
        frame["customer_key"] = [keyring.pseudonym(v) for v in frame[spec.pseudonymise]]
        con.register("_keys_frame", frame[["_record", "customer_key"]])
        con.execute("create or replace temp table _keys as select * from _keys_frame")
        con.unregister("_keys_frame")
        if spec.identifiers:
            pii = seal_customer_pii(keyring, frame, [*spec.identifiers, "_extra_columns"])
        elif extras:
            pii = encrypt_cells(
                keyring,
                PII_TABLE,
                frame["customer_key"].tolist(),
                [_cell(rel, int(line)) for line in frame["_line_number"]],
                frame["_extra_columns"].tolist(),
            )
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


def _cell(rel: str, line: int | str) -> str:
    """The vault column of an event feed's record extras: ``_extra_columns@<file>:<line>``."""
    return f"{EXTRA_CELL}{rel}:{line}"


def _read_records(con: duckdb.DuckDBPyConnection, file: Path, types_sql: str) -> None:
    """Read the file's records into ``_records``; unreadable ones land in ``_rejects``.

    The reader runs in strict mode, so a line with too many fields is rejected rather than cut
    (the file's line endings are uniform: see :func:`_readable`)."""
    for table in ("_rejects", "_reject_scans"):
        con.execute(f"drop table if exists {qualified('temp', table)}")
    # A table keeps the reader's order, so rowid is the record's position in the file.
    con.execute(
        f"""
        create or replace temp table _records as select * from read_csv(
            {literal(glob_literal(file))},
            header = true, auto_detect = false, delim = ',', quote = '"', escape = '"',
            strict_mode = true, columns = {{{types_sql}}}, max_line_size = {int(MAX_LINE_BYTES)},
            store_rejects = true, rejects_table = '_rejects', rejects_scan = '_reject_scans')
        """
    )


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
            files_fault = isinstance(error, (IngestionError, _Abandoned, *FILE_CONTENT_ERRORS))
            if not files_fault or _out_of_space(error):
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
    confined: bool = False,
) -> SourceResult:
    """Ingest every new or changed file of ``source``; a bad file fails alone, the rest go on.

    Files are pipelined: while one file's transaction commits, the next is parsed on another
    connection (DuckDB runs both at once). Transactions still run one at a time and in file
    order, so a later file's rows (and vault entries) win exactly as in a sequential load.
    An error other than a bad file (the warehouse lost, the disk full) stops the load: files
    after it are not committed.

    ``confined``: before any file is read, the database of ``con`` loses access to every file
    but the source's landing folder and this load's scratch folder, for good (``sql.confine``:
    SQL that slipped through could not read the keyring or write a file). Only for a
    connection opened for this load, as the Dagster step does: it affects every connection of
    this process to the same database until all are closed.

    A missing or wrong keyring fails the whole source before anything is written."""
    spec = SOURCE_SPECS[source]
    ensure_schema(con)
    if keyring is None:
        raise KeyringError(f"{source}: a keyring is required (quarantined lines are encrypted)")
    bind_keyring(con, keyring)
    with tempfile.TemporaryDirectory(prefix="mlops-ingest-") as scratch:
        if confined:
            confine(con, [str(Path(landing_dir) / source), scratch])
        result = _ingest_files(
            con, landing_dir, spec, partition_keys, force, keyring, Path(scratch)
        )
    # A customer erased before stays erased in the quarantine too (of any feed).
    shred_erased_lines(con, keyring, source)
    return result


def _ingest_files(
    con: duckdb.DuckDBPyConnection,
    landing_dir: Path,
    spec: SourceSpec,
    partition_keys: Iterable[str] | None,
    force: bool,
    keyring: Keyring | None,
    scratch: Path,
) -> SourceResult:
    source = spec.name
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
                scratch=scratch,
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
        with raw_rows as (
            select _source_file as path, count(*) as n from {qualified("raw", source)} group by 1
        ),
        quarantined as (
            select source_file as path, count(*) as n
            from {qualified("quarantine", source)} group by 1
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
