"""Identifiers are split off at ingestion: raw and quarantine never hold them in plaintext."""

from __future__ import annotations

import json

import duckdb
import pytest

from mlops_assets.ingestion.loader import ingest_file, ingest_source
from mlops_assets.sample_data.generator import CUSTOMER_COLUMNS, GeneratorConfig, generate
from mlops_assets.security.keyring import Keyring, KeyringError
from mlops_assets.security.scan import find_identifiers
from mlops_assets.security.vault import (
    PII_TABLE,
    associated_data,
    reveal,
    reveal_quarantined_line,
)
from tests.ingestion.conftest import IDENTIFIERS, SOURCES

HEADER = ",".join(CUSTOMER_COLUMNS)
GOOD = (
    "CUS-0000001,Ada Lovelace,ada@example.com,+1-555-123-4567,123-45-6789,1985-12-10,"
    "12 Oak Street,Salem,north,master,single,0,2025-02-01 08:00:00"
)
BAD = (
    "CUS-0000002,Alan Turing,alan@example.com,+1-555-765-4321,987-65-4321,1990-06-23,"
    "7 Elm Road,Dover,east,master,single,lots,2025-02-01 09:00:00"
)
SPEC = SOURCES["customers"]


@pytest.fixture
def landing(tmp_path):
    folder = tmp_path / "landing" / "customers"
    folder.mkdir(parents=True)
    (folder / "2025-02-01.csv").write_text(f"{HEADER},loyalty_card\n{GOOD},LC-1\n{BAD},LC-2\n")
    return tmp_path / "landing"


def test_raw_keeps_the_pseudonym_and_generalised_values_only(con, keyring, landing):
    ingest_source(con, landing, SOURCES["customers"], IDENTIFIERS, keyring=keyring)
    row = con.execute("select * from raw.customers").df().iloc[0].to_dict()
    assert row["customer_key"] == keyring.pseudonym("CUS-0000001")
    assert row["age_band"] == "35-44"  # born 1985-12-10, registered 2025-02-01
    assert row["region"] == "north"
    assert row["_extra_columns"] is None  # unknown columns of this feed may identify: vaulted
    assert not {"customer_id", "full_name", "email", "city", "date_of_birth"} & set(row)
    assert find_identifiers(con, "raw", "customers", IDENTIFIERS) == []


def test_identifiers_and_unknown_columns_are_in_the_vault_encrypted(con, keyring, landing):
    ingest_source(con, landing, SOURCES["customers"], IDENTIFIERS, keyring=keyring)
    key = keyring.pseudonym("CUS-0000001")
    values = reveal(con, keyring, key, "test")
    assert values["email"] == "ada@example.com"
    assert values["date_of_birth"] == "1985-12-10"
    assert json.loads(values["_extra_columns"]) == {"loyalty_card": "LC-1"}
    blobs = con.execute(f"select ciphertext from {PII_TABLE}").fetchall()
    assert all(b"ada@example.com" not in bytes(b) for (b,) in blobs)


def test_a_quarantined_line_with_identifiers_is_stored_encrypted(con, keyring, landing):
    ingest_source(con, landing, SOURCES["customers"], IDENTIFIERS, keyring=keyring)
    source_file, line, reason, raw_line, blob, version = con.execute(
        "select source_file, line_number, reason, raw_line, raw_line_encrypted, key_version "
        "from quarantine.customers"
    ).fetchone()
    assert (line, raw_line) == (3, None)
    assert reason == "dependents: not a valid integer"
    aad = associated_data("quarantine.customers", "raw_line", f"{source_file}:{line}")
    assert keyring.decrypt(bytes(blob), version, aad) == f"{BAD},LC-2"
    # A data steward sees it through the audited path, to fix the feed.
    text = reveal_quarantined_line(con, keyring, "customers", source_file, 3, "fix feed")
    assert text == f"{BAD},LC-2"
    assert con.execute("select action, customer_key, reason from audit.pii_access").fetchall() == [
        ("reveal_quarantined_line", "customers/2025-02-01.csv:3", "fix feed")
    ]


def test_applications_carry_the_same_pseudonym_as_customers(con, keyring, tmp_path):
    folder = tmp_path / "applications"
    folder.mkdir()
    header = (
        "application_id,customer_id,applied_at,amount,term_months,purpose,annual_income,"
        "employment_length,home_ownership,debt_to_income,bureau_score,open_accounts,"
        "delinq_2yrs,channel"
    )
    line = "APP-1, cus-0000001 ,2025-02-01 10:00:00,5000,36,car,50000,2 years,RENT,10,700,3,0,web"
    (folder / "2025-02-01.csv").write_text(f"{header}\n{line}\n")
    ingest_source(con, tmp_path, SOURCES["applications"], IDENTIFIERS, keyring=keyring)
    key = con.execute("select customer_key from raw.applications").fetchone()[0]
    assert key == keyring.pseudonym("CUS-0000001")


def test_no_keyring_or_another_keyring_writes_nothing(con, keyring, landing, tmp_path):
    path = landing / "customers" / "2025-02-01.csv"
    with pytest.raises(KeyringError, match="keyring is required"):
        ingest_file(con, landing, path, SPEC, IDENTIFIERS)
    ingest_source(con, landing, SOURCES["customers"], IDENTIFIERS, keyring=keyring)
    before = con.execute("select count(*) from raw.customers").fetchone()[0]
    path.write_text(f"{HEADER}\n{GOOD.replace('CUS-0000001', 'CUS-0000009')}\n")
    impostor = Keyring.create(tmp_path / "impostor.json")
    with pytest.raises(KeyringError, match="not the one this warehouse was built with"):
        ingest_source(con, landing, SOURCES["customers"], IDENTIFIERS, keyring=impostor)
    assert con.execute("select count(*) from raw.customers").fetchone()[0] == before


