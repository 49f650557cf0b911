from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_assets.security.keyring import DecryptionError, Keyring, KeyringError
from mlops_assets.security.sealing import record_cell
from mlops_assets.security.vault import (
    IDENTIFIERS,
    PII_TABLE,
    VaultError,
    VaultKeys,
    associated_data,
    bind_keyring,
    drop_unreadable,
    encrypt_cells,
    ensure_vault,
    forget,
    identifiers_sql,
    key_usage,
    retire,
    reveal,
    rotate,
    seal_identifiers,
    store_customer_pii,
    write_sealed_pii,
)

COLUMNS = ["full_name", "email"]


@pytest.fixture
def con():
    connection = duckdb.connect()
    ensure_vault(connection)
    yield connection
    connection.close()


def sealed(keyring: Keyring, frame: pd.DataFrame, columns: list[str] = COLUMNS):
    """The vault rows of ``frame``'s identifiers, sealed as a load seals them."""
    with duckdb.connect() as local:
        table = local.sql(
            f"select customer_key, {identifiers_sql({c: c for c in columns})} from frame"
        ).to_arrow_table()
    return seal_identifiers(keyring, table.column(0), table.column(1))


def legacy_cells(con, keyring: Keyring, frame: pd.DataFrame) -> None:
    """``frame``'s identifiers written as a vault written cell by cell holds them: one row per
    customer and present value, under the column's name."""
    for column in COLUMNS:
        present = frame[frame[column].notna()]
        cells = encrypt_cells(
            keyring,
            PII_TABLE,
            present["customer_key"].tolist(),
            [column] * len(present),
            present[column].tolist(),
        )
        con.register("_cells", cells)
        con.execute(
            f"insert into {PII_TABLE} select row_key, column_name, ciphertext, key_version, "
            "now() from _cells"
        )
        con.unregister("_cells")


def customers(keyring: Keyring, n: int) -> pd.DataFrame:
    ids = [f"CUS-{i:07d}" for i in range(n)]
    return pd.DataFrame(
        {
            "customer_key": [keyring.pseudonym(i) for i in ids],
            "full_name": [f"Person {i}" for i in range(n)],
            "email": [f"person{i}@example.com" for i in range(n)],
        }
    )


def test_no_secret_is_in_the_repr_of_a_keyring_or_of_what_it_sealed(keyring):
    from mlops_assets.security.sealing import Sealed

    sealed = Sealed(None, pa.table({"a": [1]}), pa.table({"b": [1]}), keyring)
    secrets = [keyring.pseudonym_key, *keyring.encryption_keys.values()]
    for shown in (repr(keyring), repr(sealed)):
        assert not any(str(secret) in shown or secret.hex() in shown for secret in secrets)
    assert "pseudonym_key" not in repr(keyring)


