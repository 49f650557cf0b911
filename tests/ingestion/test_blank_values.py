"""A required text value made only of what Python's ``str.strip()`` removes is empty: the SQL
test of staging (a regular expression over ``BLANK_CHARS``) agrees with Python on every code
point, alone, repeated, and next to a visible character."""

from __future__ import annotations

import duckdb

from mlops_assets.ingestion.staging import BLANK_CHARS, BLANK_PATTERN

EVERY_CODE_POINT = [chr(c) for c in range(1, 0x110000) if not 0xD800 <= c < 0xE000]


def test_blank_chars_are_what_str_strip_removes() -> None:
    assert set(BLANK_CHARS) == {c for c in EVERY_CODE_POINT if not c.strip()}


def test_the_blank_pattern_is_str_strip_on_every_code_point() -> None:
    values = [
        "",
        *EVERY_CODE_POINT,
        *(c * 3 for c in BLANK_CHARS),
        BLANK_CHARS,
        *(f"{c}x{c}" for c in BLANK_CHARS),
        "\u200b",  # zero-width space: not whitespace to Python
    ]
    with duckdb.connect() as con:
        blank = [
            row[0]
            for row in con.execute(
                "select regexp_full_match(v, $pattern) from unnest($values) with ordinality t(v, i)"
                " order by i",
                {"pattern": BLANK_PATTERN, "values": values},
            ).fetchall()
        ]
    assert blank == [value.strip() == "" for value in values]
