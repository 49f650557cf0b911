from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import stat
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_assets.security.keyring import DecryptionError, Keyring, KeyringError
from mlops_assets.security.vault import (
    PII_TABLE,
    VaultError,
    VaultKeys,
    associated_data,
    bind_keyring,
    ensure_vault,
    forget,
    key_usage,
    retire,
    reveal,
    rotate,
    seal_customer_pii,
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


def customers(keyring: Keyring, n: int) -> pd.DataFrame:
    ids = [f"CUS-{i:07d}" for i in range(n)]
    return pd.DataFrame(
        {
            "customer_key": [keyring.pseudonym(i) for i in ids],
            "full_name": [f"Person {i}" for i in range(n)],
            "email": [f"person{i}@example.com" for i in range(n)],
        }
    )


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


def test_a_customers_cells_are_the_latest_values_each_under_its_own_cell(keyring):
    """The cells sealed column by column: one per customer and present value, the latest row
    winning, every one readable only as its own cell (customer, column, table), none empty
    when no column is asked for."""
    frame = customers(keyring, 4)
    frame.loc[1, "email"] = None  # a missing value has no cell
    later = frame.iloc[[2]].assign(full_name="Renamed")  # a later row of customer 2 wins
    sealed = seal_customer_pii(keyring, pd.concat([frame, later]), COLUMNS)
    cells = sealed.to_pydict()
    keys = frame["customer_key"].tolist()  # the later row of customer 2 comes last
    assert list(zip(cells["row_key"], cells["column_name"], strict=True)) == [
        *[(keys[i], "full_name") for i in (0, 1, 3, 2)],
        *[(keys[i], "email") for i in (0, 3, 2)],
    ]
    values = [
        keyring.decrypt(blob, version, associated_data(PII_TABLE, column, key))
        for key, column, blob, version in zip(*cells.values(), strict=True)
    ]
    assert values == [
        "Person 0", "Person 1", "Person 3", "Renamed",
        "person0@example.com", "person3@example.com", "person2@example.com",
    ]  # fmt: skip
    blob, version = cells["ciphertext"][0], cells["key_version"][0]
    with pytest.raises(DecryptionError):  # another column's cell of the same customer
        keyring.decrypt(blob, version, associated_data(PII_TABLE, "email", cells["row_key"][0]))
    assert seal_customer_pii(keyring, frame, []).num_rows == 0


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


def test_a_changed_identifier_replaces_its_cell_and_keeps_one_row_per_cell(con, keyring):
    frame = customers(keyring, 4)
    store_customer_pii(con, keyring, frame, COLUMNS)
    moved = frame.iloc[[1, 2]].copy()
    moved["email"] = ["new1@example.com", None]  # a new address; an unknown one changes nothing
    store_customer_pii(con, keyring, moved, COLUMNS)
    cells = con.execute(
        f"select customer_key, column_name, count(*) from {PII_TABLE} group by all"
    ).fetchall()
    assert len(cells) == 8 and {n for _, _, n in cells} == {1}
    assert reveal(con, keyring, frame["customer_key"][1], "t")["email"] == "new1@example.com"
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


def test_a_loads_cells_replace_those_from_before_the_load_and_from_its_earlier_files(con, keyring):
    frame = customers(keyring, 6)
    store_customer_pii(con, keyring, frame.iloc[:3], COLUMNS)  # an earlier load
    known = VaultKeys()
    # The load's first file names new customers only, its second one customer of the earlier
    # load and one of the first file, with new addresses.
    assert write_sealed_pii(con, seal_customer_pii(keyring, frame.iloc[3:], COLUMNS), known) == 6
    moved = frame.iloc[[1, 4]].copy()
    moved["email"] = ["new1@example.com", "new4@example.com"]
    assert write_sealed_pii(con, seal_customer_pii(keyring, moved, COLUMNS), known) == 4
    cells = con.execute(
        f"select customer_key, column_name, count(*) from {PII_TABLE} group by all"
    ).fetchall()
    assert len(cells) == 12 and {n for _, _, n in cells} == {1}
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


def test_rotation_of_10k_values_loses_nothing_and_retires_the_old_key(con, keyring):
    frame = customers(keyring, 5_000)  # two columns each: 10,000 values
    assert store_customer_pii(con, keyring, frame, COLUMNS) == 10_000
    with pytest.raises(VaultError, match="still encrypts 10000"):
        retire(con, keyring, 1)
    version, count = rotate(con, keyring)
    assert (version, count) == (2, 10_000)
    assert key_usage(con) == {2: 10_000}
    retire(con, keyring, 1)
    reloaded = Keyring.load(keyring.path)
    assert sorted(reloaded.encryption_keys) == [2]
    for i in (0, 2_500, 4_999):
        values = reveal(con, reloaded, frame["customer_key"][i], "rotation check")
        assert values == {"email": f"person{i}@example.com", "full_name": f"Person {i}"}
    with pytest.raises(KeyringError, match="active one"):
        reloaded.remove_version(2)


def test_a_failed_rotation_leaves_every_value_readable(con, keyring):
    frame = customers(keyring, 10)
    store_customer_pii(con, keyring, frame, COLUMNS)
    # Corrupt one cell of another customer than the one revealed below (not a physical row:
    # insertion order is not guaranteed).
    con.execute(
        f"update {PII_TABLE} set ciphertext = ciphertext || 'x'::blob "
        "where customer_key = ? and column_name = 'full_name'",
        [frame["customer_key"][3]],
    )
    with pytest.raises(DecryptionError):
        rotate(con, keyring)
    assert key_usage(con) == {1: 20}  # nothing half-rotated
    reloaded = Keyring.load(keyring.path)  # the old version was kept
    assert reveal(con, reloaded, frame["customer_key"][9], "check")["full_name"] == "Person 9"


def test_forget_erases_the_customer_for_good_and_audits_it(con, keyring):
    frame = customers(keyring, 2)
    store_customer_pii(con, keyring, frame, COLUMNS)
    key = frame["customer_key"][0]
    assert forget(con, keyring, key, "erasure request 9") == (2, 0, 0, False)
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
        seal_customer_pii(keyring, frame, COLUMNS)