def test_keyring_file_is_private_and_never_overwritten(keyring):
    assert stat.S_IMODE(keyring.path.stat().st_mode) == 0o600
    with pytest.raises(KeyringError, match="refusing to overwrite"):
        Keyring.create(keyring.path)
    os.chmod(keyring.path, 0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        Keyring.load(keyring.path)


def test_missing_keyring_says_how_to_create_one(tmp_path):
    with pytest.raises(KeyringError, match="mlops keys init"):
        Keyring.load(tmp_path / "nowhere.json")


def test_pseudonyms_are_deterministic_normalised_and_keyed(keyring, tmp_path):
    assert keyring.pseudonym("CUS-0000001") == keyring.pseudonym("  cus-0000001 ")
    assert keyring.pseudonym("CUS-0000001") != keyring.pseudonym("CUS-0000002")
    assert len(keyring.pseudonym("CUS-0000001")) == 64
    other = Keyring.create(tmp_path / "other.json")
    assert other.pseudonym("CUS-0000001") != keyring.pseudonym("CUS-0000001")
    reloaded = Keyring.load(keyring.path)
    assert reloaded.pseudonym("CUS-0000001") == keyring.pseudonym("CUS-0000001")


# Ids a landing file may hold: Unicode spaces that str.strip() removes, letters whose upper case
# is longer (ß -> SS) or differs by locale, NUL, separators, quotes, emoji, a long value.
HOSTILE_IDS = [
    "",
    " ",
    "CUS-0000001",
    "\u3000cus-0000001\u2029",
    "\x1c\x1dcus\x1e\x1f",
    "straße",
    "\ufb01-\u01c6-\u0131-i\u0307",
    "a\x00b",
    'a,"b"\n\r',
    "\U0001f600" * 3,
    "x" * 100_000,
]


def reference_pseudonym(key: bytes, customer_id: str) -> str:
    """The definition: HMAC-SHA256 (the standard library's) of the stripped, upper-cased id."""
    return hmac.new(key, customer_id.strip().upper().encode(), hashlib.sha256).hexdigest()


def test_batch_pseudonyms_equal_hmac_of_the_normalised_id(keyring):
    expected = [reference_pseudonym(keyring.pseudonym_key, v) for v in HOSTILE_IDS]
    assert keyring.pseudonyms(HOSTILE_IDS) == expected
    assert [keyring.pseudonym(v) for v in HOSTILE_IDS] == expected
    assert keyring.pseudonyms([]) == []
    # A key longer than SHA-256's block is hashed first, as HMAC defines.
    long_key = dataclasses.replace(keyring, pseudonym_key=bytes(range(100)))
    assert long_key.pseudonyms(HOSTILE_IDS) == [
        reference_pseudonym(bytes(range(100)), v) for v in HOSTILE_IDS
    ]


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.text(), max_size=20), key=st.binary(min_size=1, max_size=130))
def test_batch_pseudonyms_equal_hmac_on_any_text_and_key(ids, key):
    ring = Keyring(Path("unused.json"), key, {1: bytes(32)}, created_at="")
    try:
        expected = [reference_pseudonym(key, v) for v in ids]
    except UnicodeEncodeError:  # a lone surrogate: no file's text holds one
        with pytest.raises(UnicodeEncodeError):
            ring.pseudonyms(ids)
        return
    assert ring.pseudonyms(ids) == expected


def test_round_trip_uses_a_fresh_nonce_per_value(keyring):
    aad = associated_data(PII_TABLE, "email", "k1")
    first, version = keyring.encrypt("a@example.com", aad)
    second, _ = keyring.encrypt("a@example.com", aad)
    assert first != second and first[:12] != second[:12]
    assert keyring.decrypt(first, version, aad) == "a@example.com"
    assert b"a@example.com" not in first


def test_tampered_ciphertext_is_rejected(keyring):
    aad = associated_data(PII_TABLE, "email", "k1")
    blob, version = keyring.encrypt("a@example.com", aad)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionError, match="failed authentication"):
        keyring.decrypt(tampered, version, aad)


def test_a_ciphertext_moved_to_another_cell_is_rejected(keyring):
    blob, version = keyring.encrypt("a@example.com", associated_data(PII_TABLE, "email", "k1"))
    for moved in (
        associated_data(PII_TABLE, "email", "k2"),  # another customer
        associated_data(PII_TABLE, "phone", "k1"),  # another column
        associated_data("quarantine.customers", "email", "k1"),  # another table
    ):
        with pytest.raises(DecryptionError):
            keyring.decrypt(blob, version, moved)


