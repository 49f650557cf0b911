"""After a real `mlops run`, no generated identifier is found in plaintext anywhere under
MLOPS_HOME but the landing files (the source system's) and the keys: not in any table, not in
the Dagster instance, logs or dbt artefacts, not in the bytes of the warehouse file."""

from __future__ import annotations

import re

import duckdb
import pandas as pd
import pytest

IDENTIFIERS = ["customer_id", "full_name", "email", "phone", "national_id", "street_address"]
# Shapes of the generated identifiers; what matches is then compared with the real values.
# Shapes of the generated identifiers (bounded repetitions: binary files have long runs); what
# matches is then compared with the real values.
SHAPES = re.compile(
    rb"CUS-\d{7}|\+1-555-\d{3}-\d{4}|\d{3}-\d{2}-\d{4}|[\w.]{1,64}@[A-Za-z.]{1,64}"
    rb"|\d{1,4} [A-Z][a-z]{1,30} [A-Z][a-z]{1,30}|[A-Z][a-z]{1,30} [A-Z][\w']{1,30}"
)


@pytest.fixture(scope="module")
def identifiers(pipeline_run) -> set[str]:
    """Every identifier value in the landing files, as written and trimmed."""
    frame = duckdb.sql(
        f"select {', '.join(IDENTIFIERS)} from read_csv("
        f"'{pipeline_run.home}/landing/customers/*.csv', all_varchar = true, ignore_errors = true)"
    ).df()
    values = pd.concat([frame[c] for c in IDENTIFIERS]).dropna()
    found = set(values) | set(values.str.strip())
    assert len(found) > 5 * 1000
    return {v for v in found if v}


def test_no_table_holds_an_identifier(pipeline_run, identifiers):
    assert pipeline_run.summary["ok"]
    with duckdb.connect(str(pipeline_run.warehouse), read_only=True) as con:
        con.execute(
            "create temp table ids as select unnest(?::varchar[]) as value", [sorted(identifiers)]
        )
        columns = con.execute(
            "select table_schema, table_name, column_name from information_schema.columns "
            "where data_type in ('VARCHAR', 'JSON') and table_schema not in ('vault', 'temp') "
            "and table_catalog = current_database()"
        ).fetchall()
        assert len(columns) > 30
        leaks = {
            f"{s}.{t}.{c}": n
            for s, t, c in columns
            if (
                n := con.execute(
                    f'select count(*) from "{s}"."{t}" '
                    f'where trim("{c}"::varchar) in (select value from ids) '
                    f"or regexp_matches(\"{c}\"::varchar, '@|\\+1-555-|\\d{{3}}-\\d{{2}}-\\d{{4}}')"
                ).fetchone()[0]
            )
        }
        vault_text = con.execute(
            "select count(*) from information_schema.columns where table_schema = 'vault' "
            "and table_name = 'customer_pii' and data_type = 'VARCHAR' "
            "and column_name not in ('customer_key', 'column_name')"
        ).fetchone()[0]
    assert leaks == {}
    assert vault_text == 0  # the vault keeps ciphertext (BLOB) only


def test_no_file_under_mlops_home_holds_an_identifier(pipeline_run, identifiers):
    scanned = []
    leaks = {}
    for path in sorted(pipeline_run.home.rglob("*")):
        relative = path.relative_to(pipeline_run.home)
        if not path.is_file() or relative.parts[0] in ("landing", "keys"):
            continue
        candidates = {m.decode(errors="replace") for m in SHAPES.findall(path.read_bytes())}
        if found := candidates & identifiers:
            leaks[str(relative)] = sorted(found)[:3]
        scanned.append(str(relative))
    assert "warehouse.duckdb" in scanned
    assert any(p.startswith("dagster/") for p in scanned)
    assert any(p.startswith("logs/") for p in scanned)
    # The model cards and the fairness charts are reports like any other: scanned too.
    assert any(p.startswith("reports/") and p.endswith("/card.html") for p in scanned)
    assert any(p.startswith("reports/") and p.endswith("/card.md") for p in scanned)
    assert leaks == {}


def test_the_scan_would_find_a_leak(pipeline_run, identifiers, tmp_path):
    """The detector itself works: a file with one identifier in it is caught."""
    email = next(v for v in identifiers if "@" in v)
    leaked = tmp_path / "leak.log"
    leaked.write_text(f"something happened for {email} today\n")
    candidates = {m.decode() for m in SHAPES.findall(leaked.read_bytes())}
    assert email in candidates & identifiers
