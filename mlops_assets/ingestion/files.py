"""File checks: what a landing file must be before its lines are read — CSV text with a header
naming every column of its feed — and which errors are the file's (it fails alone) or the
load's (it stops).

A file fails alone when it is empty, UTF-16, binary, has a header line longer than
``SNIFF_BYTES``, fewer than two or more than ``MAX_COLUMNS`` columns, an empty or repeated
column name, misses a column of its feed, or (a feed without personal data) has an extra column
named like an identifier of any feed. Header names are data, never SQL: every extra column is
read under a generated name (:func:`extra_names`), and shown in messages only through
:func:`shown`. CR-only (classic Mac) and mixed line endings are read from a normalised copy
(:func:`readable`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import duckdb

from mlops_assets.ingestion.landing import NotARegularFile, sha256_of
from mlops_assets.ingestion.sources import SourceSpec, identifier_name

# The header line must end within the first SNIFF_BYTES of a file.
SNIFF_BYTES = 256 * 1024
MAX_COLUMNS = 2_000
# A header name shown as it is in messages; any other is shown JSON-escaped.
PLAIN_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class IngestionError(Exception):
    """A whole file could not be ingested; the message starts with the file's landing path."""


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


def out_of_space(error: BaseException) -> bool:
    return any(phrase in str(error) for phrase in OUT_OF_SPACE)


def duckdb_message(error: BaseException) -> str:
    """DuckDB's first line, without "Original Line" and without anything it quotes: a quoted
    value or line could hold personal data."""
    first = str(error).split("\n", 1)[0].split("Original Line", 1)[0].rstrip(" :")
    return re.sub(r"\"[^\"]*\"|'[^']*'", "…", first)


def shown(name: str) -> str:
    """A header name for a message: as it is when plain, else JSON-escaped (quotes, control
    characters and non-ASCII letters visible, nothing a terminal or markdown acts on unquoted)."""
    return name if PLAIN_NAME.match(name) else json.dumps(name)


def changed_message(rel: str) -> str:
    return (
        f"{rel}: changed or removed while it was being read — nothing loaded; the file as it "
        "is then is loaded on the next run"
    )


def changed_since(path: Path, sha: str) -> bool:
    """Whether the file's content is no longer ``sha`` (or the file is gone)."""
    try:
        return sha256_of(path) != sha
    except FileNotFoundError:
        return True


@contextlib.contextmanager
def readable(
    path: Path, scratch: Path | None, endings: Literal["lf", "cr", "mixed"]
) -> Iterator[Path]:
    """The file DuckDB reads: ``path`` itself, or for CR-only or mixed line ``endings`` (from
    :func:`~.lines.index_lines`: ``lf`` is LF or CRLF throughout, ``cr`` classic Mac, ``mixed``
    CRLF and LF) a copy (in a temporary folder under ``scratch``) whose lines all end in LF.
    Strict CSV parsing refuses mixed endings; the copy keeps every line, so line numbers stay
    those of ``path``."""
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


def extra_names(
    rel: str, spec: SourceSpec, columns: list[str], identifier_names: frozenset[str]
) -> dict[str, str]:
    """The file's extra columns: header name -> the generated name DuckDB reads it under.

    A feed without personal data refuses an extra named like an identifier of any feed
    (``identifier_names``, :func:`~mlops_assets.ingestion.sources.identifier_names`): its values
    would land in plaintext (``_extra_columns``)."""
    extras = {c: f"_extra_{i}" for i, c in enumerate(columns, 1) if c not in spec.columns}
    if not spec.has_personal_data:
        named = [c for c in extras if identifier_name(c) in identifier_names]
        if named:
            raise IngestionError(
                f"{rel}: column(s) {', '.join(map(shown, named))} named like personal data, "
                f"which {spec.name} files must not carry — remove them from the feed (they are "
                "stored nowhere); nothing loaded"
            )
    return extras