def test_a_customers_identifiers_are_one_row_readable_only_as_theirs(keyring):
    """One row per customer (their latest record in the file), one JSON object of their
    values, missing ones null, readable only as that customer's identifiers in this table;
    none for a customer without any value."""
    frame = customers(keyring, 5)
    frame.loc[1, "email"] = None  # a missing value stays missing
    frame.loc[4, ["full_name", "email"]] = None  # no value at all: no row
    later = frame.iloc[[2]].assign(full_name="Renamed")  # a later row of customer 2 wins
    rows = sealed(keyring, pd.concat([frame, later])).to_pydict()
    keys = frame["customer_key"].tolist()
    assert rows["row_key"] == [keys[i] for i in (0, 1, 3, 2)]  # file order, the latest kept
    assert set(rows["column_name"]) == {IDENTIFIERS}
    values = [
        json.loads(keyring.decrypt(blob, version, associated_data(PII_TABLE, IDENTIFIERS, key)))
        for key, blob, version in zip(
            rows["row_key"], rows["ciphertext"], rows["key_version"], strict=True
        )
    ]
    assert values == [
        {"full_name": "Person 0", "email": "person0@example.com"},
        {"full_name": "Person 1", "email": None},
        {"full_name": "Person 3", "email": "person3@example.com"},
        {"full_name": "Renamed", "email": "person2@example.com"},
    ]
    blob, version = rows["ciphertext"][0], rows["key_version"][0]
    for elsewhere in (
        associated_data(PII_TABLE, IDENTIFIERS, keys[1]),  # another customer
        associated_data(PII_TABLE, "email", keys[0]),  # a cell of the same customer
        associated_data("quarantine.customers", IDENTIFIERS, keys[0]),  # another table
    ):
        with pytest.raises(DecryptionError):
            keyring.decrypt(blob, version, elsewhere)
    assert sealed(keyring, frame, []).num_rows == 0


def test_reveal_decrypts_one_customer_and_audits_it(con, keyring):
    frame = customers(keyring, 3)
    store_customer_pii(con, keyring, frame, COLUMNS)
    key = frame["customer_key"][1]
    assert reveal(con, keyring, key, "complaint 7") == {
        "email": "person1@example.com",
        "full_name": "Person 1",
    }
    audit = con.execute(
        "select action, customer_key, columns, reason, os_user from audit.pii_access"
    )
    action, audited_key, columns, reason, user = audit.fetchone()
    assert (action, audited_key, sorted(columns), reason) == (
        "reveal",
        key,
        COLUMNS[::-1],
        "complaint 7",
    )
    assert user
    with pytest.raises(VaultError, match="reason is required"):
        reveal(con, keyring, key, "  ")


def test_a_later_record_keeps_the_latest_value_of_each_column_and_one_row(con, keyring):
    frame = customers(keyring, 4)
    store_customer_pii(con, keyring, frame, COLUMNS)
    moved = frame.iloc[[1, 2]].copy()
    moved["email"] = ["new1@example.com", None]  # a new address; an unknown one changes nothing
    store_customer_pii(con, keyring, moved, COLUMNS)
    rows = con.execute(
        f"select customer_key, column_name, count(*) from {PII_TABLE} group by all"
    ).fetchall()
    assert len(rows) == 4 and {n for _, _, n in rows} == {1}
    assert reveal(con, keyring, frame["customer_key"][1], "t") == {
        "full_name": "Person 1",
        "email": "new1@example.com",
    }
    assert reveal(con, keyring, frame["customer_key"][2], "t")["email"] == "person2@example.com"


def test_cells_of_a_vault_written_cell_by_cell_are_read_and_folded_into_a_later_record(
    con, keyring
):
    """A vault from before records: its cells are revealed and rotated as they are, and the
    first later record of their customer takes their values in and replaces them; an event
    feed's record extras of the customer stay rows of their own."""
    frame = customers(keyring, 3)
    legacy_cells(con, keyring, frame)
    extras = record_cell("applications/2025-01-01.csv", 2)
    key = frame["customer_key"][1]
    write_sealed_pii(con, keyring, encrypt_cells(keyring, PII_TABLE, [key], [extras], ["{}"]))
    assert reveal(con, keyring, key, "t") == {
        "full_name": "Person 1",
        "email": "person1@example.com",
        extras: "{}",
    }
    assert rotate(con, keyring) == (2, 7)  # six cells, one record's extras
    moved = frame.iloc[[1]].assign(full_name=None, email="new1@example.com")
    store_customer_pii(con, keyring, moved, COLUMNS)
    rows = con.execute(
        f"select column_name from {PII_TABLE} where customer_key = ? order by 1", [key]
    ).fetchall()
    assert rows == [(extras,), (IDENTIFIERS,)]
    (blob, version) = con.execute(
        f"select ciphertext, key_version from {PII_TABLE} where column_name = ? "
        "and customer_key = ?",
        [IDENTIFIERS, key],
    ).fetchone()
    record = keyring.decrypt(blob, version, associated_data(PII_TABLE, IDENTIFIERS, key))
    assert set(json.loads(record)) == {"full_name", "email"}  # an event's extras stay apart
    assert reveal(con, keyring, key, "t") == {
        "full_name": "Person 1",  # from its cell, kept
        "email": "new1@example.com",  # the later value
        extras: "{}",
    }
    assert reveal(con, keyring, frame["customer_key"][0], "t")["email"] == "person0@example.com"


