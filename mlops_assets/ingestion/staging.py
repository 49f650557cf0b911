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

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from mlops_assets.ingestion.files import (
    STOPPING_ERRORS,
    IngestionError,
    duckdb_message,
    out_of_space,
    readable,
    shown,
)
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


def parse(
    con: duckdb.DuckDBPyConnection,
    rel: str,
    path: Path,
    spec: SourceSpec,
    columns: list[str],
    extras: dict[str, str],
    scratch: Path | None,
) -> tuple[int, int, int]:
    """:func:`stage` the file; any DuckDB error while parsing it is the file's (it fails
    alone), except :data:`STOPPING_ERRORS`."""
    try:
        with readable(path, scratch) as file:
            return stage(con, rel, file, spec, columns, extras)
    except STOPPING_ERRORS:
        raise
    except duckdb.Error as error:
        if out_of_space(error):
            raise
        raise IngestionError(
            f"{rel}: could not be read as CSV — {duckdb_message(error)}"
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


def stage(
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
    read_records(con, file, types_sql)
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
                f" or regexp_full_match({ident(c)}, {literal(BLANK_PATTERN)})"
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


def read_records(con: duckdb.DuckDBPyConnection, file: Path, types_sql: str) -> None:
    """Read the file's records into ``_records``; unreadable ones land in ``_rejects``.

    The reader runs in strict mode, so a line with too many fields is rejected rather than cut
    (the file's line endings are uniform: see :func:`files.readable`)."""
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


def drop_staging(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the file's temporary tables (after its commit, or its failure)."""
    for table in STAGING_TABLES:
        con.execute(f"drop table if exists {qualified('temp', table)}")
