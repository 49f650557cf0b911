"""A feed is plain data: a fourth feed, declared as a LandingSource component would declare it,
loads through the same stages with a balanced ledger and a quarantine; a hostile declaration is
refused with a message naming what is wrong."""

from __future__ import annotations

import json

import dagster as dg
import duckdb
import pytest

from mlops_assets.ingestion.assets import build_source_defs
from mlops_assets.ingestion.generalise import Generaliser, SpecError
from mlops_assets.ingestion.ledger import unbalanced_ledger_rows
from mlops_assets.ingestion.loader import ingest_source
from mlops_assets.ingestion.sources import SourceSpec, identifier_names
from mlops_assets.resources import KeyringResource, LandingZone, WarehouseResource
from mlops_assets.sql import literal
from tests.ingestion.conftest import SOURCES, quarantined_lines

# A feed of another shape: no customer, no personal data, types the loan feeds do not use.
PAYMENTS = {
    "name": "payments",
    "description": "Card payments, one file per day.",
    "columns": {
        "payment_id": "varchar",
        "paid_at": "TIMESTAMP",
        "amount": "DOUBLE",
        "approved": "BOOLEAN",
        "items": "BIGINT",
    },
    "required": ["payment_id", "paid_at"],
    "personal_data": {"classification": {"amount": "sensitive"}},
}
HEADER = "items,approved,amount,paid_at,payment_id,terminal"  # any order, one extra column


def payments_landing(root):
    folder = root / "payments"
    folder.mkdir(parents=True)
    (folder / "2025-01-02.csv").write_text(
        f"{HEADER}\n"
        "2,true,12.5,2025-01-02 10:00:00,P1,T-9\n"
        "1,false,3.0,2025-01-02 11:00:00,P2,T-9\n"
        "lots,true,1.0,2025-01-02 12:00:00,P3,T-9\n"  # items is not a number
        "1,true,1.0,,P4,T-9\n"  # paid_at is required
    )
    return root


def test_a_fourth_feed_from_plain_data_loads_with_a_balanced_ledger_and_quarantine(
    tmp_path, keyring
):
    spec = SourceSpec.from_data(PAYMENTS)
    landing = payments_landing(tmp_path / "landing")
    names = identifier_names([*SOURCES.values(), spec])
    with duckdb.connect() as con:
        [file] = ingest_source(con, landing, spec, names, keyring=keyring).files
        assert (file.status, file.data_lines, file.rows_loaded, file.rows_quarantined) == (
            "loaded",
            4,
            2,
            2,
        )
        assert unbalanced_ledger_rows(con, spec) == []
        rows = con.execute(
            "select payment_id, paid_at, amount, approved, items, _extra_columns, _line_number "
            "from raw.payments order by payment_id"
        ).fetchall()
        assert [(r[0], str(r[1]), r[2], r[3], r[4], r[6]) for r in rows] == [
            ("P1", "2025-01-02 10:00:00", 12.5, True, 2, 2),
            ("P2", "2025-01-02 11:00:00", 3.0, False, 1, 3),
        ]
        assert json.loads(rows[0][5]) == {"terminal": "T-9"}
        assert [(n, reason) for n, reason, _ in quarantined_lines(con, keyring, "payments")] == [
            (4, "items: not a valid bigint"),
            (5, "paid_at is empty"),
        ]
    assert spec.classify("amount") == "sensitive" and spec.classify("items") == "none"


def test_a_feed_without_personal_data_refuses_an_extra_named_like_any_feeds_identifier(
    tmp_path, keyring
):
    """The names are those handed in: a fourth feed's own identifiers count too."""
    spec = SourceSpec.from_data(PAYMENTS)
    members = SourceSpec.from_data(
        {
            "name": "members",
            "columns": {"member_id": "VARCHAR", "passport_no": "VARCHAR", "tier": "VARCHAR"},
            "personal_data": {"pseudonymise": "member_id", "identifiers": ["passport_no"]},
        }
    )
    landing = tmp_path / "landing"
    (landing / "payments").mkdir(parents=True)
    (landing / "payments" / "2025-01-02.csv").write_text(
        "payment_id,paid_at,amount,approved,items,Passport No\nP1,2025-01-02,1,true,1,X123\n"
    )
    with duckdb.connect() as con:
        [failed] = ingest_source(
            con, landing, spec, identifier_names([spec, members]), keyring=keyring
        ).files
        assert failed.status == "failed" and "named like personal data" in failed.error
        assert "X123" not in failed.error
        assert con.execute("select count(*) from raw.payments").fetchone()[0] == 0