def test_an_earlier_row_that_fails_authentication_is_kept_beside_the_later_record(
    con, keyring, caplog
):
    """Nothing that could not be read is deleted (a damaged row, or one of another keyring):
    the later record is written beside it, reveal shows the later values and names the row
    that fails, and the load says how many there were (no value, no key in the message)."""
    frame = customers(keyring, 2)
    store_customer_pii(con, keyring, frame, COLUMNS)
    key = frame["customer_key"][0]
    query = f"select ciphertext from {PII_TABLE} where customer_key = ?"
    (blob,) = con.execute(query, [key]).fetchone()
    damaged = blob + b"x"
    con.execute(f"update {PII_TABLE} set ciphertext = ? where customer_key = ?", [damaged, key])
    store_customer_pii(con, keyring, frame.iloc[[0]].assign(email="new0@example.com"), COLUMNS)
    revealed = reveal(con, keyring, key, "t")
    assert revealed == {"full_name": "Person 0", "email": "new0@example.com"}
    assert set(revealed.unreadable) == {IDENTIFIERS}
    assert con.execute(f"select count(*) from {PII_TABLE}").fetchone() == (3,)
    assert "1 earlier vault rows" in caplog.text and key not in caplog.text
    # Once readable again (here: repaired), its values are folded in, oldest first.
    con.execute(f"update {PII_TABLE} set ciphertext = ? where ciphertext = ?", [blob, damaged])
    assert reveal(con, keyring, key, "t") == {  # the later record's values over the earlier's
        "full_name": "Person 0",
        "email": "new0@example.com",
    }
    store_customer_pii(
        con, keyring, frame.iloc[[0]].assign(full_name="Renamed", email=None), COLUMNS
    )
    assert reveal(con, keyring, key, "t") == {"full_name": "Renamed", "email": "new0@example.com"}
    assert con.execute(f"select count(*) from {PII_TABLE}").fetchone() == (2,)


def test_a_customer_on_several_lines_of_one_file_gets_each_columns_last_value(keyring):
    frame = customers(keyring, 2)
    later = frame.iloc[[0]].assign(email=None)  # a later line without the email
    latest = frame.iloc[[0]].assign(full_name="Renamed", email=None)
    rows = sealed(keyring, pd.concat([frame, later, latest])).to_pydict()
    key = frame["customer_key"][0]
    i = rows["row_key"].index(key)
    assert rows["row_key"].count(key) == 1
    text = keyring.decrypt(
        rows["ciphertext"][i], rows["key_version"][i], associated_data(PII_TABLE, IDENTIFIERS, key)
    )
    assert json.loads(text) == {"full_name": "Renamed", "email": "person0@example.com"}


def test_reveal_and_the_fold_take_cells_first_then_records_oldest_first(con, keyring):
    """A record holds later values than the cells of a vault written one row per identifier
    (a cell is never written after a record), and a later record than an earlier one: however
    the rows are stored, the newest value is the one shown and kept."""
    frame = customers(keyring, 1)
    key = frame["customer_key"][0]
    store_customer_pii(con, keyring, frame.assign(email="record@example.com"), COLUMNS)
    legacy_cells(con, keyring, frame.assign(email="cell@example.com"))  # stored after it
    assert reveal(con, keyring, key, "t")["email"] == "record@example.com"
    store_customer_pii(con, keyring, frame.assign(email=None, full_name="Renamed"), COLUMNS)
    assert reveal(con, keyring, key, "t") == {
        "full_name": "Renamed",
        "email": "record@example.com",
    }