def test_the_identifier_check_finds_columns_and_values_without_printing_them(con):
    con.execute("create schema marts")
    con.execute(
        "create table marts.leaky as select 'x' as email, 'call +1-555-123-4567' as note, "
        "'id 123-45-6789' as comment, 'fine' as other"
    )
    findings = [str(f) for f in find_identifiers(con, "marts", "leaky", IDENTIFIERS)]
    assert findings == [
        "marts.leaky.email: identifier column (0 rows)",
        "marts.leaky.note: phone (1 rows)",
        "marts.leaky.comment: national_id (1 rows)",
    ]
    assert not any("555-123" in f for f in findings)


def test_a_run_for_one_day_loads_that_days_files_only(tmp_path, keyring):
    """What the daily schedule and the landing sensor launch: one partition, one day's files."""
    import dagster as dg

    from mlops_assets import catalogue
    from mlops_assets.ingestion.assets import build_source_defs
    from mlops_assets.ingestion.sources import identifier_names
    from mlops_assets.resources import KeyringResource, LandingZone, WarehouseResource

    generate(GeneratorConfig(days=3, rows_per_day=10, seed=4), tmp_path / "landing")
    feeds = catalogue.sources()
    [applications] = [
        a
        for a in build_source_defs(feeds["applications"], identifier_names(feeds.values())).assets
        if a.key.path == ["raw", "applications"]
    ]
    result = dg.materialize(
        [applications],
        partition_key="2025-01-02",
        resources={
            "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
            "landing": LandingZone(path=str(tmp_path / "landing")),
            "keyring": KeyringResource(path=str(keyring.path)),
        },
    )
    [materialization] = result.asset_materializations_for_node("raw__applications")
    assert materialization.partition == "2025-01-02"
    assert materialization.metadata["files_loaded"].value == 1
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        files = con.execute("select distinct _source_file from raw.applications").fetchall()
    assert files == [("applications/2025-01-02.csv",)]


def test_files_commit_in_day_order_so_the_latest_identifiers_win(con, keyring, landing):
    """Files are parsed two at a time but committed one by one in day order: a customer who
    moves every day ends with the last day's address in the vault, in one row."""
    folder = landing / "customers"
    for day in range(2, 13):
        moved = GOOD.replace("12 Oak Street", f"{day} New Street").replace(
            "2025-02-01 08:00:00", f"2025-02-{day:02d} 08:00:00"
        )
        (folder / f"2025-02-{day:02d}.csv").write_text(f"{HEADER}\n{moved}\n")
    result = ingest_source(con, landing, SOURCES["customers"], IDENTIFIERS, keyring=keyring)
    assert [f.path for f in result.files] == sorted(f.path for f in result.files)
    assert [f.status for f in result.files] == ["loaded"] * 12
    key = keyring.pseudonym("CUS-0000001")
    assert reveal(con, keyring, key, "test")["street_address"] == "12 New Street"
    rows = con.execute(
        f"select column_name, count(*) from {PII_TABLE} where customer_key = ? group by 1",
        [key],
    ).fetchall()
    assert rows == [("_identifiers", 1)]


def test_a_later_file_changes_only_the_values_it_holds(con, keyring, landing):
    """The vault keeps each column's latest value, extra columns one by one: a later file with
    an empty email and another extra column changes the address and adds the extra; within a
    file, a later line of the customer wins the same way; across loads too."""
    moved = GOOD.replace("ada@example.com", "").replace("12 Oak Street", "3 New Street")
    (landing / "customers" / "2025-02-02.csv").write_text(
        f"{HEADER},loyalty_card,referrer\n{moved},,R-9\n"
    )
    ingest_source(con, landing, SOURCES["customers"], IDENTIFIERS, keyring=keyring)
    key = keyring.pseudonym("CUS-0000001")
    values = reveal(con, keyring, key, "test")
    assert (values["email"], values["street_address"]) == ("ada@example.com", "3 New Street")
    assert json.loads(values["_extra_columns"]) == {"loyalty_card": "LC-1", "referrer": "R-9"}
    # Two lines of the customer: the first with a new phone, the later one without a phone.
    first = moved.replace("+1-555-123-4567", "+1-555-000-0000")
    later = moved.replace("+1-555-123-4567", "").replace("3 New Street", "4 Newer Street")
    (landing / "customers" / "2025-02-03.csv").write_text(f"{HEADER}\n{first}\n{later}\n")
    ingest_source(con, landing, SOURCES["customers"], IDENTIFIERS, keyring=keyring)
    values = reveal(con, keyring, key, "test")
    assert (values["phone"], values["email"], values["street_address"]) == (
        "+1-555-000-0000",  # the file's earlier line: the later one has none
        "ada@example.com",  # the first file's
        "4 Newer Street",  # the file's later line
    )
    assert json.loads(values["_extra_columns"]) == {"loyalty_card": "LC-1", "referrer": "R-9"}
    assert con.execute(
        f"select count(*) from {PII_TABLE} where customer_key = ?", [key]
    ).fetchone() == (1,)


def test_an_erased_customer_stays_erased_when_a_later_file_names_them(con, keyring, landing):
    from mlops_assets.security.vault import forget

    ingest_source(con, landing, SOURCES["customers"], IDENTIFIERS, keyring=keyring)
    key = keyring.pseudonym("CUS-0000001")
    forget(con, keyring, key, "erasure request")
    (landing / "customers" / "2025-02-02.csv").write_text(f"{HEADER}\n{GOOD}\n")
    ingest_source(con, landing, SOURCES["customers"], IDENTIFIERS, keyring=keyring)
    stored = con.execute(f"select count(*) from {PII_TABLE} where customer_key = ?", [key])
    assert stored.fetchone()[0] == 0