def test_the_loan_feeds_read_the_same_declared_as_data():
    """The customers feed declared as plain data is the spec its component instance gives."""
    customers = SourceSpec.from_data(
        {
            "name": "customers",
            "description": SOURCES["customers"].description,
            "columns": SOURCES["customers"].columns,
            "required": ["customer_id"],
            "personal_data": {
                "pseudonymise": "customer_id",
                "identifiers": [
                    "full_name",
                    "email",
                    "phone",
                    "national_id",
                    "street_address",
                    "date_of_birth",
                    "city",
                ],
                "generalised": {
                    "age_band": {
                        "kind": "age_band",
                        "birth": "date_of_birth",
                        "at": "registered_at",
                    }
                },
                "classification": {
                    "customer_key": "quasi_identifier",
                    "age_band": "quasi_identifier",
                    "region": "quasi_identifier",
                    "dependents": "sensitive",
                    "marital_status": "sensitive",
                },
            },
        }
    )
    assert customers == SOURCES["customers"]
    assert customers.raw_columns["age_band"] == "VARCHAR"


def test_a_generaliser_yields_its_value_from_the_declared_columns():
    spec = SourceSpec.from_data(
        {
            "name": "patients",
            "columns": {"patient_id": "VARCHAR", "born": "VARCHAR", "ward": "VARCHAR"},
            "personal_data": {
                "pseudonymise": "patient_id",
                "identifiers": ["born"],
                "generalised": {"birth_year": {"kind": "year", "date": "born"}},
            },
        }
    )
    assert spec.raw_columns == {
        "customer_key": "VARCHAR",
        "ward": "VARCHAR",
        "birth_year": "INTEGER",
    }
    with duckdb.connect() as con:
        con.execute("create table _placed as select '1985-12-10' as born")
        sql = spec.generalised["birth_year"].sql()
        assert con.execute(f"select {sql} from _placed").fetchone() == (1985,)


def declared(**changes):
    """The payments feed with ``changes`` (a value of None removes the key)."""
    data = {**PAYMENTS, **changes}
    return {k: v for k, v in data.items() if v is not None}


def with_personal(**personal):
    return declared(personal_data=personal)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # Generalisers: a kind from the registry, its own parameters, plain column names.
        (
            with_personal(generalised={"x": {"kind": "sql", "expr": "1; drop table raw.x"}}),
            "generaliser kind 'sql' is unknown: the kinds are age_band, year",
        ),
        (
            with_personal(
                generalised={"x": {"kind": "year", "date": "paid_at", "sql": "drop table t"}}
            ),
            "generaliser year takes the columns date; given 'date', 'sql'",
        ),
        (
            with_personal(
                generalised={"x": {"kind": "year", "date": "paid_at); drop table t; --"}}
            ),
            "generaliser year: date 'paid_at); drop table t; --' is not a plain name",
        ),
        (
            with_personal(generalised={"x": {"kind": "year", "date": "nowhere"}}),
            "generalised x (year) names 'nowhere', not a declared column",
        ),
        (
            with_personal(generalised={"amount": {"kind": "year", "date": "paid_at"}}),
            "generalised amount would replace a raw column",
        ),
        (with_personal(generalised={"x": "year(paid_at)"}), "declared as {kind: <kind>"),
        # Column names and types.
        (
            declared(columns={"payment_id": "VARCHAR", 'a" varchar); drop table x; --': "VARCHAR"}),
            "column 'a\" varchar); drop table x; --' is not a plain name",
        ),
        (
            declared(columns={"payment_id": "VARCHAR", "Amount": "DOUBLE"}),
            "'Amount' is not a plain",
        ),
        (
            declared(columns={"payment_id": "VARCHAR", "_record": "DOUBLE"}),
            "'_record' is not a plain",
        ),
        (
            declared(columns={"payment_id": "VARCHAR", "amount": "DOUBLE); drop table x; --"}),
            "column amount has type 'DOUBLE); DROP TABLE X; --'; the types are VARCHAR, BOOLEAN",
        ),
        (declared(columns={"payment_id": "VARCHAR", "blob": "BLOB"}), "type 'BLOB'"),
        (declared(name="../payments"), "source name '../payments' is not a plain name"),
        # References, classes and keys.
        (declared(required=["nowhere"]), "required names 'nowhere', not a declared column"),
        (
            with_personal(identifiers=["payment_id"]),
            "identifiers go to the vault under the pseudonym",
        ),
        (
            with_personal(classification={"amount": "secret"}),
            "classification 'secret' of amount is unknown",
        ),
        (declared(schema="raw; drop"), "unknown key(s) 'schema'"),
        (declared(columns=None), "missing columns"),
    ],
)
def test_a_hostile_or_broken_declaration_is_refused_with_a_clear_error(data, message):
    with pytest.raises(SpecError) as refused:
        SourceSpec.from_data(data)
    assert message in str(refused.value)