def test_reveal_shows_a_customer_whose_only_values_are_extra_columns(con, keyring):
    """A record of nothing but unknown columns is revealed, not taken for a wrong keyring; a
    line with no value at all has no row; extras of two rows are merged key by key."""
    frame = customers(keyring, 2).assign(full_name=None, email=None)
    frame["_extra_columns"] = ['{"loyalty_card":"LC-1"}', None]
    store_customer_pii(con, keyring, frame, [*COLUMNS, "_extra_columns"])
    key = frame["customer_key"][0]
    assert reveal(con, keyring, key, "t") == {"_extra_columns": '{"loyalty_card":"LC-1"}'}
    with pytest.raises(VaultError, match="no personal data"):
        reveal(con, keyring, frame["customer_key"][1], "t")
    # A cell of a vault written one row per identifier whose extras were all empty: nothing
    # to show, and no "wrong keyring" either.
    empty = encrypt_cells(
        keyring, PII_TABLE, [frame["customer_key"][1]], ["_extra_columns"], ['{"a":null}']
    )
    write_sealed_pii(con, keyring, empty)
    assert reveal(con, keyring, frame["customer_key"][1], "t") == {}
    # Two rows of the customer (as a load that missed the first would leave): key by key.
    later = sealed(
        keyring,
        frame.iloc[[0]].assign(_extra_columns='{"referrer":"R-9","loyalty_card":null}'),
        ["_extra_columns"],
    )
    con.register("_later", later)
    con.execute(
        f"insert into {PII_TABLE} select row_key, column_name, ciphertext, key_version, "
        "now() + interval 1 second from _later"
    )
    assert json.loads(reveal(con, keyring, key, "t")["_extra_columns"]) == {
        "loyalty_card": "LC-1",
        "referrer": "R-9",
    }


def test_a_failed_statement_raises_its_own_error_not_the_cleanups(con, keyring):
    """After a statement fails inside the caller's transaction, DuckDB refuses the cleanup's
    statements too: the error raised is still the first one."""
    rows = sealed(keyring, customers(keyring, 2))
    broken = rows.set_column(2, "ciphertext", pa.nulls(2, pa.binary()))  # not null in the vault
    con.execute("insert into vault.erased_customers values ('someone', now())")
    con.execute("begin transaction")
    with pytest.raises(duckdb.ConstraintException):
        write_sealed_pii(con, keyring, broken)
    con.execute("rollback")


def test_a_row_under_a_key_version_the_keyring_lacks_stops_the_load(con, keyring, tmp_path):
    frame = customers(keyring, 1)
    store_customer_pii(con, keyring, frame, COLUMNS)
    con.execute(f"update {PII_TABLE} set key_version = 7")
    with pytest.raises(KeyringError, match="key version 7 is not in the keyring"):
        store_customer_pii(con, keyring, frame.assign(email="new@example.com"), COLUMNS)


def test_rotation_names_the_rows_that_fail_and_drop_unreadable_lets_it_run(con, keyring):
    frame = customers(keyring, 3)
    store_customer_pii(con, keyring, frame, COLUMNS)
    key = frame["customer_key"][1]
    con.execute(
        f"update {PII_TABLE} set ciphertext = ciphertext || 'x'::blob where customer_key = ?",
        [key],
    )
    with pytest.raises(DecryptionError, match=f"1 ciphertext.*{key} {IDENTIFIERS}.*drop-unread"):
        rotate(con, keyring)
    assert key_usage(con) == {1: 3}  # nothing rotated
    with pytest.raises(VaultError, match="reason is required"):
        drop_unreadable(con, keyring, key, " ")
    assert drop_unreadable(con, keyring, frame["customer_key"][0], "check") == []
    assert drop_unreadable(con, keyring, key, "bad block") == [IDENTIFIERS]
    assert con.execute("select action, customer_key, columns from audit.pii_access").fetchall() == [
        ("drop_unreadable", key, [IDENTIFIERS])
    ]
    assert rotate(con, keyring)[1] == 2
    assert reveal(con, keyring, frame["customer_key"][2], "t")["email"] == "person2@example.com"


