"""Staging and line accounting: a landing file parsed into temporary tables, every data line
accounted for before anything is written to the warehouse.

The unit of accounting is the physical data line (not the header, not blank): each ends up
either in ``_placed`` (a readable record with its line number; a record may span lines through
quoted line breaks) or in ``_quarantine`` (one row per physical line, with the reason — the
column and the kind of error, never the value), so ``loaded + quarantined = data lines``.

One bad line costs that line: a line that is not UTF-8, holds a NUL or is longer than
``MAX_LINE_BYTES`` is quarantined with its reason. A file fails alone when it is mostly not
text (re-export as UTF-8) or DuckDB cannot parse it at all. Every expected column is read under
its declared name and type, every extra under its generated name (:func:`files.extra_names`):
nothing a file holds becomes SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from mlops_assets.ingestion.files import (
    STOPPING_ERRORS,
    IngestionError,
    changed_message,
    duckdb_message,
    out_of_space,
    readable,
    shown,
)
from mlops_assets.ingestion.lines import LineIndex, index_lines
from mlops_assets.ingestion.sources import SourceSpec
from mlops_assets.sql import glob_literal, ident, literal, qualified

# A longer line is quarantined (DuckDB keeps its first 10,000 characters as the rejected line).
MAX_LINE_BYTES = 1 << 20
# What ``str.strip()`` removes (the customer id's normalisation): a required value made only of
# these is empty.
BLANK_CHARS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# The same test as a pattern: DuckDB's trim() with a set of 30 characters costs ~5 us a value,
# a regular expression (RE2) a twentieth of that.
BLANK_PATTERN = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in BLANK_CHARS) + "]*"


@dataclass
class Staged:
    """A parsed file: its counts, its records' line numbers and whether each is loaded (in
    ``records``, one row per record of ``_records``, in order) and its quarantined lines as
    (line number, reason, text)."""

    data_lines: int
    loaded: int
    quarantine: list[tuple[int, str, str]]
    records: pa.Table  # _line_number (null: no line left for it), _good

    @property
    def quarantined(self) -> int:
        return len(self.quarantine)


def parse(
    con: duckdb.DuckDBPyConnection,
    rel: str,
    path: Path,
    sha: str,
    spec: SourceSpec,
    columns: list[str],
    extras: dict[str, str],
    scratch: Path | None,
) -> Staged:
    """Index the file's lines (:func:`~.lines.index_lines`, which must find the content
    ``sha``) and :func:`stage` it; any DuckDB error while parsing it is the file's (it fails
    alone), except :data:`STOPPING_ERRORS`."""
    try:
        index = index_lines(path)
        if index.sha256 != sha:
            raise IngestionError(changed_message(rel))
        with readable(path, scratch, index.endings) as file:
            if file != path:  # a copy with every line ending in LF: same lines, same numbers
                index = index_lines(file)
            return stage(con, rel, file, index, spec, columns, extras)
    except STOPPING_ERRORS:
        raise
    except duckdb.Error as error:
        if out_of_space(error):
            raise
        raise IngestionError(
            f"{rel}: could not be read as CSV — {duckdb_message(error)}"
        ) from error


STAGING_TABLES = ("_records", "_rejects", "_reject_scans")


def _reject_reason(spec: SourceSpec, error_type: str, column: str | None) -> str:
    """Why the CSV reader rejected a record, from the kind of error and the column only (never
    DuckDB's message, which quotes the value): 'amount: not a valid double'."""
    if error_type == "CAST" and column is not None:
        kind = spec.columns.get(column, "VARCHAR")
        return f"{column}: not a valid {'value' if kind == 'VARCHAR' else kind.lower()}"
    if error_type == "INVALID ENCODING":
        return "not UTF-8 text"
    if error_type == "LINE SIZE OVER MAXIMUM":
        return f"longer than {MAX_LINE_BYTES} bytes"
    return error_type.lower()


def _non_blank_lines(text: str) -> int:
    """The lines of ``text`` holding more than spaces and CRs."""
    return sum(1 for line in text.split("\n") if line.strip("\r "))


def _rejected_records(
    con: duckdb.DuckDBPyConnection, spec: SourceSpec
) -> list[tuple[int, str, int | None]]:
    """The records DuckDB rejected as (line_byte_position, reasons, data lines spanned): every
    error of a record is a row of ``_rejects`` at its position (the reasons are joined, sorted);
    its span is the non-blank lines of DuckDB's copy of it (None: no copy)."""
    reasons: dict[int, set[str]] = {}
    spans: dict[int, int | None] = {}
    for position, error_type, column, line in con.execute(
        "select line_byte_position, error_type, column_name, csv_line from _rejects"
    ).fetchall():
        reasons.setdefault(position, set()).add(_reject_reason(spec, error_type, column))
        span = None if line is None else _non_blank_lines(line)
        earlier = spans.get(position)
        spans[position] = span if earlier is None else max(earlier, span or 0)
    return [(p, "; ".join(sorted(r)), spans[p]) for p, r in reasons.items()]


def _odd_records(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    names: list[str],
    labels: dict[str, str],
    *,
    may_span: bool = True,
    may_hold_nul: bool = True,
) -> list[tuple[int, int, str | None]]:
    """The records of ``_records`` that are not one readable line each, as (rowid, data lines
    spanned, problem or None). A quoted value may contain a line break (a blank line inside a
    value is no data line); a required value may be empty (only what ``str.strip`` removes);
    a value may hold a NUL. DuckDB finds the few such records with a plain filter (cheap to
    plan); Python says what is wrong with them. Expressions over all columns are flat (one
    function of n arguments): a chain of n operators would exceed DuckDB's expression depth
    at a few thousand columns.

    Every value is searched only when one may hold a line break (``may_span``) or a NUL
    (``may_hold_nul``); else only the required values are looked at (most of the query's
    time is joining and searching every text value)."""
    text = [n for n in names if spec.columns.get(n, "VARCHAR") == "VARCHAR"]
    odd_chars = ("\\n" if may_span else "") + ("\\x00" if may_hold_nul else "")
    if not text or not odd_chars:
        text = []
    # concat_ws takes at least one value: a feed of typed columns only has no text to search.
    joined_sql = "concat_ws('', " + ", ".join(ident(n) for n in text) + ")" if text else "''"
    empty_sql = ", ".join(
        f"{ident(c)} is null"
        + (
            f" or regexp_full_match({ident(c)}, {literal(BLANK_PATTERN)})"
            if spec.columns[c] == "VARCHAR"
            else ""
        )
        for c in spec.required_values
    )
    conditions_sql = [f"list_contains([{empty_sql}], true)"] if spec.required_values else []
    if text:
        conditions_sql.append(f"regexp_matches({joined_sql}, {literal(f'[{odd_chars}]')})")
    if not conditions_sql:
        return []
    selected = list(dict.fromkeys([*spec.required_values, *text]))
    selected_sql = ", ".join(ident(n) for n in selected)
    where_sql = " or ".join(conditions_sql)
    rows = con.execute(
        f"select rowid, {selected_sql} from _records where {where_sql} order by rowid"
    ).fetchall()
    odd = []
    for rowid, *values in rows:
        value = dict(zip(selected, values, strict=True))
        problems = [
            f"{c} is empty"
            for c in spec.required_values
            if value[c] is None or (spec.columns[c] == "VARCHAR" and not value[c].strip())
        ]
        span = 1
        for n in text:
            if value[n] is not None and "\n" in value[n]:
                parts = value[n].split("\n")
                span += len(parts) - 1 - sum(1 for part in parts[1:-1] if not part.strip("\r "))
                problems.append(f"line break inside the value of {labels.get(n, n)}")
        problems += [
            f"NUL character in the value of {labels.get(n, n)}"
            for n in text
            if value[n] is not None and "\0" in value[n]
        ]
        odd.append((rowid, span, "; ".join(problems) or None))
    return odd


def stage(
    con: duckdb.DuckDBPyConnection,
    rel: str,
    file: Path,
    index: LineIndex,
    spec: SourceSpec,
    columns: list[str],
    extras: dict[str, str],
) -> Staged:
    """Read the file's records into ``_records`` and account for every data line of
    ``index``: each is a readable record's or quarantined with its reason."""
    names = [extras.get(c, c) for c in columns]  # what DuckDB reads each column as, file order
    labels = {name: shown(c) for c, name in extras.items()}  # how a reason names an extra
    types_sql = ", ".join(f"{literal(n)}: {literal(spec.columns.get(n, 'VARCHAR'))}" for n in names)
    data = index.data_lines
    if index.not_text and index.not_text * 2 > len(data):
        raise IngestionError(
            f"{rel}: {index.not_text} of {len(data)} lines are not UTF-8 text — re-export the "
            "file as UTF-8; nothing loaded"
        )
    records = read_records(con, file, types_sql)
    # Each rejected record covers one or more data lines (a quoted line break, an unterminated
    # quote); every covered line is quarantined with the record's reasons. DuckDB's ``line``
    # counts records, not lines, once a value held a line break: a record is placed by its
    # byte position instead (``index.lines_at``), on the first data line from there on (blank
    # lines before a record are part of its text to DuckDB), and covers the data lines it spans.
    rejected = _rejected_records(con, spec)
    reasons: dict[int, str] = {}  # data line -> reason
    if rejected:
        firsts = np.searchsorted(data, index.lines_at([p for p, _, _ in rejected]), side="left")
        started = sorted(
            (int(first), reason, 1 if span is None else span)
            for first, (_, reason, span) in zip(firsts, rejected, strict=True)
            if span is None or span > 0  # a record of blanks (a line of spaces) is no data line
        )
        for first, reason, span in started:  # the earliest record's reason wins
            for line in data[first : first + span].tolist():
                reasons.setdefault(line, reason)
    free = data[~np.isin(data, np.fromiter(reasons, np.int64, len(reasons)))] if reasons else data
    # Place readable records on the lines nobody else claimed: record k starts on the next free
    # line after the data lines records 1..k-1 spanned.
    spans = np.ones(records, np.int64)
    good = np.ones(records, bool)
    # A value with a line break spans two data lines or more (its closing quote is on the last
    # one): with a free line for every record, none has one. A value may hold a NUL only if a
    # data line does.
    problems = _odd_records(
        con,
        spec,
        names,
        labels,
        may_span=len(free) != records,
        may_hold_nul=index.not_text > 0,
    )
    for rowid, span, _ in problems:
        spans[rowid] = span
    slots = np.cumsum(spans) - spans
    for rowid, _, problem in problems:
        if problem is not None:
            good[rowid] = False
            for line in free[slots[rowid] : slots[rowid] + spans[rowid]].tolist():
                reasons[line] = problem
    placed = slots < len(free)  # else no data line is left for the record: the file fails
    on_line = free[np.minimum(slots, len(free) - 1)] if len(free) else np.zeros(records, np.int64)
    line_numbers = pa.array(on_line, pa.int64(), mask=~placed)
    quarantined = sorted(reasons)
    return Staged(
        data_lines=len(data),
        loaded=int(np.count_nonzero(good)),
        quarantine=list(
            zip(
                quarantined,
                [reasons[n] for n in quarantined],
                index.texts(file, quarantined),
                strict=True,
            )
        ),
        records=pa.table({"_line_number": line_numbers, "_good": pa.array(good)}),
    )


def extra_json_sql(extras: dict[str, str]) -> str:
    """SQL for the extra columns of a record as one JSON object keyed by their header names
    (null without any)."""
    if not extras:
        return "null"
    return (
        "json_object("
        + ", ".join(f"{literal(header)}, {ident(name)}" for header, name in extras.items())
        + ")"
    )


def read_records(con: duckdb.DuckDBPyConnection, file: Path, types_sql: str) -> int:
    """Read the file's records into ``_records`` (a table keeps the reader's order, so rowid is
    the record's position in the file); unreadable ones land in ``_rejects``. Return the
    records read.

    The reader runs in strict mode, so a line with too many fields is rejected rather than cut
    (the file's line endings are uniform: see :func:`files.readable`)."""
    [(count,)] = con.execute(
        f"""
        create or replace temp table _records as select * from read_csv(
            {literal(glob_literal(file))},
            header = true, auto_detect = false, delim = ',', quote = '"', escape = '"',
            strict_mode = true, columns = {{{types_sql}}}, max_line_size = {int(MAX_LINE_BYTES)},
            store_rejects = true, rejects_table = '_rejects', rejects_scan = '_reject_scans')
        """
    ).fetchall()
    return count


def drop_staging(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the file's temporary tables (after its commit, or its failure)."""
    for table in STAGING_TABLES:
        con.execute(f"drop table if exists {qualified('temp', table)}")
