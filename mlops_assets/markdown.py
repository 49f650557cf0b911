"""Metadata for the Dagster UI: markdown tables and the row-flow numbers every stage reports.

The markdown helpers are plain text (the Dagster-free drift library uses them): Dagster is
imported only by the functions that build its metadata values."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from mlops_assets.text import printable

if TYPE_CHECKING:
    import dagster as dg

# Characters that make markdown (links, images, code, emphasis, HTML, table cells) out of text.
_MARKDOWN_PUNCTUATION = re.compile(r"[\\`*_\[\]()!<>|#~]")
_ESCAPED_PUNCTUATION = re.compile(r"\\([\\`*_\[\]()!<>|#~])")


def md_text(value: object) -> str:
    """``value`` as markdown that renders as its text and nothing else: a file name, a header or a
    message quoting one never becomes a link, an image the UI fetches, HTML or a table break.

    Control characters and line breaks are shown as escapes first (:func:`printable`), then
    markdown punctuation is backslash-escaped."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\g<0>", printable(str(value)))


def md_plain(markdown: str) -> str:
    """The text :func:`md_text` escaped, for a terminal: the markdown escapes undone (control
    characters stay shown as escapes)."""
    return _ESCAPED_PUNCTUATION.sub(r"\g<1>", markdown)


def md_table(header: tuple[str, ...], rows: list[tuple]) -> str:
    """A markdown table; every cell, header included, is text (:func:`md_text`)."""
    lines = ["| " + " | ".join(map(md_text, header)) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(map(md_text, row)) + " |" for row in rows]
    return "\n".join(lines)


def md_list(items: list[str]) -> str:
    """A markdown bullet list of text items (:func:`md_text`), or ``none``."""
    return "\n".join(f"- {md_text(item)}" for item in items) or "none"


def flow_metadata(rows_in: int, rows_out: int) -> dict:
    """Rows in, rows out, rows quarantined and the quarantine rate of a stage's run: the same
    keys on every asset that quarantines, read by pipeline health (monitoring.pipeline_runs)."""
    import dagster as dg

    quarantined = rows_in - rows_out
    return {
        "rows_in": rows_in,
        "rows_out": rows_out,
        "rows_quarantined": quarantined,
        "quarantine_rate": dg.MetadataValue.float(quarantined / rows_in if rows_in else 0.0),
    }


def placement_metadata(placement: dict[str, int]) -> dg.JsonMetadataValue:
    """Tasks per place (a Dask worker address, or ``local``): where a stage's parallel work ran,
    the same key on every asset that fans out."""
    import dagster as dg

    return dg.MetadataValue.json(dict(sorted(placement.items())))