def hashes(con, keys: list[str]) -> np.ndarray:
    return np.asarray(
        con.execute("select hash(unnest(?::varchar[]))", [keys]).fetchnumpy().popitem()[1],
        dtype=np.uint64,
    )


def test_vault_keys_know_the_customers_with_cells_and_those_the_load_wrote(con, keyring):
    frame = customers(keyring, 3)
    store_customer_pii(con, keyring, frame.iloc[:2], COLUMNS)  # an earlier load
    known = VaultKeys()
    keys = frame["customer_key"].tolist()
    assert known.may_hold(con, hashes(con, keys[:1]))
    assert known.may_hold(con, hashes(con, keys[1:]))
    assert not known.may_hold(con, hashes(con, keys[2:]))  # no cell: nothing to delete
    assert not known.may_hold(con, hashes(con, []))
    known.add(hashes(con, keys[2:]))
    assert known.may_hold(con, hashes(con, keys[2:]))


def test_a_loads_rows_replace_those_from_before_the_load_and_from_its_earlier_files(con, keyring):
    frame = customers(keyring, 6)
    store_customer_pii(con, keyring, frame.iloc[:3], COLUMNS)  # an earlier load
    known = VaultKeys()
    # The load's first file names new customers only, its second one customer of the earlier
    # load and one of the first file, with new addresses.
    assert write_sealed_pii(con, keyring, sealed(keyring, frame.iloc[3:]), known) == 3
    moved = frame.iloc[[1, 4]].copy()
    moved["email"] = ["new1@example.com", "new4@example.com"]
    assert write_sealed_pii(con, keyring, sealed(keyring, moved), known) == 2
    rows = con.execute(
        f"select customer_key, column_name, count(*) from {PII_TABLE} group by all"
    ).fetchall()
    assert len(rows) == 6 and {n for _, _, n in rows} == {1}
    emails = {i: reveal(con, keyring, frame["customer_key"][i], "t")["email"] for i in range(6)}
    assert emails == {
        0: "person0@example.com",
        1: "new1@example.com",
        2: "person2@example.com",
        3: "person3@example.com",
        4: "new4@example.com",
        5: "person5@example.com",
    }


def test_a_vault_made_with_a_primary_key_is_rebuilt_without_it_and_keeps_its_rows(keyring):
    con = duckdb.connect()
    con.execute("create schema vault")
    con.execute(
        f"create table {PII_TABLE} (customer_key varchar not null, column_name varchar not "
        "null, ciphertext blob not null, key_version integer not null, updated_at timestamp "
        "not null, primary key (customer_key, column_name))"
    )
    key = keyring.pseudonym("CUS-1")
    blob, version = keyring.encrypt("a@b.c", associated_data(PII_TABLE, "email", key))
    con.execute(f"insert into {PII_TABLE} values (?, 'email', ?, ?, now())", [key, blob, version])
    ensure_vault(con)
    constraints = con.execute(
        "select constraint_type from duckdb_constraints() where table_name = 'customer_pii'"
    ).fetchall()
    assert ("PRIMARY KEY",) not in constraints
    assert reveal(con, keyring, key, "t") == {"email": "a@b.c"}


def test_wrong_key_gives_a_clear_error_and_writes_nothing(con, keyring, tmp_path):
    frame = customers(keyring, 2)
    store_customer_pii(con, keyring, frame, COLUMNS)
    bind_keyring(con, keyring)
    impostor = Keyring.create(tmp_path / "impostor.json")
    with pytest.raises(KeyringError):
        reveal(con, impostor, frame["customer_key"][0], "test")
    with pytest.raises(KeyringError, match="not the one this warehouse was built with"):
        bind_keyring(con, impostor)
    assert con.execute("select count(*) from audit.pii_access").fetchone()[0] == 0


