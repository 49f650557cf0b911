"""The line index of a landing file: one streamed pass over its bytes (in blocks, never mapped:
a file truncated while mapped would kill the process) gives its sha256, how its lines end, the
offset of every line break and which lines are data lines — the unit of accounting.

A physical line ends at LF (a CR alone is part of its line: DuckDB's CSV reader accepts a CR
inside a quoted value). Line 1 is the header; a line of only spaces and CRs is blank; every
other line is a data line. A data line with a NUL byte or bytes that are not UTF-8 is "not
text" (a file mostly so fails). numpy finds the breaks and NULs; Python looks only at the few
lines that may be blank, and at each line only when a file is not UTF-8.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from mlops_assets.ingestion.landing import open_regular

BLOCK_BYTES = 1 << 22
BLANK_BYTES = b" \r"
# A quarantined line's text is kept up to this many characters (encrypted).
MAX_LINE_CHARS = 10_000


@dataclass(frozen=True)
class LineIndex:
    sha256: str
    size: int
    breaks: np.ndarray  # 0-based offsets of every LF, ascending
    data_lines: np.ndarray  # 1-based numbers of the data lines, ascending
    not_text: int  # data lines with a NUL or bytes that are not UTF-8
    endings: Literal["lf", "cr", "mixed"]  # LF or CRLF throughout; CR only; CRLF and LF

    def lines_at(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """The physical line (1-based) of each of DuckDB's ``line_byte_position``: one plus the
        line breaks before it. The position is 1-based, of the first byte after the previous
        record's line break (of the LF of a CRLF: DuckDB ends a line at its CR), so the breaks
        at 0-based offsets below it come before; blank lines may follow before the record."""
        wanted = np.asarray(positions, dtype=np.int64)
        return np.searchsorted(self.breaks, wanted, side="left") + 1

    def texts(self, file: Path, numbers: Sequence[int]) -> list[str]:
        """The text of lines ``numbers`` of ``file`` (the file indexed), without their line
        break, bytes that are not UTF-8 replaced, at most :data:`MAX_LINE_CHARS` characters."""
        texts = []
        with open_regular(file) as handle:
            for number in numbers:
                start = 0 if number == 1 else int(self.breaks[number - 2]) + 1
                end = int(self.breaks[number - 1]) if number <= len(self.breaks) else self.size
                handle.seek(start)
                raw = handle.read(min(end - start, 4 * MAX_LINE_CHARS))
                texts.append(raw.decode("utf-8", "replace")[:MAX_LINE_CHARS].strip("\r\n"))
        return texts


def index_lines(path: Path) -> LineIndex:
    """Index ``path`` in one streamed pass (see the module docstring)."""
    digest = hashlib.sha256()
    breaks: list[np.ndarray] = []
    nuls: list[np.ndarray] = []
    blank: list[int] = []  # line numbers of blank lines
    offset = lines_before = cr = crlf = 0
    pending_blank = True  # the line still open at the block's start holds only spaces and CRs
    last_byte = b""
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8 = True
    with open_regular(path) as handle:
        for block in iter(lambda: handle.read(BLOCK_BYTES), b""):
            digest.update(block)
            buf = np.frombuffer(block, np.uint8)
            lfs = np.flatnonzero(buf == 10)
            crlf += last_byte == b"\r" and block[:1] == b"\n"  # a CRLF split by the blocks
            if b"\r" in block:
                cr += block.count(b"\r")
                crlf += block.count(b"\r\n")
            if b"\0" in block:
                nuls.append(np.flatnonzero(buf == 0) + offset)
            if utf8 and not block.isascii():
                try:
                    decoder.decode(block)
                except UnicodeDecodeError:
                    utf8 = False
            if len(lfs):
                # The line open from earlier blocks ends at the first break.
                if pending_blank and not block[: lfs[0]].strip(BLANK_BYTES):
                    blank.append(lines_before + 1)
                # Lines wholly in this block: only those empty or starting with a space or CR
                # may be blank.
                starts, ends = lfs[:-1] + 1, lfs[1:]
                maybe = np.flatnonzero(
                    (starts == ends) | (buf[starts] == 32) | (buf[starts] == 13)
                ).tolist()
                for j in maybe:
                    if not block[starts[j] : ends[j]].strip(BLANK_BYTES):
                        blank.append(lines_before + 2 + j)
                pending_blank = not block[lfs[-1] + 1 :].strip(BLANK_BYTES)
                breaks.append(lfs + offset)
                lines_before += len(lfs)
            else:
                pending_blank = pending_blank and not block.strip(BLANK_BYTES)
            offset += len(block)
            last_byte = block[-1:]
    if utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
    all_breaks = np.concatenate(breaks) if breaks else np.zeros(0, np.int64)
    lines = lines_before + (offset > (int(all_breaks[-1]) + 1 if lines_before else 0))
    if lines > lines_before and pending_blank:
        blank.append(lines)
    is_data = np.ones(lines + 1, bool)
    is_data[:2] = False  # no line 0; line 1 is the header
    is_data[np.asarray(blank, np.int64)] = False
    data_lines = np.flatnonzero(is_data)
    not_text = np.zeros(lines + 1, bool)
    if nuls:
        not_text[np.searchsorted(all_breaks, np.concatenate(nuls), side="left") + 1] = True
    if not utf8:
        not_text[_lines_not_utf8(path)] = True
    lf = len(all_breaks)
    endings: Literal["lf", "cr", "mixed"] = "lf"
    if cr and not lf:
        endings = "cr"
    elif 0 < crlf < lf:
        endings = "mixed"
    return LineIndex(
        sha256=digest.hexdigest(),
        size=offset,
        breaks=all_breaks.astype(np.int64, copy=False),
        data_lines=data_lines,
        not_text=int(np.count_nonzero(not_text & is_data)),
        endings=endings,
    )


def _lines_not_utf8(path: Path) -> list[int]:
    """The numbers of the lines of ``path`` that are not UTF-8 (a file that is not: rare)."""
    bad = []
    with open_regular(path) as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode()
            except UnicodeDecodeError:
                bad.append(number)
    return bad