def test_a_generaliser_declared_in_code_is_checked_too():
    with pytest.raises(SpecError, match="kinds are age_band, year"):
        Generaliser("age_band_sql", {"birth": "a", "at": "b"})


def test_the_feeds_definitions_load_it_and_check_it(tmp_path, keyring):
    spec = SourceSpec.from_data(PAYMENTS)
    landing = payments_landing(tmp_path / "landing")
    resources = {
        "warehouse": WarehouseResource(path=str(tmp_path / "warehouse.duckdb")),
        "landing": LandingZone(path=str(landing)),
        "keyring": KeyringResource(path=str(keyring.path)),
    }
    defs = dg.Definitions.merge(
        build_source_defs(spec, identifier_names([*SOURCES.values(), spec])),
        dg.Definitions(resources=resources),
    )
    graph = defs.resolve_asset_graph()
    raw = dg.AssetKey(["raw", "payments"])
    assert graph.get_all_asset_keys() == {dg.AssetKey(["landing", "payments"]), raw}
    assert {k.name for k in graph.asset_check_keys if k.asset_key == raw} == {
        "files_ingested",
        "ledger_balanced",
        "no_direct_identifiers",
    }
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        partition_key="2025-01-02", asset_selection=[raw]
    )
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "files_ingested": True,
        "ledger_balanced": True,
        "no_direct_identifiers": True,
    }
    [materialization] = result.asset_materializations_for_node("raw__payments")
    assert materialization.metadata["rows_loaded"].value == 2


def test_no_date_fits_two_of_the_feeds_formats_so_their_order_decides_only_speed():
    """Dates written in each format of the list (and near misses: one-digit days, a time
    without seconds, a trailing Z) fit at most one format, so which one is tried first changes
    no parsed value."""
    from mlops_assets.ingestion.generalise import timestamp_formats

    formats = timestamp_formats()
    fits = " + ".join(f"(try_strptime(s, {literal(f)}) is not null)::int" for f in formats)
    written = " union all ".join(
        f"select strftime(t, {literal(f)}) as s from moments" for f in formats
    )
    with duckdb.connect() as con:
        con.execute(
            "create table moments as select timestamp '1900-01-01' "
            "+ to_seconds(((i * 7919) % 4000000000)::bigint) as t from range(5000) r(i)"
        )
        con.execute(
            f"create table texts as {written} union all select * from (values ('1/2/2025'), "
            "('2025-1-2'), ('01/02/2025 3:4'), ('2025-01-02 03:04'), ('2025-01-02Z'), "
            "('2025-01-02T03:04:05Z'), ('31/12/1999 23:59')) v(s)"
        )
        counts = dict(con.execute(f"select {fits}, count(*) from texts group by all").fetchall())
    assert counts[1] == 5000 * len(formats) + 5  # all but the two without a format
    assert set(counts) <= {0, 1}