def test_rotation_of_10k_rows_loses_nothing_and_retires_the_old_key(con, keyring):
    frame = customers(keyring, 10_000)  # one row each
    assert store_customer_pii(con, keyring, frame, COLUMNS) == 10_000
    with pytest.raises(VaultError, match="still encrypts 10000"):
        retire(con, keyring, 1)
    version, count = rotate(con, keyring)
    assert (version, count) == (2, 10_000)
    assert key_usage(con) == {2: 10_000}
    retire(con, keyring, 1)
    reloaded = Keyring.load(keyring.path)
    assert sorted(reloaded.encryption_keys) == [2]
    for i in (0, 5_000, 9_999):
        values = reveal(con, reloaded, frame["customer_key"][i], "rotation check")
        assert values == {"email": f"person{i}@example.com", "full_name": f"Person {i}"}
    with pytest.raises(KeyringError, match="active one"):
        reloaded.remove_version(2)


def test_a_failed_rotation_leaves_every_value_readable(con, keyring):
    frame = customers(keyring, 10)
    store_customer_pii(con, keyring, frame, COLUMNS)
    # Corrupt the row of another customer than the one revealed below (not a physical row:
    # insertion order is not guaranteed).
    con.execute(
        f"update {PII_TABLE} set ciphertext = ciphertext || 'x'::blob where customer_key = ?",
        [frame["customer_key"][3]],
    )
    with pytest.raises(DecryptionError):
        rotate(con, keyring)
    assert key_usage(con) == {1: 10}  # nothing half-rotated
    reloaded = Keyring.load(keyring.path)  # the old version was kept
    assert reveal(con, reloaded, frame["customer_key"][9], "check")["full_name"] == "Person 9"


def test_forget_erases_the_customer_for_good_and_audits_it(con, keyring):
    frame = customers(keyring, 2)
    store_customer_pii(con, keyring, frame, COLUMNS)
    key = frame["customer_key"][0]
    assert forget(con, keyring, key, "erasure request 9") == (1, 0, 0, False)
    erased = con.execute("select columns from audit.pii_access where action = 'forget'")
    assert erased.fetchall() == [(["email", "full_name"],)]  # the record's columns, by name
    with pytest.raises(VaultError, match="no personal data"):
        reveal(con, keyring, key, "after erasure")
    # A later load of the same customer's record does not bring the identifiers back.
    store_customer_pii(con, keyring, frame, COLUMNS)
    assert (
        con.execute(f"select count(*) from {PII_TABLE} where customer_key = ?", [key]).fetchone()[0]
        == 0
    )
    rows = con.execute("select action, reason from audit.pii_access").fetchall()
    assert rows == [("forget", "erasure request 9")]


def test_ciphertext_is_stored_without_a_compression_search(tmp_path):
    """Random bytes do not compress: the vault stores ciphertext uncompressed, and keys and
    column names with whatever DuckDB picks."""
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        ensure_vault(con)
        con.execute(
            "insert into vault.customer_pii select 'k' || (i // 4), 'c' || (i % 4), "
            "unhex(md5(i::varchar) || md5((i + 1)::varchar)), 1, now()::timestamp "
            "from range(200000) t(i)"
        )
        con.execute("checkpoint")
        used = dict(
            con.execute(
                "select column_name, list(distinct compression) from pragma_storage_info("
                "'vault.customer_pii') where segment_type <> 'VALIDITY' group by column_name"
            ).fetchall()
        )
    assert used["ciphertext"] == ["Uncompressed"]
    assert used["column_name"] != ["Uncompressed"]


def test_a_cell_without_a_row_key_is_refused(keyring):
    """Its associated data would name no customer: nothing is encrypted."""
    frame = customers(keyring, 2)
    frame.loc[1, "customer_key"] = None
    with pytest.raises(VaultError, match="without a row key"):
        sealed(keyring, frame)
